"""Reports: `evaluation_report`'s numbers, `read_metrics`, the PNG figures, and the CLI.

The numbers are checked on a hand-made example whose confusion matrix and scores are
worked out below. Figures are checked for being complete, non-trivial PNGs (their
looks were checked by eye); without matplotlib those tests skip, saying so. The CLI
tests run ``python -m mnist_xp`` in a subprocess, as tests/test_cli.py does, with
``MNIST_XP_DATA`` pointing where no cache can exist, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

import mnist_xp
from mnist_xp.errors import MnistXPError, ReportError
from mnist_xp.reporting.metrics import check_output_dir, evaluation_report, read_metrics

try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False

needs_mpl = pytest.mark.skipif(
    not HAVE_MPL, reason="matplotlib is not installed (pip install 'mnist-xp[plot]')")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- helpers ----------------------------------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a complete PNG file; fails the test if it is not one."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", f"{path} is truncated (no IEND)"
    assert data[12:16] == b"IHDR"
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0], "bad IHDR checksum"
    width, height = struct.unpack(">II", data[16:24])
    try:
        from PIL import Image
    except ImportError:
        return width, height
    with Image.open(path) as image:
        image.load()  # decodes every pixel: a corrupt file raises here
        assert image.size == (width, height)
        # Not a blank canvas: a figure has ink of more than one shade.
        extrema = image.convert("L").getextrema()
        assert extrema[0] < extrema[1], f"{path} is a single flat colour"
    return width, height


def assert_png(path: Path, min_side: int = 300) -> None:
    width, height = png_size(path)
    assert width >= min_side and height >= min_side * 0.4, (width, height)
    assert width <= 3000 and height <= 3000, (width, height)


def run_cli(*args, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_xp ARGS``; `pythonpath` goes first on PYTHONPATH."""
    env = dict(os.environ)
    env["MNIST_XP_DATA"] = os.path.join(os.devnull, "mnist_xp_test_cache")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "mnist_xp", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False)


def assert_user_error(result: subprocess.CompletedProcess, *fragments) -> str:
    """Exit status 2 and exactly one stderr line, without a traceback, holding every fragment."""
    report = f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, report
    assert "Traceback" not in result.stderr, report
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), report
    for fragment in fragments:
        assert str(fragment) in lines[0], report
    return lines[0]


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr


