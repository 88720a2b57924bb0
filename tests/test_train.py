"""The training loop, batched evaluation, the learning-rate schedule and augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_xp.augment import RandomShift, image_side
from mnist_xp.model import Architecture, forward, init_params
from mnist_xp.inference import count_correct, predict_scores
from mnist_xp.training import TrainConfig, TrainingHooks, learning_rate_at, train

from helpers_backend import assert_close
from helpers_engines import CPU_FAST_ENGINE


def blobs(n=300, n_features=16, n_classes=3, seed=0):
    """Well separated Gaussian clusters as uint8 'pixels': (x (n, f) uint8, y (n,) int64)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 215, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, n)
    x = np.clip(centres[y] + rng.normal(0, 12, size=(n, n_features)), 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)


def run(backend, x, y, config, arch=None, seed=0, eval_set=None, dtype=np.float32):
    """Train from seeded weights on `backend`; return (history, host params)."""
    arch = arch or Architecture(x.shape[1], 8, int(y.max()) + 1)
    rng = np.random.default_rng(seed)
    params = {k: backend.asarray(v) for k, v in init_params(arch, dtype, rng).items()}
    if eval_set is not None:
        eval_set = tuple(backend.asarray(a) for a in eval_set)
    history = train(params, backend.asarray(x), backend.asarray(y), arch=arch, config=config,
                    backend=backend, rng=rng, eval_set=eval_set)
    return history, {k: backend.to_numpy(v) for k, v in params.items()}


def test_training_learns_separable_data(backend):
    x, y = blobs()
    history, _ = run(backend, x, y, TrainConfig(epochs=5, batch_size=32, learning_rate=0.1),
                     eval_set=(x, y))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    assert history[-1]["test_accuracy"] > 0.95
    for r in history:
        assert set(r) == {"epoch", "train_loss", "train_accuracy", "val_accuracy", "test_accuracy",
                          "seconds", "device", "engine", "engine_reason"}
        assert r["engine"] == (CPU_FAST_ENGINE if backend.name == "numpy" else
                               "cuda" if backend.name == "cupy" else "generic")
        assert isinstance(r["train_loss"], float) and isinstance(r["test_accuracy"], float)
        assert 0 <= r["train_accuracy"] <= 1 and r["seconds"] >= 0
        assert r["device"] == backend.device


@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_backend_trains_to_the_same_weights_as_numpy(backend, shift, dtype):
    # 36 features = 6x6 images, so the shift augmentation can run too.
    x, y = blobs(n=100, n_features=36)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, schedule="cosine",
                         shift=shift, weight_decay=1e-3)
    ref_history, ref = run(get_numpy(), x, y, config, dtype=dtype)
    history, got = run(backend, x, y, config, dtype=dtype)
    tol = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}[np.dtype(dtype)]
    for k in ref:
        assert got[k].dtype == dtype
        np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol, err_msg=k)
    np.testing.assert_allclose([r["train_loss"] for r in history],
                               [r["train_loss"] for r in ref_history], rtol=tol)


def get_numpy():
    from mnist_xp.backend import get_backend

    return get_backend("cpu")


def test_same_seed_same_run_other_seed_other_run():
    x, y = blobs()
    config = TrainConfig(epochs=2, batch_size=32, shift=0)
    a, b, c = (run(get_numpy(), x, y, config, seed=s)[1] for s in (1, 1, 2))
    np.testing.assert_array_equal(a["W1"], b["W1"])
    assert not np.allclose(a["W1"], c["W1"])


class RecordingProgress:
    def __init__(self):
        self.calls = []

    def start(self, epoch, n_batches):
        self.calls.append(("start", epoch, n_batches))

    def advance(self, done):
        self.calls.append(("advance", done))

    def finish(self):
        self.calls.append(("finish",))


def test_every_batch_runs_including_the_last_partial_one(monkeypatch):
    # 10 samples in batches of 4: three steps per epoch, the last with 2 samples; the
    # compiled engine reports progress between its calls into C: one step a call here
    from mnist_xp.training.engines import compiled_engine

    monkeypatch.setattr(compiled_engine, "CHUNK_SAMPLES", 1)
    x, y = blobs(n=10)
    arch = Architecture(16, 8, 3)
    rng = np.random.default_rng(0)
    params = init_params(arch, np.float32, rng)
    progress = RecordingProgress()
    b = get_numpy()
    train(params, x, y, arch=arch, config=TrainConfig(epochs=2, batch_size=4), backend=b,
          rng=rng, hooks=TrainingHooks(progress=progress))
    epoch = [("advance", 1), ("advance", 2), ("advance", 3), ("finish",)]
    assert progress.calls == [("start", 1, 3), *epoch, ("start", 2, 3), *epoch]


