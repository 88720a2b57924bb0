"""The hostile files of issue 18 through the command line, and the readers' MemoryError.

Copies of the inputs are in tests/data/cases/hostile/ (see its README). Every run is a
subprocess under the 1 GiB address-space limit of tests/test_hostile.py, so a picture
that still made gigabytes of float copies would fail here. A bad file ends with exit
status 2 and one line on stderr naming it; in a ``predict`` run the good input beside
it is still answered. Time and peak memory are measured by
benchmarks/hostile_pictures.py, not here.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_hostile import MEMORY_LIMIT, run_all, run_cli

import mnist_xp.fileio.reading
import mnist_xp.images.decode
from mnist_xp.cli import main
from mnist_xp.errors import DataError, ImageError
from mnist_xp.fileio import read_npy

pytest.importorskip("PIL", reason="Pillow is needed to decode the pictures")
pytest.importorskip("cv2", reason="OpenCV is needed to read the pictures")

HOSTILE = Path(__file__).parent / "data" / "cases" / "hostile"
GOOD_PICTURE = Path(__file__).parent / "data" / "cases" / "cropped-to-ink" / "d7.png"
TRAIN = ["train", "--data", "bundled", "--no-download", "--device", "cpu"]
EVALUATE = ["evaluate", "--data", "bundled", "--no-download", "--device", "cpu"]

# (id, argv with {case} for the copied directory, fragments of the error line,
#  the good inputs' answers on stdout)
CASES = [
    ("predict/tokenerror.npy", ["predict", "{case}/tokenerror.npy", "{case}/good.png"],
     ["tokenerror.npy: unreadable .npy header (not one NumPy wrote); re-save"], ["good.png: 7"]),
    ("predict/indent.npy", ["predict", "{case}/good.png", "{case}/indent.npy"],
     ["indent.npy: unreadable .npy header"], ["good.png: 7"]),
    ("predict/sliver", ["predict", "{case}/sliver_40000000x1.png", "{case}/good.png"],
     ["sliver_40000000x1.png: 40000000x1 pixels is too wide to hold digits"], ["good.png: 7"]),
    ("predict/model-with-tokenerror-member",
     ["predict", "--model", "{case}/tokenerror_model.npz", "{case}/good.png"],
     ["tokenerror_model.npz: member b2.npy: unreadable .npy header"], []),
    ("evaluate/model-with-tokenerror-member",
     [*EVALUATE, "--model", "{case}/tokenerror_model.npz"],
     ["tokenerror_model.npz: member b2.npy: unreadable .npy header"], []),
    ("train/resume-from-tokenerror-model",
     [*TRAIN, "--resume", "{case}/tokenerror_model.npz"],
     ["tokenerror_model.npz: member b2.npy: unreadable .npy header"], []),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every case, and the RGBA picture beside a broken array, run side by side."""
    jobs = {}
    for name, argv, _, _ in [*CASES, ("predict/rgba", ["predict", "{case}/rgba_6324x6324.png",
                                                       "{case}/tokenerror.npy"], [], [])]:
        case = tmp_path_factory.mktemp("hostile-files")
        for f in HOSTILE.iterdir():
            shutil.copy(f, case / f.name)
        shutil.copy(GOOD_PICTURE, case / "good.png")
        jobs[name] = ([a.format(case=case) for a in argv], {"cwd": case, "limit": True})
    return run_all(jobs)


@pytest.mark.parametrize("name, fragments, answers",
                         [pytest.param(n, f, a, id=n) for n, _, f, a in CASES])
def test_a_hostile_file_is_one_line_and_the_good_input_is_answered(runs, name, fragments,
                                                                    answers):
    result = runs[name]
    report = f"{name}: rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, report
    assert "Traceback" not in result.stderr, report
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnist-xp: error: "), report
    for fragment in fragments:
        assert fragment in lines[0], report
    out = result.stdout.splitlines()
    assert len(out) == len(answers), report
    for line, answer in zip(out, answers):
        assert answer in line, report


def test_the_40_megapixel_rgba_picture_is_read_as_7_under_the_memory_limit(runs):
    result = runs["predict/rgba"]
    report = f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert MEMORY_LIMIT == 1 << 30
    assert result.returncode == 2, report  # for the broken array beside it
    assert "rgba_6324x6324.png: 7 (" in result.stdout, report
    assert len(result.stderr.splitlines()) == 1 and "tokenerror.npy" in result.stderr, report