def listing(directory: Path) -> list[str]:
    """Every name under `directory`, hidden (temporary) files included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# -- 1. evaluation_report on a hand-made example ----------------------------------------

# Ten samples, classes 0, 1, 2. Predictions (argmax of each row):
#   true 0: 0, 0, 1       true 1: 1, 1, 0, 1       true 2: 1, 1, 0   (2 is never predicted)
# confusion (rows true, columns predicted):
#   [[2, 1, 0],
#    [1, 3, 0],
#    [1, 2, 0]]
# precision: 0 -> 2/4, 1 -> 3/6, 2 -> 0/0 = 0.0
# recall:    0 -> 2/3, 1 -> 3/4, 2 -> 0/3 = 0
# F1:        0 -> 2*(1/2)(2/3)/(1/2+2/3) = 4/7, 1 -> 2*(1/2)(3/4)/(5/4) = 3/5, 2 -> 0
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
PROBA = np.array([
    [0.90, 0.05, 0.05],  # 0 -> 0
    [0.60, 0.30, 0.10],  # 0 -> 0
    [0.20, 0.70, 0.10],  # 0 -> 1 (mistake, 0.70)
    [0.10, 0.80, 0.10],  # 1 -> 1
    [0.30, 0.60, 0.10],  # 1 -> 1
    [0.95, 0.04, 0.01],  # 1 -> 0 (mistake, 0.95)
    [0.20, 0.50, 0.30],  # 1 -> 1
    [0.10, 0.70, 0.20],  # 2 -> 1 (mistake, 0.70: ties with sample 2)
    [0.20, 0.45, 0.35],  # 2 -> 1 (mistake, 0.45)
    [0.50, 0.10, 0.40],  # 2 -> 0 (mistake, 0.50)
])
CLASSES = np.array([0, 1, 2])


def test_report_confusion_matrix_and_accuracy():
    r = evaluation_report(Y_TRUE, PROBA, CLASSES)
    assert r["confusion_matrix"] == [[2, 1, 0], [1, 3, 0], [1, 2, 0]]
    assert r["classes"] == [0, 1, 2]
    assert r["n_samples"] == 10 and r["n_errors"] == 5
    assert r["accuracy"] == 0.5


def test_report_per_class_scores_with_a_class_never_predicted():
    r = evaluation_report(Y_TRUE, PROBA, CLASSES)
    by_class = {row["class"]: row for row in r["per_class"]}
    assert by_class[0]["precision"] == pytest.approx(2 / 4)
    assert by_class[0]["recall"] == pytest.approx(2 / 3)
    assert by_class[0]["f1"] == pytest.approx(4 / 7)
    assert by_class[1]["precision"] == pytest.approx(3 / 6)
    assert by_class[1]["recall"] == pytest.approx(3 / 4)
    assert by_class[1]["f1"] == pytest.approx(3 / 5)
    # Class 2 is never predicted: 0/0 precision is 0.0 (not NaN), and so is its F1.
    assert by_class[2] == {"class": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    assert [row["support"] for row in r["per_class"]] == [3, 4, 3]
    assert r["macro"]["precision"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert r["macro"]["recall"] == pytest.approx((2 / 3 + 3 / 4 + 0) / 3)
    assert r["macro"]["f1"] == pytest.approx((4 / 7 + 3 / 5 + 0) / 3)


def test_report_lists_the_most_confident_mistakes_first_ties_in_test_order():
    r = evaluation_report(Y_TRUE, PROBA, CLASSES)
    assert [m["index"] for m in r["mistakes"]] == [5, 2, 7, 9, 8]
    first = r["mistakes"][0]
    assert first == {"index": 5, "true": 1, "predicted": 0, "probability": 0.95,
                     "true_probability": 0.04}
    assert evaluation_report(Y_TRUE, PROBA, CLASSES, n_mistakes=2)["mistakes"] == r["mistakes"][:2]
    assert evaluation_report(Y_TRUE, PROBA, CLASSES, n_mistakes=0)["mistakes"] == []


def test_report_is_plain_json():
    r = evaluation_report(Y_TRUE, PROBA.astype(np.float32), CLASSES.astype(np.uint8))
    assert json.loads(json.dumps(r, allow_nan=False)) == r

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return type(value) in (int, float, str, bool)

    assert plain(r)


def test_report_takes_string_labels_and_given_predictions():
    classes = np.array(["cat", "dog"])
    y = np.array(["dog", "cat", "dog"])
    proba = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]])
    r = evaluation_report(y, proba, classes)
    assert r["confusion_matrix"] == [[0, 1], [1, 1]]
    assert r["mistakes"][0] == {"index": 2, "true": "dog", "predicted": "cat",
                                "probability": 0.9, "true_probability": 0.1}
    # y_pred overrides the argmax (here: claims every prediction is "dog").
    r2 = evaluation_report(y, proba, classes, y_pred=np.array(["dog", "dog", "dog"]))
    assert r2["confusion_matrix"] == [[0, 1], [0, 2]]
    assert [m["index"] for m in r2["mistakes"]] == [1]


def test_macro_average_skips_classes_absent_from_truth_and_predictions():
    # Class 2 exists in the model but is neither true nor predicted: it adds no zeros.
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    r = evaluation_report(np.array([0, 1]), proba, CLASSES)
    assert r["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert r["per_class"][2]["support"] == 0


@pytest.mark.parametrize("y, proba, classes, match", [
    (np.array([0, 3]), np.eye(2, 3), CLASSES, "not among the classes"),
    (np.array([0, 1, 2]), np.eye(2, 3), CLASSES, "y_true must have shape"),
    (np.array([0, 1]), np.eye(2), CLASSES, "proba must have shape"),
    (np.array([], int), np.zeros((0, 3)), CLASSES, "empty"),
])
def test_report_rejects_mismatched_input(y, proba, classes, match):
    with pytest.raises(ValueError, match=match):
        evaluation_report(y, proba, classes)


def test_report_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(5) * 0.3, size=300)
    y = rng.integers(0, 5, 300)
    r = evaluation_report(y, proba, np.arange(5))
    y_pred = proba.argmax(axis=1)
    assert r["confusion_matrix"] == metrics.confusion_matrix(y, y_pred).tolist()
    p, rc, f, _ = metrics.precision_recall_fscore_support(y, y_pred, zero_division=0)
    np.testing.assert_allclose([c["precision"] for c in r["per_class"]], p)
    np.testing.assert_allclose([c["recall"] for c in r["per_class"]], rc)
    np.testing.assert_allclose([c["f1"] for c in r["per_class"]], f)
    assert r["macro"]["f1"] == pytest.approx(
        metrics.f1_score(y, y_pred, average="macro", zero_division=0))


@pytest.mark.parametrize("seed", range(30))
def test_report_invariants(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 41)), int(rng.integers(2, 7))
    proba = rng.random((n, k))
    y = rng.integers(0, k, n)
    r = evaluation_report(y, proba, np.arange(k), n_mistakes=n)
    cm = np.array(r["confusion_matrix"])
    assert cm.sum() == n
    assert np.trace(cm) == n - r["n_errors"]
    assert r["accuracy"] == pytest.approx(np.trace(cm) / n)
    assert len(r["mistakes"]) == r["n_errors"]
    probs = [m["probability"] for m in r["mistakes"]]
    assert probs == sorted(probs, reverse=True)
    for row in r["per_class"]:
        for key in ("precision", "recall", "f1"):
            assert 0.0 <= row[key] <= 1.0


# -- 2. read_metrics --------------------------------------------------------------------

RECORDS = [
    {"epoch": 1, "train_loss": 0.9, "train_accuracy": 0.7, "test_accuracy": 0.9,
     "seconds": 1.0, "device": "cpu"},
    {"epoch": 2, "train_loss": 0.4, "train_accuracy": 0.88, "test_accuracy": None,
     "seconds": 1.0, "device": "cpu"},
]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_metrics_reads_what_train_writes(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", RECORDS)
    assert read_metrics(path) == RECORDS
    path.write_text(path.read_text() + "\n\n")  # trailing blank lines are fine
    assert read_metrics(path) == RECORDS


@pytest.mark.parametrize("content, fragments", [
    (None, ["no such metrics file"]),
    ("", ["no epoch records", "empty"]),
    ("\n  \n", ["no epoch records"]),
    (json.dumps(RECORDS[0]) + "\n{\"epoch\": 2, \"train_lo", ["line 2", "not valid JSON"]),
    ("[1, 2]\n", ["line 1", "not a JSON object"]),
    (json.dumps({"epoch": 1, "train_loss": 0.5}) + "\n", ["line 1", "'train_accuracy'"]),
    (json.dumps({**RECORDS[0], "train_loss": "low"}) + "\n", ["line 1", "'train_loss'"]),
    (json.dumps({**RECORDS[0], "epoch": 1.5}) + "\n", ["line 1", "'epoch'"]),
    (json.dumps({**RECORDS[0], "test_accuracy": "high"}) + "\n", ["line 1", "'test_accuracy'"]),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", ["not UTF-8"]),
])
def test_read_metrics_errors_are_one_line_and_name_the_file(tmp_path, content, fragments):
    path = tmp_path / "m.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as info:
        read_metrics(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, MnistXPError)


def test_read_metrics_of_a_directory(tmp_path):
    with pytest.raises(ReportError, match="is a directory"):
        read_metrics(tmp_path)


def test_report_error_is_exported():
    assert mnist_xp.ReportError is ReportError
    assert "ReportError" in mnist_xp.__all__


# -- 3. check_output_dir ----------------------------------------------------------------

def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # checked, not created
    with pytest.raises(ReportError, match="does not exist"):
        check_output_dir(tmp_path / "missing" / "new")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match="is a file"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(ReportError, match="not a directory"):
        check_output_dir(tmp_path / "file" / "new")


# -- 4. figures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    """The first 40 bundled test images (uint8, 40x28x28) and their labels."""
    data = mnist_xp.load_mnist("bundled")
    return data.x_test[:40].copy(), data.y_test[:40].copy()


@needs_mpl
@pytest.mark.parametrize("history", [
    RECORDS,
    [{**r, "test_accuracy": None} for r in RECORDS],  # no test accuracy at all
    RECORDS[:1],  # a single epoch
    [{**r, "val_accuracy": 0.8 + 0.01 * r["epoch"]} for r in RECORDS * 10],
], ids=["test", "no-test", "one-epoch", "validation"])
def test_plot_training_curves(tmp_path, history):
    from mnist_xp.reporting.figures import plot_training_curves

    path = plot_training_curves(history, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert_png(path, min_side=800)
    assert listing(tmp_path) == ["curves.png"]  # no temporary file left beside it


@needs_mpl
def test_plot_training_curves_refuses_an_empty_history(tmp_path):
    from mnist_xp.reporting.figures import plot_training_curves

    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([], tmp_path / "curves.png")
    assert listing(tmp_path) == []


@needs_mpl
@pytest.mark.parametrize("cm", [
    [[2, 1, 0], [1, 3, 0], [1, 2, 0]],
    np.diag([5, 7, 9]),  # no errors at all: the error scale must still work
    np.random.default_rng(0).integers(0, 1200, (10, 10)),
])
def test_plot_confusion_matrix(tmp_path, cm):
    from mnist_xp.reporting.figures import plot_confusion_matrix

    classes = list(range(len(cm)))
    assert_png(plot_confusion_matrix(cm, classes, tmp_path / "cm.png"), min_side=500)


@needs_mpl
def test_plot_confusion_matrix_refuses_a_mismatched_matrix(tmp_path):
    from mnist_xp.reporting.figures import plot_confusion_matrix

    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix(np.ones((3, 3), int), [0, 1], tmp_path / "cm.png")
    with pytest.raises(ValueError, match="non-negative"):
        plot_confusion_matrix(-np.ones((2, 2), int), [0, 1], tmp_path / "cm.png")
    assert listing(tmp_path) == []


@needs_mpl
@pytest.mark.parametrize("n", [0, 1, 3, 25, 40])
def test_plot_mistakes(tmp_path, digits, n):
    from mnist_xp.reporting.figures import plot_mistakes

    images, labels = digits
    mistakes = [{"index": i, "true": int(labels[i]), "predicted": (int(labels[i]) + 1) % 10,
                 "probability": 0.99 - i / 100} for i in range(n)]
    flat = images.reshape(len(images), 784) if n == 3 else images  # (n, 784) rows work too
    assert_png(plot_mistakes(flat, mistakes, tmp_path / "mistakes.png"), min_side=200)


@needs_mpl
def test_plot_mistakes_refuses_an_index_outside_the_images(tmp_path, digits):
    from mnist_xp.reporting.figures import plot_mistakes

    bad = [{"index": 40, "true": 1, "predicted": 2, "probability": 0.9}]
    with pytest.raises(ValueError, match="outside"):
        plot_mistakes(digits[0], bad, tmp_path / "mistakes.png")
    assert listing(tmp_path) == []


@needs_mpl
@pytest.mark.parametrize("n_hidden", [100, 7, 1])
def test_plot_weights(tmp_path, n_hidden):
    from mnist_xp.reporting.figures import plot_weights

    W1 = np.random.default_rng(0).normal(size=(784, n_hidden)).astype(np.float32)
    W1[:, 0] = 0.0  # an all-zero unit must not divide by zero
    assert_png(plot_weights(W1, tmp_path / "w.png"), min_side=300)


@needs_mpl
def test_plot_weights_needs_square_images(tmp_path):
    from mnist_xp.reporting.figures import plot_weights

    with pytest.raises(ValueError, match="square"):
        plot_weights(np.zeros((10, 4)), tmp_path / "w.png")


@needs_mpl
def test_a_plot_into_a_missing_directory_is_a_one_line_error(tmp_path):
    from mnist_xp.reporting.figures import plot_weights

    with pytest.raises(ReportError) as info:
        plot_weights(np.ones((4, 2)), tmp_path / "missing" / "w.png")
    assert "\n" not in str(info.value) and str(tmp_path / "missing") in str(info.value)


@needs_mpl
def test_write_report_writes_json_and_figures(tmp_path, digits):
    from mnist_xp.reporting.figures import write_report

    images, labels = digits
    proba = np.random.default_rng(1).dirichlet(np.ones(10), size=len(labels))
    report = {"model": "m.npz", **evaluation_report(labels, proba, np.arange(10))}
    W1 = np.random.default_rng(2).normal(size=(784, 16))
    target = tmp_path / "report"
    files = write_report(target, report, images=images, W1=W1, history=RECORDS)
    assert list(files) == ["confusion_matrix", "mistakes", "weights", "training_curves",
                           "report"]
    assert listing(target) == sorted(["report.json", "confusion_matrix.png", "mistakes.png",
                                      "weights.png", "training_curves.png"])
    saved = json.loads((target / "report.json").read_text())
    assert saved == {**report, "figures": ["confusion_matrix.png", "mistakes.png",
                                           "weights.png", "training_curves.png"]}
    for name in saved["figures"]:
        assert_png(target / name, min_side=200)
    # Writing again replaces the files, and leaves other files alone.
    (target / "notes.txt").write_text("mine")
    write_report(target, report)
    assert (target / "notes.txt").read_text() == "mine"
    assert json.loads((target / "report.json").read_text())["figures"] == ["confusion_matrix.png"]


@needs_mpl
def test_write_report_renders_everything_before_writing_anything(tmp_path, digits):
    from mnist_xp.reporting.figures import write_report

    images, labels = digits
    report = evaluation_report(labels, np.eye(10)[(labels + 1) % 10], np.arange(10))
    target = tmp_path / "report"
    with pytest.raises(ValueError, match="square"):  # the last figure fails
        write_report(target, report, images=images, W1=np.zeros((10, 3)))
    assert not target.exists()


def test_write_report_refuses_an_existing_file_and_a_missing_parent(tmp_path):
    from mnist_xp.reporting.figures import write_report

    report = evaluation_report(Y_TRUE, PROBA, CLASSES)
    (tmp_path / "taken").write_text("precious")
    with pytest.raises(ReportError, match="is a file"):
        write_report(tmp_path / "taken", report)
    assert (tmp_path / "taken").read_text() == "precious"
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "no" / "report", report)
    assert listing(tmp_path) == ["taken"]


def test_without_matplotlib_plots_say_how_to_install_it(tmp_path, monkeypatch):
    from mnist_xp.reporting import figures as plots

    # A None entry in sys.modules makes `import matplotlib` raise ImportError.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for call in (plots.check_matplotlib,
                 lambda: plots.plot_training_curves(RECORDS, tmp_path / "c.png"),
                 lambda: plots.write_report(tmp_path / "r", evaluation_report(Y_TRUE, PROBA, CLASSES))):
        with pytest.raises(ReportError) as info:
            call()
        assert "pip install 'mnist-xp[plot]'" in str(info.value)
        assert "\n" not in str(info.value)
    assert listing(tmp_path) == []


# -- 5. the command line ----------------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A model trained for one epoch on the bundled subset, saved, with its metrics log."""
    directory = tmp_path_factory.mktemp("model")
    data = mnist_xp.load_mnist("bundled")
    x_test = data.x_test.reshape(-1, 784)
    clf = mnist_xp.MLPClassifier(epochs=1, random_state=0, device="cpu")
    clf.fit(data.x_train.reshape(-1, 784), data.y_train, eval_set=(x_test, data.y_test))
    path = mnist_xp.model_files.save(clf, directory / "m.npz")
    metrics = write_jsonl(directory / "m.jsonl", clf.history_)
    return {"dir": directory, "model": path, "metrics": metrics,
            "accuracy": clf.score(x_test, data.y_test)}


