"""`mnist_xp.images.shrink.to_gray`: luminance, alpha and deep samples, block-averaged by tiles.

Every mode is held to a reference computed the plain way (the whole picture in float64:
luminance, compositing, scaling, then block means), within one grey level (OpenCV's
luma is integer). Tiles must not show: any tile size gives the same pixels.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import mnist_xp.images.decode as decode
from mnist_xp.errors import ImageError
from mnist_xp.images import shrink

Image = pytest.importorskip("PIL.Image", reason="Pillow decodes the pictures")
cv2 = pytest.importorskip("cv2", reason="OpenCV shrinks them")

H, W = 203, 317  # not multiples of the factors: partial blocks at the far edges


def _digit() -> np.ndarray:
    """Dark strokes on a light, slightly textured page, uint8 (H, W)."""
    rng = np.random.default_rng(0)
    g = rng.integers(200, 240, (H, W)).astype(np.uint8)
    g[30:170, 140:165] = 20
    g[30:50, 90:230] = 35
    return g


def _block_means(a: np.ndarray, f: int) -> np.ndarray:
    """Means of f x f blocks (partial ones at the edges), float64."""
    rows = [a[i:i + f] for i in range(0, a.shape[0], f)]
    return np.array([[r[:, j:j + f].mean() for j in range(0, a.shape[1], f)] for r in rows])


def _reference(luma: np.ndarray, alpha: np.ndarray | None, f: int) -> np.ndarray:
    """Block means of the composited luminance, the backdrop chosen as before the tiles
    (the whole picture at full size)."""
    if alpha is None:
        return _block_means(luma, f)
    coverage = alpha.mean()
    if coverage < 0.5:
        backdrop = 255.0 if (luma * alpha).sum() / alpha.sum() < 128 else 0.0
    else:
        opaque = luma[alpha > 0.5]
        if opaque.std() < 20 and coverage < 0.98:
            backdrop = 255.0 if np.median(opaque) < 128 else 0.0
        else:
            backdrop = float(np.median(opaque))
    return _block_means(luma * alpha + backdrop * (1 - alpha), f)


def _pictures():
    g = _digit()
    luma = g.astype(np.float64)
    rgb = np.stack([g, g // 2 + 100, 255 - g // 3], axis=2).astype(np.uint8)
    rgb_luma = rgb @ np.array([0.299, 0.587, 0.114])
    ink = (g < 128).astype(np.uint8) * 255  # the strokes opaque, the rest transparent
    rgba = np.dstack([np.zeros_like(g)] * 3 + [ink])
    la = Image.fromarray(np.dstack([np.full_like(g, 40), ink]), "LA")
    p = Image.fromarray(g).convert("P")
    p.info["transparency"] = int(np.asarray(p)[0, 0])
    p_alpha = (np.asarray(p) != p.info["transparency"]).astype(np.float64)
    p_luma = np.asarray(p.convert("RGB")).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return {
        "L": (Image.fromarray(g), luma, None),
        "RGB": (Image.fromarray(rgb), rgb_luma, None),
        "1": (Image.fromarray(g < 128).convert("1"), (g < 128) * 255.0, None),
        "RGBA": (Image.fromarray(rgba, "RGBA"), np.zeros_like(luma), ink / 255.0),
        "LA": (la, np.full_like(luma, 40), ink / 255.0),
        "P+transparency": (p, p_luma, p_alpha),
        "I;16": (Image.fromarray(g.astype(np.uint16) * 257), luma, None),
        "I": (Image.fromarray(g.astype(np.int32) * 257), luma, None),
        "F in [0, 1]": (Image.fromarray(g.astype(np.float32) / 255), luma, None),
        "F in 0..255": (Image.fromarray(g.astype(np.float32)), luma, None),
    }


PICTURES = _pictures()


@pytest.mark.parametrize("factor", [1, 2, 5])
@pytest.mark.parametrize("name", list(PICTURES))
def test_every_mode_is_its_luminance_composited_then_block_averaged(name, factor):
    im, luma, alpha = PICTURES[name]
    got = shrink.to_gray(im, factor)
    want = _reference(luma, alpha, factor)
    assert got.dtype == np.uint8 and got.shape == (-(-H // factor), -(-W // factor))
    assert np.abs(got.astype(float) - want).max() <= 1.01, name


@pytest.mark.parametrize("name", ["L", "RGBA", "F in [0, 1]"])
def test_tiles_do_not_show(name, monkeypatch):
    im = PICTURES[name][0]
    whole = shrink.to_gray(im, 3)
    monkeypatch.setattr(shrink, "TILE_PIXELS", 50)  # tiles of a few blocks, many per row
    np.testing.assert_array_equal(shrink.to_gray(im, 3), whole)


def test_nan_and_infinity_are_black_and_the_rest_scaled_by_the_finite_maximum():
    values = np.full((4, 4), 0.5, np.float32)
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf
    gray = shrink.to_gray(Image.fromarray(values))
    assert gray[0, :3].tolist() == [0, 0, 0] and gray[1, 1] == 128  # 0.5 of [0, 1]


def test_a_fully_transparent_picture_is_white():
    im = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    assert (shrink.to_gray(im, 4) == 255).all()


# -- limits checked from the header, before decoding ------------------------------------

def _png16_rgba(side: int) -> bytes:
    ok, data = cv2.imencode(".png", np.zeros((side, side, 4), np.uint16))
    assert ok
    return data.tobytes()


def test_sixteen_bit_rgba_over_the_sample_budget_is_refused_as_too_large(monkeypatch):
    monkeypatch.setattr(decode, "MAX_SAMPLE_BYTES", 8 * 100 * 100 - 1)
    with pytest.raises(ImageError, match=r"100x100 pixels of RGBA with 16 bits or more "
                                         r"per channel is too large") as caught:
        decode.load_image(io.BytesIO(_png16_rgba(100)))
    assert "corrupt" not in str(caught.value)
    # 8 bytes a pixel: the same budget lets 16-bit grey (2 bytes) through.
    grey = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), np.uint16)).save(grey, "PNG")
    grey.seek(0)
    assert decode.load_image(grey).shape == (100, 100)
