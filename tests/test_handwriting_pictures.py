"""The generator of handwriting pictures (tests/handwriting_pictures.py) itself.

What the pipeline makes of these pictures is tested elsewhere; here: the pictures are
deterministic, decodable, of the promised format, mode and size, and labelled right.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mnist_xp.images import load_image

pytest.importorskip("PIL", reason="the pictures are encoded with Pillow")
pytest.importorskip("cv2", reason="the pictures are rendered with OpenCV")
import handwriting_pictures as hp  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return hp.load_test_digits()


@pytest.fixture(scope="module")
def sample(digits):
    """Two pictures of every kind, seed 0: {kind: [(name, Picture), ...]}."""
    out = {}
    for name, kind, pic in hp.iter_pictures(per_kind=2, seed=0, digits=digits):
        out.setdefault(kind, []).append((name, pic))
    return out


def _open(pic):
    im = Image.open(io.BytesIO(pic.data))
    im.load()
    return im


def test_the_digits_are_the_mnist_test_set(digits):
    images, labels = digits
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_every_kind_is_generated(sample):
    assert list(sample) == list(hp.KINDS)
    assert all(len(v) == 2 for v in sample.values())
    assert set(hp.FORMATS) == set(hp.KINDS)


def test_same_seed_same_bytes_other_seed_other_bytes(digits):
    kinds = ("clean", "desk2", "number3", "transparent", "pencil")
    first = list(hp.iter_pictures(2, seed=7, kinds=kinds, digits=digits))
    again = list(hp.iter_pictures(2, seed=7, kinds=kinds, digits=digits))
    other = list(hp.iter_pictures(2, seed=8, kinds=kinds, digits=digits))
    assert first == again
    assert all(a[2].data != b[2].data for a, b in zip(first, other))


def test_a_picture_does_not_depend_on_what_else_is_asked_for(digits):
    alone = list(hp.iter_pictures(1, seed=5, kinds=("lined",), digits=digits))
    among = list(hp.iter_pictures(3, seed=5, kinds=("clean", "lined"), digits=digits))
    assert alone[0] == among[3]
    rng = hp.picture_rng(5, "lined", 0)
    assert hp.make_picture("lined", rng, digits) == alone[0][2]


def test_pictures_decode_to_the_promised_format_mode_and_size(sample):
    for kind, pics in sample.items():
        fmt, mode = hp.FORMATS[kind]
        for name, pic in pics:
            im = _open(pic)
            assert (im.format, im.mode) == (fmt, mode), name
            assert name.startswith(f"{kind}-") and name.endswith(pic.suffix)
            assert pic.suffix == {"PNG": ".png", "JPEG": ".jpg"}[fmt]
            w, h = im.size
            if kind == "clean":
                assert (w, h) == (28, 28)
            elif kind == "tiny":
                assert (w, h) == hp.TINY_SIZE
            elif kind == "transparent":
                assert 200 <= min(w, h) and max(w, h) < 600
            elif kind == "cropped":
                assert 20 <= max(w, h) <= 220
            elif kind in hp.NUMBER_KINDS:
                assert 300 <= min(w, h) and max(w, h) <= 2500, (name, w, h)
            else:
                assert 450 <= min(w, h) and max(w, h) <= 1000, (name, w, h)
            gray = load_image(io.BytesIO(pic.data))  # the package's own decoder reads it
            assert gray.shape == (h, w) and gray.dtype == np.uint8


def test_labels_are_the_test_labels_of_the_digits_drawn(sample, digits):
    _, labels = digits
    for kind, pics in sample.items():
        n = int(kind[6:]) if kind in hp.NUMBER_KINDS else 1
        for name, pic in pics:
            assert len(pic.label) == len(pic.indices) == n, name
            assert pic.label == "".join(str(labels[i]) for i in pic.indices)


def test_the_clean_picture_is_the_mnist_digit(sample, digits):
    images, _ = digits
    for _, pic in sample["clean"]:
        assert np.array_equal(np.asarray(_open(pic)), images[pic.indices[0]])


def test_photos_show_dark_ink_on_lighter_paper(sample):
    for kind in ("desk1", "lined", "shadow", "blue", "pencil", "jpeg", "tiny", "number4"):
        for name, pic in sample[kind]:
            gray = load_image(io.BytesIO(pic.data)).astype(float)
            assert np.percentile(gray, 50) - gray.min() > 40, name


def test_transparent_has_opaque_ink_on_a_transparent_background(sample):
    for name, pic in sample["transparent"]:
        alpha = np.asarray(_open(pic))[..., 3]
        assert alpha.max() == 255, name
        assert np.mean(alpha == 0) > 0.5, name  # mostly fully transparent


def test_cropped_ink_touches_all_four_edges(sample):
    for name, pic in sample["cropped"]:
        ink = np.asarray(_open(pic)) < 128
        assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any(), name
        assert np.median(np.asarray(_open(pic))) > 200  # dark on white


def test_restroke_draws_the_width_asked_for(digits):
    cov = hp.ink_map(digits[0][0], 150)
    for width in (3.0, 12.0, 30.0):
        assert abs(hp._stroke_width(hp.restroke(cov, width)) - width) < 0.25 * width + 1


def test_drawing_and_phone_photo(digits):
    d = digits[0][0]
    dark = hp.drawing(d, 280)
    light = hp.drawing(d, 280, dark_ink=False)
    assert dark.shape == (280, 280) and dark.dtype == np.uint8
    assert np.array_equal(light, 255 - dark)
    assert np.median(dark) == 255 and dark.min() == 0
    rgb, jpeg = hp.phone_photo(np.random.default_rng(0), d, size=(400, 300))
    assert rgb.shape == (300, 400, 3)
    assert _open(hp.Picture(jpeg, ".jpg", "7", (0,))).format == "JPEG"


def test_command_line_writes_the_files_and_labels(tmp_path, capsys):
    assert hp.main(["--out", str(tmp_path), "--per-kind", "1", "--per-number-kind", "2",
                    "--seed", "3", "--kinds", "clean", "number2", "tiny",
                    "--tiny-size", "640x480"]) == 0
    meta = json.loads((tmp_path / "labels.json").read_text())
    files = [p["file"] for p in meta["pictures"]]
    assert files == ["clean-000.png", "number2-000.jpg", "number2-001.jpg", "tiny-000.jpg"]
    assert meta["seed"] == 3 and meta["tiny_size"] == [640, 480]
    for p in meta["pictures"]:
        assert (tmp_path / p["file"]).is_file()
        assert len(p["label"]) == len(p["test_indices"])
    assert Image.open(tmp_path / "tiny-000.jpg").size == (640, 480)
    assert "wrote 4 pictures" in capsys.readouterr().out