def evaluate(model_file, *extra, pythonpath=None, cwd=None):
    return run_cli("evaluate", "--model", model_file["model"], "--data", "bundled",
                   "--device", "cpu", *extra, cwd=cwd or model_file["dir"], pythonpath=pythonpath)


@needs_mpl
@pytest.mark.slow
def test_evaluate_report_writes_json_and_figures(model_file, tmp_path):
    target = tmp_path / "rep"
    result = evaluate(model_file, "--report", target, "--metrics", model_file["metrics"],
                      "--json")
    assert_ok(result)
    out = json.loads(result.stdout)
    assert out["accuracy"] == model_file["accuracy"]
    summary = out["report"]
    assert summary["path"] == str(target)
    assert summary["files"] == ["confusion_matrix.png", "mistakes.png", "weights.png",
                                "training_curves.png", "report.json"]
    assert listing(target) == sorted(summary["files"])
    report = json.loads((target / "report.json").read_text())
    assert report["accuracy"] == out["accuracy"]
    assert report["macro"]["f1"] == summary["macro_f1"]
    assert report["n_samples"] == 10_000 and sum(map(sum, report["confusion_matrix"])) == 10_000
    assert len(report["mistakes"]) == 25
    probs = [m["probability"] for m in report["mistakes"]]
    assert probs == sorted(probs, reverse=True)
    assert report["model"] == str(model_file["model"])
    for name in report["figures"]:
        assert_png(target / name, min_side=400)


