"""Per-image random warps: their geometry, the gather that applies them, and training."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_data import blobs
from mnist_xp.augment import Distortion, RandomWarp
from mnist_xp.backend import get_backend
from mnist_xp.model import Architecture, init_params
from mnist_xp.training import TrainConfig, train

CPU = get_backend("cpu")


class HighRng:
    """A generator whose uniform draws are all at the top of their range."""

    def uniform(self, low, high, size=None):
        return np.broadcast_to(np.asarray(high, dtype=float), size if size is not None else ()).copy()

    def integers(self, low, high, size=None):
        return np.full(size, high - 1)


def one_pixel(side, r, c):
    img = np.zeros((side, side), np.uint8)
    img[r, c] = 255
    return img.reshape(1, -1)


def warp_one(image, distortion, rng, side=9):
    w = RandomWarp(side, distortion, bank_size=1)
    warps = RandomWarp.upload(w.draw_epoch(1, rng), CPU)
    return w.gather(image, np.array([0]), warps, np).reshape(side, side)


@pytest.mark.parametrize("bad", [dict(rotate=-1), dict(zoom=1.0), dict(shear=90), dict(rotate=181),
                                 dict(elastic=2, sigma=0), dict(translate=float("nan"))])
def test_distortion_rejects_bad_ranges(bad):
    with pytest.raises(ValueError):
        Distortion(**bad)


def test_distortion_from_dict_names_unknown_settings():
    assert Distortion.from_dict({"rotate": 5}) == Distortion(rotate=5)
    assert not Distortion.from_dict(None).active
    with pytest.raises(ValueError, match=r"unknown distortion settings \['spin'\]"):
        Distortion.from_dict({"spin": 3})


def test_a_negligible_warp_is_the_identity():
    w = RandomWarp(28, Distortion(rotate=1e-9, translate=1e-9), bank_size=4)
    index, keep = w.draw_bank(np.random.default_rng(0))
    assert index.shape == (4, 784) and index.dtype == np.int64 and keep.dtype == np.uint8
    np.testing.assert_array_equal(index, np.broadcast_to(np.arange(784), (4, 784)))
    assert keep.all()


def test_translation_moves_ink_down_and_right():
    out = warp_one(one_pixel(9, 4, 4), Distortion(translate=2), HighRng())
    assert out[6, 6] == 255 and out.sum() == 255


def test_rotation_by_90_degrees_turns_the_image_a_quarter():
    # a pixel right of the centre goes below it (image rows grow downwards)
    out = warp_one(one_pixel(9, 4, 7), Distortion(rotate=90), HighRng())
    assert out[7, 4] == 255 and out.sum() == 255


def test_zoom_moves_ink_away_from_the_centre():
    out = warp_one(one_pixel(9, 4, 6), Distortion(zoom=0.5), HighRng())
    assert out[4, 7] == 255


def test_pixels_from_outside_the_image_are_zero():
    img = np.full((1, 81), 200, np.uint8)
    out = warp_one(img, Distortion(translate=3), HighRng())
    assert (out[:3] == 0).all() and (out[:, :3] == 0).all() and (out[3:, 3:] == 200).all()


def test_elastic_fields_are_smooth_and_scale_with_alpha():
    def displacement(alpha, sigma):
        w = RandomWarp(28, Distortion(elastic=alpha, sigma=sigma), bank_size=200)
        blur = w._blur
        noise = np.random.default_rng(0).uniform(-1, 1, (200, 2, 28, 28))
        return alpha * (blur @ noise @ blur.T)

    weak, strong = displacement(10, 4), displacement(40, 4)
    assert strong.std() == pytest.approx(4 * weak.std(), rel=1e-9)
    smooth = displacement(30, 4)
    # neighbouring pixels move nearly together; distant ones independently
    near = np.corrcoef(smooth[:, 0, 10, 10], smooth[:, 0, 10, 11])[0, 1]
    far = np.corrcoef(smooth[:, 0, 2, 2], smooth[:, 0, 25, 25])[0, 1]
    assert near > 0.9 and abs(far) < 0.3


def test_gather_applies_each_samples_own_warp(backend):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 36), dtype=np.uint8)
    w = RandomWarp(6, Distortion(rotate=30, translate=1.5, elastic=3, sigma=2), bank_size=5)
    index, keep, ids = w.draw_epoch(10, rng)
    rows = np.array([7, 2, 2, 9])
    want = np.stack([x[r][index[ids[r]]] * keep[ids[r]] for r in rows])
    with backend.activate():
        warps = RandomWarp.upload((index, keep, ids), backend)
        got = backend.to_numpy(w.gather(backend.asarray(x), backend.asarray(rows), warps, backend.xp))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8


@pytest.mark.parametrize("pixels", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fast_path_with_warps_matches_the_generic_path(pixels, momentum):
    x, y = blobs(n=90)
    if not pixels:
        x = (x / 255).astype(np.float32)
    arch = Architecture(36, 7, 4)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, momentum=momentum,
                         augment=dict(rotate=15, zoom=0.1, shear=10, translate=1, elastic=2,
                                      sigma=2), warp_bank=8)
    results = []
    for fast in (True, False):
        rng = np.random.default_rng(3)
        params = init_params(arch, np.float32, rng)
        history = train(params, x, y, arch=arch, config=config, backend=CPU, rng=rng, fast=fast)
        results.append((params, history))
    (fast_p, fast_h), (slow_p, slow_h) = results
    for k in slow_p:
        np.testing.assert_allclose(fast_p[k], slow_p[k], rtol=2e-5, atol=2e-6, err_msg=k)
    assert [r["train_accuracy"] for r in fast_h] == [r["train_accuracy"] for r in slow_h]


def test_distortions_change_what_the_network_sees():
    x, y = blobs(n=90)
    arch = Architecture(36, 7, 4)
    finals = []
    for augment in (None, dict(rotate=20, elastic=2, sigma=2)):
        rng = np.random.default_rng(3)
        params = init_params(arch, np.float32, rng)
        train(params, x, y, arch=arch, config=TrainConfig(epochs=1, batch_size=16,
                                                          augment=augment), backend=CPU,
              rng=rng)
        finals.append(params["W1"])
    assert not np.allclose(*finals)


def test_distortions_need_square_images():
    x, y = blobs(n=20, side=6)
    x = x[:, :35]
    arch = Architecture(35, 4, 4)
    with pytest.raises(ValueError, match="square images"):
        train(init_params(arch, np.float32, np.random.default_rng(0)), x, y, arch=arch,
              config=TrainConfig(epochs=1, augment=dict(rotate=5)), backend=CPU,
              rng=np.random.default_rng(0))
