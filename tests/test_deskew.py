"""Deskewing: straightened images on every backend, and models that deskew what they read."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mnist_xp
from mnist_xp.backend import to_numpy
from mnist_xp.deskew import DESKEW_CHUNK, deskew
from mnist_xp.errors import SettingError

from helpers_data import blobs
from test_cli import run_cli


def moments(images: np.ndarray):
    """Centre of mass (cy, cx) and slant cov(y, x) / var(y) of each square image."""
    side = math.isqrt(images.shape[-1] * images.shape[-2] if images.ndim == 3 else images.shape[-1])
    f = images.reshape(-1, side, side).astype(np.float64)
    r = np.arange(side, dtype=np.float64)
    total = f.sum(axis=(1, 2))
    cy = (f.sum(axis=2) * r).sum(axis=1) / total
    cx = (f.sum(axis=1) * r).sum(axis=1) / total
    dy, dx = r[None, :, None] - cy[:, None, None], r[None, None, :] - cx[:, None, None]
    return cy, cx, (f * dy * dx).sum(axis=(1, 2)) / (f * dy * dy).sum(axis=(1, 2))


def slanted_bars(n: int, side: int = 28, seed: int = 0) -> np.ndarray:
    """Thick bars at random slants and offsets, as (n, side * side) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side].astype(np.float64)
    out = np.zeros((n, side, side))
    for k in range(n):
        slant, cx, cy = rng.uniform(-0.6, 0.6), rng.uniform(10, 17), rng.uniform(11, 16)
        centre_x = cx + slant * (y - cy)
        out[k] = np.clip(2.5 - np.abs(x - centre_x), 0, 1) * (np.abs(y - cy) < 9)
    return (out.reshape(n, -1) * 255).astype(np.uint8)


def reference_deskew(image: np.ndarray) -> np.ndarray:
    """One image deskewed the slow way: each output pixel's bilinear sample, one by one."""
    side = image.shape[0]
    if not image.any():
        return image.astype(np.float64)  # no ink: nothing to straighten
    cy, cx, slant = (float(v[0]) for v in moments(image[None]))
    slant, c = min(max(slant, -1.0), 1.0), (side - 1) / 2
    f = image.astype(np.float64)

    def pixel(r, q):
        return f[r, q] if 0 <= r < side and 0 <= q < side else 0.0

    out = np.zeros((side, side))
    for y in range(side):
        for x in range(side):
            sy, sx = y + cy - c, x + slant * (y - c) + cx - c
            r0, q0 = math.floor(sy), math.floor(sx)
            wy, wx = sy - r0, sx - q0
            out[y, x] = ((1 - wy) * ((1 - wx) * pixel(r0, q0) + wx * pixel(r0, q0 + 1))
                         + wy * ((1 - wx) * pixel(r0 + 1, q0) + wx * pixel(r0 + 1, q0 + 1)))
    return out


def test_deskewed_bars_stand_upright_in_the_middle(backend):
    bars = slanted_bars(40)
    assert np.abs(moments(bars)[2]).max() > 0.4  # they were slanted
    with backend.activate():
        out = to_numpy(deskew(backend.asarray(bars), backend.xp))
    assert out.dtype == np.uint8 and out.shape == bars.shape
    cy, cx, slant = moments(out)
    assert np.abs(slant).max() < 0.03
    assert np.abs(cy - 13.5).max() < 0.1 and np.abs(cx - 13.5).max() < 0.1
    # the ink is moved, not lost (rounding and bilinear smoothing aside)
    assert np.allclose(out.sum(axis=1), bars.sum(axis=1).astype(float), rtol=0.02)


def test_deskew_is_bilinear_resampling_at_the_moments(backend):
    rng = np.random.default_rng(3)
    images = np.concatenate([slanted_bars(6, seed=4),
                             rng.integers(0, 256, (3, 784)) * (rng.random((3, 784)) < 0.2),
                             np.zeros((1, 784))])
    images = images.astype(np.float64)
    with backend.activate():
        out = to_numpy(deskew(backend.asarray(images), backend.xp))
    for image, got in zip(images, out):
        want = reference_deskew(image.reshape(28, 28)).ravel()
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_uint8_input_is_the_rounded_float_result():
    bars = slanted_bars(10, seed=5)
    as_bytes = deskew(bars, np)
    as_floats = deskew(bars.astype(np.float32), np)
    assert as_floats.dtype == np.float32
    np.testing.assert_array_equal(as_bytes, np.clip(np.round(as_floats), 0, 255).astype(np.uint8))


def test_blank_images_are_left_as_they_are_and_flat_ones_only_centred():
    blank = np.zeros((2, 784), np.uint8)
    np.testing.assert_array_equal(deskew(blank, np), blank)
    # one horizontal line: no vertical extent, so no slant; its centre moves from row
    # 13 to 13.5, which splits it evenly over rows 13 and 14
    line = np.zeros((28, 28), np.uint8)
    line[13, 3:25] = 200
    want = np.zeros((28, 28), np.uint8)
    want[13:15, 3:25] = 100
    np.testing.assert_array_equal(deskew(line.reshape(1, -1), np).reshape(28, 28), want)


def test_every_chunk_gets_its_own_moments():
    bars = slanted_bars(DESKEW_CHUNK + 7, side=8, seed=6)
    whole = deskew(bars, np)
    one_by_one = np.concatenate([deskew(b[None], np) for b in bars])
    np.testing.assert_array_equal(whole, one_by_one)