@needs_mpl
@pytest.mark.slow
def test_evaluate_report_without_metrics_has_no_training_curves(model_file, tmp_path):
    target = tmp_path / "rep"
    result = evaluate(model_file, "--report", target)
    assert_ok(result)
    assert "macro F1" in result.stdout and str(target) in result.stdout
    assert listing(target) == ["confusion_matrix.png", "mistakes.png", "report.json",
                               "weights.png"]


def test_evaluate_report_dir_with_missing_parent_is_a_one_line_error(model_file, tmp_path):
    target = tmp_path / "missing" / "rep"
    result = evaluate(model_file, "--report", target, cwd=tmp_path)
    assert_user_error(result, "--report", target, "does not exist")
    assert result.stdout == ""
    assert listing(tmp_path) == []


def test_evaluate_report_that_is_a_file_is_refused(model_file, tmp_path):
    target = tmp_path / "report.json"
    target.write_text("precious")
    result = evaluate(model_file, "--report", target, cwd=tmp_path)
    assert_user_error(result, "--report", target, "is a file")
    assert target.read_text() == "precious"
    assert listing(tmp_path) == ["report.json"]


def test_evaluate_metrics_needs_report(model_file, tmp_path):
    result = evaluate(model_file, "--metrics", model_file["metrics"], cwd=tmp_path)
    assert_user_error(result, "--metrics", "--report")