def test_libtiff_reports_nothing_on_stderr_itself(tmp_path):
    """A TIFF with an unknown tag made libtiff print two lines of its own beside the
    answer (found by tests/fuzz/fuzz_picture.py; the input is its saved crash)."""
    crash = next((Path(__file__).parent / "fuzz" / "crashes" / "picture").glob("libtiff-*"))
    shutil.copy(crash, tmp_path / "tagged.tif")
    result = run_cli(["predict", "--device", "cpu", "tagged.tif"], cwd=tmp_path, limit=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("tagged.tif: 7 (")


# -- a MemoryError while reading names the file, says "too large", spares the rest ----

def _good_npy(path: Path) -> Path:
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 255
    np.save(path, digit)
    return path


def test_read_npy_reports_a_memory_error_as_too_large(tmp_path, monkeypatch):
    path = _good_npy(tmp_path / "big.npy")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(mnist_xp.fileio.reading, "read_npy_stream", no_memory)
    with pytest.raises(DataError) as caught:
        read_npy(path)
    assert str(caught.value) == f"{path}: too large to read into the memory available"


def test_a_picture_that_runs_out_of_memory_is_too_large_not_corrupt(tmp_path, monkeypatch):
    def no_memory(im, factor=1):
        raise MemoryError

    monkeypatch.setattr(mnist_xp.images.decode, "to_gray", no_memory)
    with pytest.raises(ImageError) as caught:
        mnist_xp.images.decode.load_image(GOOD_PICTURE)
    message = str(caught.value)
    assert message.startswith(f"{GOOD_PICTURE}: ") and "too large" in message
    assert "corrupt" not in message


def test_predict_goes_on_after_a_file_too_large_for_memory(tmp_path, monkeypatch, capsys):
    good = _good_npy(tmp_path / "good.npy")
    big = tmp_path / "big.npy"
    np.save(big, np.repeat(np.load(good)[None], 3, axis=0))
    real = mnist_xp.fileio.reading.read_npy_stream

    def no_memory_for_big(stream, available):
        if available == big.stat().st_size:
            raise MemoryError
        return real(stream, available)

    monkeypatch.setattr(mnist_xp.fileio.reading, "read_npy_stream", no_memory_for_big)
    assert main(["predict", "--device", "cpu", str(big), str(good)]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"mnist-xp: error: {big}: too large to read into the "
                                "memory available"]
    assert out.startswith(f"{good}[0]: ") and len(out.splitlines()) == 1


# -- shapes and formats ------------------------------------------------------------------

@pytest.mark.parametrize("size, word", [((3001, 3), "wide"), ((2, 2001), "tall")])
def test_a_picture_too_elongated_for_digits_is_refused_before_decoding(tmp_path, size, word):
    from PIL import Image

    path = tmp_path / "strip.png"
    Image.new("L", size, 255).save(path)
    with pytest.raises(ImageError, match=rf"{size[0]}x{size[1]} pixels is too {word} to hold"):
        mnist_xp.images.decode.load_image(path)


def test_the_rgba_picture_shrinks_to_a_7_on_white(tmp_path):
    gray, scale = mnist_xp.images.decode.load_image_scaled(HOSTILE / "rgba_6324x6324.png", 1536)
    assert gray.shape == (1581, 1581) and scale == 4
    # Mostly transparent, its opaque part dark: dark ink on a white backdrop.
    assert np.median(gray) == 255 and gray.min() < 64


def test_a_file_object_and_a_path_read_alike():
    data = (HOSTILE / "rgba_6324x6324.png").read_bytes()
    a = mnist_xp.images.decode.load_image(HOSTILE / "rgba_6324x6324.png", 1536)
    b = mnist_xp.images.decode.load_image(io.BytesIO(data), 1536)
    np.testing.assert_array_equal(a, b)


# -- checkpoints load_state used to accept, then train --resume crashed on (issue 18) --------

def _mutated_checkpoint(src: Path, dst: Path, settings=None, meta=None, arrays=None) -> Path:
    """A copy of checkpoint `src` with metadata fields and member arrays replaced."""
    import json
    import zipfile

    with zipfile.ZipFile(src) as z:
        old = json.loads(str(np.load(src)["metadata"]))
        old["settings"].update(settings or {})
        old.update(meta or {})
        with zipfile.ZipFile(dst, "w") as out:
            for n in z.namelist():
                key, buf = n[:-4], io.BytesIO()
                if key == "metadata":
                    np.save(buf, np.array(json.dumps(old)))
                elif arrays and key in arrays:
                    np.save(buf, arrays[key])
                else:
                    out.writestr(n, z.read(n))
                    continue
                out.writestr(n, buf.getvalue())
    return dst


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a 2-epoch run on the bundled data, as the CLI writes it.

    The NumPy engine trains it: its own arrays (``runner/w1`` ...) are among those checked.
    """
    path = tmp_path_factory.mktemp("ck") / "ck.npz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_XP_ENGINE", "numpy")
        assert main(["train", "-q", "--data", "bundled", "--epochs", "2",
                     "--checkpoint", str(path)]) == 0
    return path


@pytest.mark.parametrize("change, fragment", [
    (dict(settings={"batch_size": "abc", "epochs": 3}), "batch_size='abc'"),
    (dict(settings={"learning_rate": "x", "epochs": 3}), "learning_rate='x'"),
    (dict(settings={"augment": {"rotate": "x"}, "epochs": 3}), "rotate='x'"),
    (dict(settings={"n_hidden": 50, "epochs": 3}), "metadata says float32[784, 50]"),
    (dict(settings={"epochs": 3}, arrays={"runner/w1": np.zeros((3, 3), np.float32)}),
     "runner/w1 is float32[3, 3]"),
    (dict(settings={"epochs": 3}, meta={"history": [1, 2, "x"]}), "history"),
    (dict(settings={"epochs": 3}, meta={"epoch": -5}), "epoch -5"),
    (dict(settings={"epochs": 3}, arrays={"params/W1": np.zeros((784, 100), np.float16)}),
     "float16[784, 100]"),
])
def test_resume_refuses_a_damaged_checkpoint_in_one_line(cli_checkpoint, tmp_path, capsys,
                                                         change, fragment):
    bad = _mutated_checkpoint(cli_checkpoint, tmp_path / "bad.npz", **change)
    assert main(["train", "-q", "--data", "bundled", "--resume", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and fragment in err, err
    if "params/W1" in change.get("arrays", {}):  # the model reader decides alike
        assert main(["predict", "--model", str(bad), str(tmp_path / "none.png")]) == 2
        assert "float16[784, 100]" in capsys.readouterr().err


def test_a_model_member_larger_than_its_metadata_says_is_refused_before_reading(
        tmp_path, monkeypatch):
    from mnist_xp import model_files
    from mnist_xp.errors import ModelFileError
    from mnist_xp.fileio import archive

    members = dict(np.load(model_files.default_model_path()))
    members["W1"] = np.zeros((784, 300_000), np.float32)
    bomb = tmp_path / "bomb_model.npz"
    np.savez_compressed(bomb, **members)
    read = []
    real = archive.read_npy_stream
    monkeypatch.setattr(archive, "read_npy_stream",
                        lambda stream, n: read.append(n) or real(stream, n))
    with pytest.raises(ModelFileError, match=r"W1 is float32\[784, 300000\], metadata says"):
        model_files.load(bomb)
    assert len(read) == 1  # only the metadata's data was read


@pytest.mark.parametrize("failure, fragment", [
    (ModuleNotFoundError("No module named 'cv2'", name="cv2"), "needs OpenCV: pip install"),
    (ImportError("libGL.so.1: cannot open shared object file"),
     "OpenCV could not be loaded (libGL.so.1"),
    (MemoryError(), "OpenCV could not be loaded (MemoryError)"),
    (ModuleNotFoundError("No module named 'numpy.core.multiarray'",
                         name="numpy.core.multiarray"), "OpenCV could not be loaded"),
])
def test_only_a_missing_opencv_is_reported_as_not_installed(monkeypatch, failure, fragment):
    import builtins
    import sys

    from mnist_xp.images.ink import cv2_module

    real = builtins.__import__

    def fail_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise failure
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    monkeypatch.setattr(builtins, "__import__", fail_cv2)
    with pytest.raises(ImageError) as info:
        cv2_module()
    assert fragment in str(info.value)


def test_predict_names_an_npz_archive_and_reads_an_upper_case_npy(tmp_path, capsys):
    model = Path(__file__).parent / "data" / "cases" / "hostile" / "tokenerror_model.npz"
    good = _good_npy(tmp_path / "x.npy").rename(tmp_path / "GOOD.NPY")
    assert main(["predict", str(model), str(good)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}[0]: ")
    assert err.strip() == (f"mnist-xp: error: {model}: an .npz archive, not an image, .npy "
                           "or IDX file (a model? give it with --model)")


@pytest.mark.parametrize("name,text", [("blank.json", "[0, 0, 0]"),
                                       ("pixels.txt", ' {"pixels": [0]}')])
def test_predict_names_json_and_says_where_it_goes(tmp_path, capsys, name, text):
    # The shared blank cases hold JSON bodies for serve; predict once read them as IDX
    # and answered "bad magic number 0x5b302c20".
    path = tmp_path / name
    path.write_text(text)
    good = _good_npy(tmp_path / "x.npy")
    assert main(["predict", str(path), str(good)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}[0]: ")
    assert err.strip() == (f"mnist-xp: error: {path}: JSON, which predict does not read; give "
                           "a picture, .npy or IDX file (save the array with numpy.save), or "
                           "send the JSON to mnist-xp serve")


def test_damaged_files_say_what_to_do_without_the_parsers_words(tmp_path, capsys):
    from PIL import Image

    hostile = Path(__file__).parent / "data" / "cases" / "hostile"
    picture = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).save(picture)
    cut = tmp_path / "cut.png"
    cut.write_bytes(picture.read_bytes()[: picture.stat().st_size // 2])
    model = Path(mnist_xp.fileio.reading.__file__).parents[1] / "models" / "default.npz"
    cut_model = tmp_path / "cut_model.npz"
    cut_model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])

    assert main(["predict", str(hostile / "indent.npy"), str(cut)]) == 2
    assert main(["predict", "--model", str(cut_model), str(cut)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"mnist-xp: error: {hostile / 'indent.npy'}: ")
    assert "re-save the array with numpy.save" in lines[0]
    assert "Error" not in lines[0] and "tokenize" not in lines[0]
    assert lines[1] == (f"mnist-xp: error: {cut}: truncated image (the file ends before the "
                        "picture does); export or copy it again")
    assert lines[2].startswith(f"mnist-xp: error: {cut_model}: ")
    assert "truncated or corrupt zip archive" in lines[2]
