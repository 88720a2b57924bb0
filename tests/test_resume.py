"""Resumable training: checkpoints, interruption, divergence, determinism."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_xp import MLPClassifier, load_mnist
from mnist_xp.errors import ModelFileError
from mnist_xp.errors import TrainingDiverged, TrainingInterrupted
from mnist_xp.training.checkpoint import data_fingerprint, load_state, save_state

from helpers_data import blobs
from helpers_engines import EXT, use_engine

ROOT = Path(__file__).resolve().parents[1]


def fit(x, y, resume=None, stop_after=None, **kw):
    """Fit; with `stop_after`, ask to stop once that many steps have run."""
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return stop_after is not None and calls["n"] >= stop_after

    settings = dict(n_hidden=12, epochs=4, batch_size=16, device="cpu", random_state=5)
    settings.update(kw)
    clf = MLPClassifier(**settings)
    clf.fit(x, y, resume=resume, should_stop=should_stop)
    return clf


@pytest.fixture(autouse=True)
def step_by_step(monkeypatch):
    """The compiled engine calls into C once a step, so `stop_after` counts steps here too."""
    from mnist_xp.training.engines import compiled_engine

    monkeypatch.setattr(compiled_engine, "CHUNK_SAMPLES", 1)
    monkeypatch.delenv("MNIST_XP_ENGINE", raising=False)


ADAM = dict(optimizer="adam", learning_rate=0.01, schedule="onecycle")
WARPS = dict(augment={"rotate": 10, "elastic": 2})
# (CPU fast engine, settings): "fast" is whichever the chooser takes (compiled if built)
CASES = {
    "fast engine": ("fast", {}),
    "fast engine, shifts": ("fast", dict(shift=1)),
    "fast engine, warps": ("fast", WARPS),
    "fast engine, nesterov": ("fast", dict(optimizer="nesterov")),
    "fast engine, adam": ("fast", ADAM),
    "fast engine, adamw, smoothing": ("fast", dict(ADAM, optimizer="adamw", label_smoothing=0.1)),
    "numpy engine": ("numpy", {}),
    "numpy engine, warps": ("numpy", WARPS),
    "numpy engine declines, generic adam": ("numpy", ADAM),
    "validation": ("fast", dict(validation_fraction=0.2)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stop_after", [7, 20])  # mid-epoch, and later in another epoch
def test_interrupted_and_resumed_run_is_bit_for_bit_the_uninterrupted_one(tmp_path, case,
                                                                             stop_after,
                                                                             monkeypatch):
    x, y = blobs(n=90, side=6)
    engine, kw = CASES[case]
    if engine == "numpy":
        use_engine(monkeypatch, "numpy")
    whole = fit(x, y, **kw)
    with pytest.raises(TrainingInterrupted) as info:
        fit(x, y, stop_after=stop_after, **kw)
    state = info.value.state
    assert state is not None and 1 <= state.epoch < 4
    # through a file, as the command line does
    save_state(tmp_path / "ck.npz", state, settings={}, classes=np.arange(4),
               fingerprint=data_fingerprint(x, y))
    loaded, _ = load_state(tmp_path / "ck.npz")
    resumed = fit(x, y, resume=loaded, **kw)
    for k in whole.params_:
        np.testing.assert_array_equal(resumed.params_[k], whole.params_[k], err_msg=k)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history_) == strip(whole.history_)


def test_checkpoints_from_before_the_engines_had_names_resume_exactly(tmp_path, numpy_engine):
    # files written before the engine contract recorded the class name of the runner
    x, y = blobs(n=90, side=6)
    whole = fit(x, y)
    with pytest.raises(TrainingInterrupted) as info:
        fit(x, y, stop_after=20)
    state = info.value.state
    assert state.engine == "numpy" and state.engine_arrays
    state.engine = "NumpyEpochRunner"
    save_state(tmp_path / "old.npz", state, settings={}, classes=np.arange(4),
               fingerprint=data_fingerprint(x, y))
    loaded, _ = load_state(tmp_path / "old.npz")
    assert loaded.engine == "numpy"
    resumed = fit(x, y, resume=loaded)
    for k in whole.params_:
        np.testing.assert_array_equal(resumed.params_[k], whole.params_[k], err_msg=k)


@pytest.mark.parametrize("first, then", [
    ("numpy", "generic"),
    pytest.param("compiled", "numpy", marks=pytest.mark.skipif(
        EXT is None, reason="compiled engine absent")),
])
def test_a_checkpoint_of_one_engine_resumes_on_another(tmp_path, monkeypatch, first, then):
    # one engine's checkpoint continued by another (parameters and momentum in the
    # generic layout, nothing exact to take): close, not bit for bit
    x, y = blobs(n=90, side=6)
    use_engine(monkeypatch, first)
    with pytest.raises(TrainingInterrupted) as info:
        fit(x, y, stop_after=20)
    state = info.value.state
    assert state.engine == first
    whole = fit(x, y)
    if then == "generic":
        state.engine = "generic"  # the NumPy engine then takes the generic layout
    else:
        use_engine(monkeypatch, then)
    resumed = fit(x, y, resume=state)
    if then != "generic":
        assert resumed.engine_.name == then
    for k in whole.params_:
        np.testing.assert_allclose(resumed.params_[k], whole.params_[k], rtol=1e-4, atol=1e-5)


def test_an_interruption_in_the_first_epoch_has_no_state_to_save():
    x, y = blobs(n=90, side=6)
    with pytest.raises(TrainingInterrupted) as info:
        fit(x, y, stop_after=2)
    assert info.value.state is None and (info.value.epoch, info.value.step) == (1, 2)


def test_same_seed_gives_identical_results_run_after_run():
    x, y = blobs(n=90, side=6)
    a, b = fit(x, y, shift=1), fit(x, y, shift=1)
    for k in a.params_:
        np.testing.assert_array_equal(a.params_[k], b.params_[k])
    assert [r["train_loss"] for r in a.history_] == [r["train_loss"] for r in b.history_]


@pytest.mark.parametrize("kw", [{}, dict(optimizer="adam")])
def test_a_diverging_run_stops_naming_the_epoch_and_step(kw):
    x, y = blobs(n=90, side=6)
    with pytest.raises(TrainingDiverged) as info:
        fit(x, y, learning_rate=1e30, **kw)
    message = str(info.value)
    assert info.value.epoch == 1 and info.value.step is not None
    assert f"epoch 1, step {info.value.step + 1} of 6" in message
    assert "smaller learning rate" in message


def test_damaged_checkpoints_are_refused_with_one_line(tmp_path):
    bad = tmp_path / "ck.npz"
    for content in (b"", b"PK\x03\x04 not really", b"\x93NUMPY junk"):
        bad.write_bytes(content)
        with pytest.raises(ModelFileError, match=str(bad)):
            load_state(bad)
    np.savez(bad, metadata=np.array(json.dumps({"format": "mnist_xp.model"})))
    with pytest.raises(ModelFileError, match="not an mnist_xp training checkpoint"):
        load_state(bad)


# -- through the command line, in subprocesses ----------------------------------------

def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"),
               MNIST_XP_DATA=os.path.join(os.devnull, "cache"))
    return subprocess.Popen([sys.executable, "-m", "mnist_xp", "train", "--data", "bundled",
                             "--quiet", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc):
    """Block until `path` exists (or the process ends)."""
    while not path.exists() and proc.poll() is None:
        time.sleep(0.05)


def weights(path):
    with np.load(path) as f:
        return {k: f[k] for k in ("W1", "b1", "W2", "b2")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("whole")
    proc = cli("--epochs", 12, "--save", "whole.npz", cwd=cwd)
    assert proc.wait() == 0, proc.stderr.read()
    return weights(cwd / "whole.npz")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_that_resumes_to_the_same_model(tmp_path, uninterrupted, sig,
                                                                     status):
    proc = cli("--epochs", 12, "--checkpoint", "ck.npz", "--save", "m.npz", cwd=tmp_path)
    wait_for(tmp_path / "ck.npz", proc)
    proc.send_signal(sig)
    out, err = proc.communicate()
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived (a very fast machine)")
    assert proc.returncode == status
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"stopped by {sig.name}" in lines[0] and "--resume ck.npz" in lines[0]
    assert not (tmp_path / "m.npz").exists()  # no model from an unfinished run
    resumed = cli("--resume", "ck.npz", "--save", "m.npz", cwd=tmp_path)
    assert resumed.wait() == 0, resumed.stderr.read()
    got = weights(tmp_path / "m.npz")
    for k in uninterrupted:
        np.testing.assert_array_equal(got[k], uninterrupted[k], err_msg=k)


def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "ck.npz"
    epochs_seen = []
    for attempt in range(5):
        args = (["--resume", path] if path.exists() else ["--epochs", 40]) + ["--checkpoint", path]
        proc = cli(*args, cwd=tmp_path)
        if not path.exists():
            wait_for(path, proc)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        proc.wait()
        state, info = load_state(path)  # always whole: the old file or the new one
        epochs_seen.append(state.epoch)
        assert state.epoch >= 1 and len(state.history) == state.epoch
        # SIGKILL during a write can leave the hidden temporary file (nothing can remove
        # it), never anything else: the checkpoint itself is the old one or the new one
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert all(re.fullmatch(r"\.ck\.npz\.[0-9a-f]{8}\.tmp", n) for n in leftovers), leftovers
    assert epochs_seen == sorted(epochs_seen)  # each run continued the previous one
    final = cli("--resume", path, "--checkpoint", path, cwd=tmp_path)
    out, err = final.communicate()
    assert final.returncode == 0, err
    assert load_state(path)[0].epoch == 40


@pytest.mark.parametrize("args, fragment", [
    (["--resume", "ck.npz", "--lr", "0.5"], "--learning-rate cannot be combined with --resume"),
    (["--resume", "missing.npz"], "missing.npz: no such checkpoint file"),
    (["--resume", "model.npz"], "not an mnist_xp training checkpoint"),
])
def test_resume_mistakes_are_one_line(tmp_path, args, fragment):
    MLPClassifier(8, epochs=1, device="cpu").fit(*blobs(n=30, side=6))
    from mnist_xp import save

    save(MLPClassifier(8, epochs=1, device="cpu").fit(*blobs(n=30, side=6)), tmp_path / "model.npz")
    (tmp_path / "ck.npz").write_bytes(b"")
    proc = cli(*args, cwd=tmp_path)
    out, err = proc.communicate()
    assert proc.returncode == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_resume_on_other_data_is_refused(tmp_path):
    data = load_mnist("bundled")
    x, y = data.x_train[:200].reshape(200, -1), data.y_train[:200]
    with pytest.raises(TrainingInterrupted) as info:
        MLPClassifier(8, epochs=3, device="cpu").fit(
            x, y, should_stop=lambda: True, on_checkpoint=lambda s: None)
    assert info.value.state is None
    clf = MLPClassifier(8, epochs=3, device="cpu")
    states = []
    clf.fit(x, y, on_checkpoint=states.append)
    save_state(tmp_path / "ck.npz", states[0], settings=clf.get_params() | {"device": None},
               classes=np.arange(10), fingerprint=data_fingerprint(x, y))
    proc = cli("--resume", "ck.npz", cwd=tmp_path)
    out, err = proc.communicate()
    assert proc.returncode == 2 and "trained on other data" in err


def test_a_pipe_or_a_bare_array_is_refused_as_a_checkpoint(tmp_path):
    fifo = tmp_path / "ck.npz"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="named pipe"):
        load_state(fifo)  # without blocking on the pipe
    np.save(tmp_path / "a.npy", np.arange(3))
    with pytest.raises(ModelFileError, match="not an mnist_xp training checkpoint"):
        load_state(tmp_path / "a.npy")