@needs_mpl
@pytest.mark.parametrize("content, fragments", [
    (None, ["no such metrics file"]),
    ('{"epoch": 1, "train_loss": 0.5, "train_acc', ["line 1", "not valid JSON"]),
])
def test_evaluate_bad_metrics_fails_before_writing(model_file, tmp_path, content, fragments):
    metrics = tmp_path / "m.jsonl"
    if content is not None:
        metrics.write_text(content)
    before = listing(tmp_path)
    result = evaluate(model_file, "--report", tmp_path / "rep", "--metrics", metrics, cwd=tmp_path)
    assert_user_error(result, "--metrics", metrics, *fragments)
    assert result.stdout == ""
    assert listing(tmp_path) == before


def test_evaluate_report_without_matplotlib_says_how_to_install_it(model_file, tmp_path):
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text(textwrap.dedent("""
        raise ImportError("No module named 'matplotlib'")
    """))
    work = tmp_path / "work"
    work.mkdir()
    result = evaluate(model_file, "--report", work / "rep", pythonpath=fake, cwd=work)
    assert_user_error(result, "pip install 'mnist-xp[plot]'")
    assert result.stdout == ""
    assert listing(work) == []


@needs_mpl
@pytest.mark.slow
def test_train_plot_writes_training_curves_and_weights(tmp_path):
    target = tmp_path / "plots"
    result = run_cli("train", "--data", "bundled", "--device", "cpu", "--epochs", 1, "--quiet",
                     "--plot", target, cwd=tmp_path)
    assert_ok(result)
    assert f"to {target}" in result.stdout
    assert listing(target) == ["training_curves.png", "weights.png"]
    assert_png(target / "training_curves.png", min_side=800)
    assert_png(target / "weights.png", min_side=400)


@pytest.mark.parametrize("kind", ["missing parent", "existing file"])
def test_train_plot_dir_is_checked_before_training(tmp_path, kind):
    if kind == "missing parent":
        target, word = tmp_path / "missing" / "plots", "does not exist"
    else:
        target, word = tmp_path / "plots", "is a file"
        target.write_text("precious")
    before = listing(tmp_path)
    result = run_cli("train", "--data", "bundled", "--device", "cpu", "--epochs", 1,
                     "--plot", target, cwd=tmp_path)
    assert_user_error(result, "--plot", target, word)
    assert result.stdout == ""  # nothing was loaded or trained
    assert listing(tmp_path) == before
    if kind == "existing file":
        assert target.read_text() == "precious"