def test_images_that_are_not_square_are_refused():
    with pytest.raises(ValueError, match="square"):
        deskew(np.zeros((2, 10), np.uint8), np)
    x, y = blobs(n=40, side=6)
    with pytest.raises(SettingError, match="deskew"):
        mnist_xp.MLPClassifier(deskew=True, epochs=1).fit(x[:, :35], y)


def test_a_deskewing_model_is_a_model_of_deskewed_images(backend):
    x, y = blobs(n=120, side=8, seed=2)
    settings = dict(epochs=2, batch_size=16, random_state=0, device=backend)
    with backend.activate():
        straight = to_numpy(deskew(backend.asarray(x), backend.xp))
    own = mnist_xp.MLPClassifier(deskew=True, **settings).fit(x, y)
    given = mnist_xp.MLPClassifier(**settings).fit(straight, y)
    for key in own.params_:
        np.testing.assert_array_equal(to_numpy(own.params_[key]), to_numpy(given.params_[key]))
    np.testing.assert_array_equal(to_numpy(own.predict_proba(x)),
                                  to_numpy(given.predict_proba(straight)))
    assert not np.array_equal(to_numpy(own.predict_proba(x)), to_numpy(given.predict_proba(x)))


def test_the_setting_survives_a_model_file(tmp_path):
    x, y = blobs(n=80, side=8)
    model = mnist_xp.MLPClassifier(deskew=True, epochs=2, random_state=0).fit(x, y)
    mnist_xp.save(model, tmp_path / "m.npz")
    loaded = mnist_xp.load(tmp_path / "m.npz")
    assert loaded.deskew is True
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_the_best_preset_deskews_and_the_default_does_not():
    assert mnist_xp.MLPClassifier.from_preset("best").deskew is True
    assert mnist_xp.MLPClassifier.from_preset("default").deskew is False
    assert mnist_xp.MLPClassifier().deskew is False


def test_a_teacher_must_read_images_the_students_way():
    x, y = blobs(n=80, side=8)
    teacher = mnist_xp.MLPClassifier(epochs=1, random_state=0).fit(x, y)
    student = mnist_xp.MLPClassifier(deskew=True, epochs=1, teacher=teacher)
    with pytest.raises(ValueError, match="deskew"):
        student.fit(x, y)


def test_cli_deskew_flags(tmp_path):
    from helpers_data import synthetic_mnist, write_mnist_dir

    data = write_mnist_dir(tmp_path / "data", synthetic_mnist(n_train=64, n_test=16))
    plain = tmp_path / "plain.npz"
    done = run_cli("train", "--data-dir", data, "--epochs", "1", "--batch-size", "16", "--quiet", "--save", plain)
    assert done.returncode == 0, done.stderr
    run = run_cli("train", "--data-dir", data, "--epochs", "1", "--batch-size", "16", "--quiet", "--deskew",
                  "--save", tmp_path / "d.npz")
    assert run.returncode == 0, run.stderr
    assert mnist_xp.load(tmp_path / "d.npz").deskew is True
    assert mnist_xp.load(plain).deskew is False
    # a teacher trained without deskewing, for a deskewing student: one line, status 2
    bad = run_cli("train", "--data-dir", data, "--epochs", "1", "--batch-size", "16", "--quiet", "--deskew",
                  "--teacher", plain)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "deskew" in bad.stderr and "Traceback" not in bad.stderr


def test_bytes_are_deskewed_without_a_float_copy_of_the_whole_set():
    import tracemalloc

    images = np.tile(slanted_bars(50, seed=7), (400, 1))  # 20,000 images, 15.7 MB
    tracemalloc.start()
    try:
        out = deskew(images, np)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8
    # the result (15.7 MB) and one chunk's temporaries; a float32 copy of the whole set
    # alone would be 63 MB
    assert peak < images.nbytes + 25e6


def test_the_shipped_model_deskews():
    from mnist_xp.model_files import default_model_path

    assert mnist_xp.load(default_model_path()).deskew is True


def test_a_model_file_from_before_deskewing_loads_without_it(tmp_path):
    import json

    x, y = blobs(n=80, side=8)
    model = mnist_xp.MLPClassifier(epochs=1, random_state=0).fit(x, y)
    path = mnist_xp.save(model, tmp_path / "new.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["metadata"]))
    del meta["estimator_params"]["deskew"]  # as files written before the setting existed
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    old = mnist_xp.load(tmp_path / "old.npz")
    assert old.deskew is False
    np.testing.assert_array_equal(old.predict_proba(x), model.predict_proba(x))


def test_negative_values_are_refused_not_deskewed():
    x, y = blobs(n=80, side=8, pixels=False)
    signed = (x - x.mean(axis=0)) / x.std(axis=0)  # standardized features
    with pytest.raises(ValueError, match="deskew=True needs pixel intensities >= 0"):
        mnist_xp.MLPClassifier(deskew=True, epochs=1).fit(signed, y)
    model = mnist_xp.MLPClassifier(deskew=True, epochs=1, random_state=0).fit(x, y)
    nearly_cancelling = np.zeros((1, 64), np.float32)
    nearly_cancelling[0, 0], nearly_cancelling[0, 63] = 1.0, -1.0 + 1e-6
    with pytest.raises(ValueError, match="negative"):
        model.predict_proba(nearly_cancelling)


@pytest.mark.parametrize("images, error", [
    (np.zeros((2, 784), np.float16), TypeError),
    (np.zeros((2, 784), np.int64), TypeError),
    (np.zeros((2, 784), bool), TypeError),
    (np.zeros(784, np.uint8), ValueError),
])
def test_deskew_refuses_what_it_cannot_straighten(images, error):
    with pytest.raises(error):
        deskew(images, np)