def test_float_inputs_are_used_as_given_and_uint8_scaled():
    x, y = blobs(n=50)
    xf = x.astype(np.float32) / 255
    _, from_uint8 = run(get_numpy(), x, y, TrainConfig(epochs=1, batch_size=10))
    _, from_float = run(get_numpy(), xf, y, TrainConfig(epochs=1, batch_size=10))
    for k in from_uint8:
        np.testing.assert_allclose(from_uint8[k], from_float[k], rtol=1e-5, atol=1e-6)


def test_cosine_schedule_runs_from_peak_to_zero():
    config = TrainConfig(learning_rate=0.2, schedule="cosine")
    assert learning_rate_at(config, 0, 100) == pytest.approx(0.2)
    assert learning_rate_at(config, 50, 100) == pytest.approx(0.1)
    assert learning_rate_at(config, 99, 100) < 0.001
    rates = [learning_rate_at(config, i, 100) for i in range(100)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert learning_rate_at(TrainConfig(learning_rate=0.2, schedule="constant"), 99, 100) == 0.2


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(epochs=1.5),
                                 dict(schedule="linear"), dict(shift=-1), dict(optimizer="lbfgs"),
                                 dict(warmup=-1), dict(warmup=20, epochs=10),
                                 dict(label_smoothing=1.0), dict(label_smoothing=-0.1),
                                 dict(shift=1, augment=dict(rotate=5)), dict(augment=dict(spin=3)),
                                 dict(optimizer="nesterov", momentum=0.0),
                                 dict(schedule="onecycle", warmup=1.0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_shift_needs_square_images():
    x, y = blobs(n_features=10)
    with pytest.raises(ValueError, match="square"):
        run(get_numpy(), x, y, TrainConfig(epochs=1, shift=1))


# -- evaluation ---------------------------------------------------------------------------

def test_batched_scores_equal_one_big_forward(backend):
    x, y = blobs(n=103)
    arch = Architecture(16, 8, 3)
    params = init_params(arch, np.float32, np.random.default_rng(0))
    dev = {k: backend.asarray(v) for k, v in params.items()}
    ref = forward(params, x.astype(np.float32) / 255, arch, np)[1]
    with backend.activate():
        scores = predict_scores(dev, backend.asarray(x), arch, dev["W1"].dtype, backend, batch_size=10)
        hits = count_correct(dev, backend.asarray(x), backend.asarray(y), arch, dev["W1"].dtype,
                             backend, batch_size=10)
    assert_close(scores, ref, backend, rtol=1e-5, atol=1e-6)
    assert int(backend.to_numpy(hits)) == int((ref.argmax(axis=1) == y).sum())


# -- augmentation -------------------------------------------------------------------------

def reference_shift(image, dy, dx):
    """Move a 2-D image down by dy and right by dx pixels, filling with zeros."""
    out = np.zeros_like(image)
    h, w = image.shape
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[i, j] = image[i - dy, j - dx]
    return out


@pytest.mark.parametrize("max_shift", [1, 2])
def test_random_shift_moves_the_batch_by_each_offset(backend, max_shift):
    side = 5
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(3, side * side)).astype(np.uint8)
    shifter = RandomShift(side, max_shift)
    offsets = [(dy, dx) for dy in range(-max_shift, max_shift + 1)
               for dx in range(-max_shift, max_shift + 1)]
    assert shifter.n_shifts == len(offsets)
    for shift_id, (dy, dx) in enumerate(offsets):
        assert shifter.offset(shift_id) == (dy, dx)
        with backend.activate():
            out = shifter.apply(backend.asarray(images), shift_id, backend.xp)
        expected = np.stack([reference_shift(im.reshape(side, side), dy, dx).ravel()
                             for im in images])
        assert_close(out, expected, backend)


def test_image_side():
    assert image_side(784) == 28
    assert image_side(36) == 6
    assert image_side(785) is None
    with pytest.raises(ValueError):
        RandomShift(5, 5)


def test_every_shift_is_drawn_over_an_epoch():
    # Each batch draws its own shift: over many batches all (2s+1)^2 appear.
    x, y = blobs(n=800, n_features=36)
    seen = set()
    orig = RandomShift.offset

    def spy(self, shift_id):
        seen.add(orig(self, shift_id))
        return orig(self, shift_id)

    RandomShift.offset = spy
    try:
        run(get_numpy(), x, y, TrainConfig(epochs=1, batch_size=4, shift=1))
    finally:
        RandomShift.offset = orig
    assert seen == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


def test_cuda_batch_loop_never_waits_for_the_device(cuda_backend):
    # cupyx.allow_synchronize(False) makes any device->host sync inside the block raise.
    import cupyx

    b = cuda_backend
    x, y = blobs(n=200, n_features=36)
    arch = Architecture(36, 8, 3)
    rng = np.random.default_rng(0)
    with b.activate():
        params = {k: b.asarray(v) for k, v in init_params(arch, np.float32, rng).items()}
        xd, yd = b.asarray(x), b.asarray(y)
        order = b.asarray(rng.permutation(200))
        from mnist_xp.optim import SGD
        from mnist_xp.training.engines import EngineSetup, EpochInputs, GenericEngine

        engine = GenericEngine(EngineSetup(params, arch, SGD(0.1, momentum=0.9), xd, yd, b))
        b.synchronize()
        with cupyx.allow_synchronize(False):
            loss, correct = engine.run_epoch(EpochInputs(order, 32, [0.1] * 7))
        assert np.isfinite(float(b.to_numpy(loss)))


def test_validation_keeps_the_weights_of_the_best_epoch():
    x, y = blobs(n=200, n_features=36)
    arch = Architecture(36, 8, 3)
    rng = np.random.default_rng(0)
    params = init_params(arch, np.float32, rng)
    snapshots = {}
    # a large constant rate makes validation accuracy go up and down
    config = TrainConfig(epochs=8, batch_size=16, learning_rate=2.0, momentum=0.9)
    history = train(params, x[:150], y[:150], arch=arch, config=config, backend=get_numpy(),
                    rng=rng, val_set=(x[150:], y[150:]),
                    hooks=TrainingHooks(on_epoch=lambda r: snapshots.__setitem__(
                        r["epoch"], {k: v.copy() for k, v in params.items()})))
    accs = [r["val_accuracy"] for r in history]
    best = int(np.argmax(accs)) + 1  # the first epoch with the highest accuracy
    assert [r["epoch"] for r in history if r.get("best")] == [best]
    for k in params:
        np.testing.assert_array_equal(params[k], snapshots[best][k])


def test_patience_stops_when_validation_accuracy_stops_improving():
    x, y = blobs(n=200, n_features=36)
    arch = Architecture(36, 8, 3)
    rng = np.random.default_rng(0)
    params = init_params(arch, np.float32, rng)
    history = train(params, x[:150], y[:150], arch=arch,
                    config=TrainConfig(epochs=30, batch_size=16, validation_fraction=0.25,
                                       n_iter_no_change=2),
                    backend=get_numpy(), rng=rng, val_set=(x[150:], y[150:]))
    best = [r["epoch"] for r in history if r.get("best")][0]
    assert len(history) == best + 2 < 30
    assert all(r["val_accuracy"] <= history[best - 1]["val_accuracy"] for r in history)


def test_without_a_validation_set_patience_watches_the_training_loss():
    x, y = blobs(n=200, n_features=36)
    arch = Architecture(36, 8, 3)
    # a large constant rate makes the training loss go up and down
    config = TrainConfig(epochs=30, batch_size=16, learning_rate=3.0, momentum=0.9,
                         schedule="constant", n_iter_no_change=2)
    history = train(init_params(arch, np.float32, np.random.default_rng(0)), x, y, arch=arch,
                    config=config, backend=get_numpy(), rng=np.random.default_rng(0))
    losses = [r["train_loss"] for r in history]
    best = int(np.argmin(losses)) + 1
    assert len(history) == best + 2 < 30
    assert not any(r.get("best") for r in history)  # nothing held out to choose by
