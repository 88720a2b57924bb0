"""Recognising a user's own handwriting: `mnist_xp.images` and the CLI's image inputs.

Digits are drawn with Pillow the way a person would write them (thick strokes, roughly
centred), saved in every supported format, and must come out of `to_mnist` shaped like
MNIST's digits (fitted to 20×20, centre of mass at (14, 14), white on black) and be
recognised by a model trained for a few epochs on the bundled subset. CLI tests run
``python -m mnist_xp`` in subprocesses, as tests/test_cli.py does, and hold the command
to the same rule: a bad input gets one line naming it, exit status 2, no traceback, and
nothing half-written.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_ok, assert_user_error, dot_files, run_cli, run_many

import mnist_xp
from mnist_xp import images
from mnist_xp.model_files import default_model_path
from mnist_xp.errors import ImageError
from mnist_xp.images import load_image, preprocess_file, read_digits_file, save_png, to_mnist

_NO_PILLOW = "Pillow is not installed (pip install 'mnist-xp[images]')"
Image = pytest.importorskip("PIL.Image", reason=_NO_PILLOW)
ImageDraw = pytest.importorskip("PIL.ImageDraw", reason=_NO_PILLOW)
ImageFile = pytest.importorskip("PIL.ImageFile", reason=_NO_PILLOW)

DIGITS = (0, 1, 7)


# -- drawing ----------------------------------------------------------------------------

def draw(digit: int, size: int = 200, *, ink: int = 0, paper: int = 255,
         pen: float = 0.09, scale: float = 1.0, offset=(0.0, 0.0)) -> Image.Image:
    """A greyscale picture of `digit` written with a round pen (width `pen` * size).

    `scale` shrinks the digit within the canvas; `offset` moves it by a fraction of
    the canvas (x, y).
    """
    im = Image.new("L", (size, size), paper)
    pen_px = max(1, round(size * pen * scale))

    def at(x, y):
        return (size / 2 + ((x - 0.5) * 0.6 * scale + offset[0]) * size,
                size / 2 + ((y - 0.5) * 0.6 * scale + offset[1]) * size)

    d = ImageDraw.Draw(im)
    if digit == 1:
        d.line([at(0.42, 0.14), at(0.55, 0.0), at(0.55, 1.0)], fill=ink, width=pen_px,
               joint="curve")
    elif digit == 7:
        d.line([at(0.15, 0.05), at(0.85, 0.05), at(0.4, 1.0)], fill=ink, width=pen_px,
               joint="curve")
    elif digit == 0:
        d.ellipse([at(0.2, 0.0), at(0.8, 1.0)], outline=ink, width=pen_px)
    else:
        raise AssertionError(digit)
    return im


def photo(digit: int, size: int = 300, seed: int = 0) -> np.ndarray:
    """`digit` in dark ink on paper lit unevenly, with sensor noise, through JPEG."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(draw(digit, size, ink=40, paper=250), dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 1 - 0.3 * xx - 0.15 * yy - 0.2 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    pixels = np.clip(pixels * light + rng.normal(0, 5, pixels.shape), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))


def specks(digit: int, size: int = 600) -> np.ndarray:
    """`digit` with dust: small dark marks near three corners, apart from the digit."""
    pixels = np.asarray(draw(digit, size, scale=0.7)).copy()
    for y, x in ((0.05, 0.05), (0.9, 0.08), (0.93, 0.9)):
        pixels[int(y * size):int(y * size) + 4, int(x * size):int(x * size) + 3] = 0
    return pixels


def transparent(digit: int, *, ink_rgb=(0, 0, 0), hidden_rgb=(0, 0, 0)) -> Image.Image:
    """`digit` as opaque ink on a fully transparent canvas, as drawing apps export it."""
    mask = draw(digit, ink=255, paper=0)
    im = Image.new("RGBA", mask.size, (*hidden_rgb, 0))
    im.paste(Image.new("RGBA", mask.size, (*ink_rgb, 255)), mask=mask)
    return im


def ink_box(x: np.ndarray) -> tuple[int, int]:
    """Height and width of the bounding box of the non-zero pixels."""
    rows, cols = np.nonzero(x.any(axis=1))[0], np.nonzero(x.any(axis=0))[0]
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre, counted from 0."""
    weights = x.astype(np.float64)
    rows, cols = np.indices(x.shape)
    return (float((weights * rows).sum() / weights.sum()),
            float((weights * cols).sum() / weights.sum()))


def assert_same_digit_image(a: np.ndarray, b: np.ndarray) -> None:
    """`a` and `b` equal within 5 grey levels, after at most a one-pixel shift.

    The centring by mass rounds to whole pixels, so a rounding difference upstream
    (255 - v and v round differently at halves) may move a digit by one pixel. The ink
    levels found for the two polarities differ by a few grey levels at a stroke's soft
    edge; slimming a broad stroke (an erosion) moves that edge inward, where area
    averaging no longer hides it.
    """
    best = min(int(np.abs(np.roll(a.astype(int), (dy, dx), axis=(0, 1)) - b).max())
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert best <= 5, f"the images differ by {best} grey levels at best"


def assert_mnist_like(x: np.ndarray) -> None:
    """Shape, dtype, white ink fitted to 20×20 and centred by mass, like MNIST."""
    assert x.shape == (28, 28) and x.dtype == np.uint8
    assert x.max() >= 250, "solid ink should be (nearly) white"
    height, width = ink_box(x)
    assert height <= 20 and width <= 20, (height, width)
    assert max(height, width) >= 18, (height, width)  # the longer side fills the box
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)
    # The background is black: the border of the field holds almost no ink.
    assert np.median(x) == 0


def save(im: Image.Image, path: Path, **kwargs) -> Path:
    im.save(path, **kwargs)
    return path


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A model trained for three epochs on the bundled subset, saved to a temporary file."""
    data = mnist_xp.load_mnist("bundled")
    clf = mnist_xp.MLPClassifier(epochs=3, random_state=0, device="cpu")
    clf.fit(data.x_train.reshape(-1, 784), data.y_train)
    path = tmp_path_factory.mktemp("model") / "m.npz"
    mnist_xp.save(clf, path)
    return path


@pytest.fixture(scope="session")
def model(model_file):
    return mnist_xp.load(model_file, device="cpu")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Drawn digits in every format: {name: (path, digit)}."""
    directory = tmp_path_factory.mktemp("pictures")
    files = {
        "zero.png": (draw(0), {}),
        "one.jpg": (draw(1), {"quality": 85}),
        "seven.bmp": (draw(7), {}),
        "zero.gif": (draw(0).convert("P"), {}),
        "one.tiff": (draw(1, ink=255, paper=0), {}),  # light on dark
        "SEVEN.PNG": (draw(7, 400, scale=0.6, offset=(0.2, -0.15)), {}),  # off-centre
        "seven.jpeg": (draw(7).convert("RGB"), {"quality": 90}),
        "one.tif": (draw(1, 40), {}),
    }
    out = {}
    for name, (im, kwargs) in files.items():
        out[name] = (save(im, directory / name, **kwargs), int(_DIGIT_OF[name.split(".")[0].lower()]))
    return out


_DIGIT_OF = {"zero": 0, "one": 1, "seven": 7}


# -- load_image -------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, kwargs", [
    (".png", {}), (".jpg", {"quality": 90}), (".jpeg", {"quality": 90}), (".bmp", {}),
    (".gif", {}), (".tif", {}), (".tiff", {"compression": "tiff_deflate"})])
def test_every_format_loads_as_uint8_greyscale(tmp_path, suffix, kwargs):
    path = save(draw(7, 120).convert("RGB"), tmp_path / f"seven{suffix}", **kwargs)
    gray = load_image(path)
    assert gray.shape == (120, 120) and gray.dtype == np.uint8
    assert gray[0, 0] >= 240 and gray.min() <= 15  # light paper, dark ink


def test_gif_gives_its_first_frame(tmp_path):
    first, second = draw(1, 100).convert("P"), Image.new("L", (100, 100), 255).convert("P")
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[second], duration=100)
    np.testing.assert_array_equal(load_image(path) < 128, np.asarray(draw(1, 100)) < 128)


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    wide = np.asarray(draw(0, 80), dtype=np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    np.testing.assert_array_equal(load_image(path), np.asarray(draw(0, 80)))


@pytest.mark.parametrize("ink_rgb, hidden_rgb", [
    ((0, 0, 0), (0, 0, 0)),          # black ink; black under the transparency too
    ((0, 0, 0), (255, 255, 255)),
    ((255, 255, 255), (255, 255, 255)),  # white ink on a transparent white canvas
    ((30, 60, 200), (0, 0, 0)),      # blue ink
])
def test_transparent_background_keeps_the_opaque_ink_visible(tmp_path, ink_rgb, hidden_rgb):
    path = save(transparent(7, ink_rgb=ink_rgb, hidden_rgb=hidden_rgb), tmp_path / "t.png")
    gray = load_image(path).astype(int)
    strokes = np.asarray(draw(7, ink=255, paper=0)) > 128
    assert abs(gray[strokes].mean() - gray[~strokes].mean()) > 100
    assert_mnist_like(preprocess_file(path))


def test_transparent_digit_preprocesses_like_the_opaque_one(tmp_path):
    path = save(transparent(1), tmp_path / "t.png")
    opaque = to_mnist(np.asarray(draw(1)))
    assert np.abs(preprocess_file(path).astype(int) - opaque).max() <= 2


def _bad_file(kind: str, directory: Path) -> tuple[Path, str]:
    """A bad image input of the given kind and a fragment its error must contain."""
    good = io.BytesIO()
    draw(7).save(good, "PNG")
    if kind == "random bytes":
        path = directory / "noise.png"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes())
        return path, "not an image"
    if kind == "truncated":
        path = directory / "cut.png"
        path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
        return path, "truncated"
    if kind == "empty":
        path = directory / "empty.jpg"
        path.write_bytes(b"")
        return path, "not an image"
    if kind == "text":
        path = directory / "notes.bmp"
        path.write_text("not a bitmap\n")
        return path, "not an image"
    if kind == "missing":
        return directory / "absent.png", "no such image file"
    if kind == "directory":
        path = directory / "folder.png"
        path.mkdir()
        return path, "directory"
    if kind == "blank":
        return save(Image.new("L", (60, 40), 255), directory / "blank.png"), "no ink found"
    raise AssertionError(kind)


BAD_KINDS = ("random bytes", "truncated", "empty", "text", "missing", "directory", "blank")


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_file_is_one_line_naming_it(tmp_path, kind):
    path, fragment = _bad_file(kind, tmp_path)
    with pytest.raises(ImageError) as caught:
        preprocess_file(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and fragment in message
    assert "\n" not in message


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = save(draw(1, 300), tmp_path / "big.png")
    decoded = []
    monkeypatch.setattr(images.decode, "MAX_PIXELS", 200 * 200)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageError, match=r"300x300 pixels is too large"):
        load_image(path)
    assert decoded == []


# -- to_mnist ---------------------------------------------------------------------------

CASES = {
    "dark on light": lambda d: np.asarray(draw(d)),
    "light on dark": lambda d: np.asarray(draw(d, ink=255, paper=0)),
    "grey on grey": lambda d: np.asarray(draw(d, ink=70, paper=180)),
    "off-centre": lambda d: np.asarray(draw(d, 300, scale=0.5, offset=(0.25, 0.2))),
    "tiny": lambda d: np.asarray(draw(d, 160).resize((12, 12), Image.Resampling.BOX)),
    "huge": lambda d: np.asarray(draw(d, 3000)),
    "thin pen": lambda d: np.asarray(draw(d, 600, pen=0.005)),
    "photo": lambda d: photo(d),
    "specks": specks,
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("digit", DIGITS)
def test_to_mnist_fits_20x20_and_centres_the_mass(case, digit):
    assert_mnist_like(to_mnist(CASES[case](digit)))


@pytest.mark.parametrize("seed", range(24))
def test_random_sizes_places_and_inks_come_out_mnist_like(seed):
    rng = np.random.default_rng(seed)
    scale = float(rng.uniform(0.4, 1.3))
    reach = max(0.0, (1 - 0.6 * scale) / 2 - 0.1)  # keeps the digit on the canvas
    ink, paper = sorted(int(v) for v in rng.choice(256, 2, replace=False))
    if paper - ink < 80:
        ink, paper = max(0, paper - 80), max(80, paper)
    if rng.random() < 0.5:
        ink, paper = paper, ink
    picture = np.asarray(draw(DIGITS[seed % 3], int(rng.integers(24, 700)), ink=ink,
                              paper=paper, pen=float(rng.uniform(0.03, 0.12)), scale=scale,
                              offset=tuple(rng.uniform(-reach, reach, 2))))
    x = to_mnist(picture)
    assert_mnist_like(x)
    assert_same_digit_image(to_mnist(255 - picture), x)


def test_stray_marks_apart_from_the_digit_are_ignored():
    clean = to_mnist(np.asarray(draw(7, 600, scale=0.7)))
    assert np.abs(to_mnist(specks(7)).astype(int) - clean).max() <= 8


def test_an_8x8_image_still_fills_the_box():
    tiny = np.zeros((8, 8), np.uint8)
    tiny[1:7, 4] = 255
    tiny[2, 3] = 255
    assert_mnist_like(to_mnist(tiny))


def test_auto_inversion_makes_polarity_irrelevant():
    dark_on_light = np.asarray(draw(7))
    assert_same_digit_image(to_mnist(dark_on_light), to_mnist(255 - dark_on_light))
    np.testing.assert_array_equal(to_mnist(dark_on_light), to_mnist(dark_on_light, "yes"))


def test_invert_no_on_dark_ink_gives_the_wrong_polarity():
    dark_on_light = np.asarray(draw(7, 100, scale=0.8))
    auto, wrong = to_mnist(dark_on_light), to_mnist(dark_on_light, invert="no")
    assert wrong.shape == (28, 28) and wrong.dtype == np.uint8
    # Taken as light ink, what is found is the paper between the strokes, not the 7:
    # it shares under half its ink with the right answer.
    a, b = auto > 128, wrong > 128
    assert (a & b).sum() < 0.5 * (a | b).sum()


def test_floats_and_booleans_are_accepted():
    dark = np.asarray(draw(0)) < 128
    expected = to_mnist(np.where(dark, 255, 0).astype(np.uint8))
    np.testing.assert_array_equal(to_mnist(dark), expected)
    np.testing.assert_array_equal(to_mnist(dark.astype(np.float32)), expected)


@pytest.mark.parametrize("blank", [
    np.full((30, 30), 255, np.uint8),
    np.zeros((30, 30), np.uint8),
    np.full((5, 7), 128, np.uint8),
    np.clip(np.random.default_rng(1).normal(200, 4, (200, 200)), 0, 255).astype(np.uint8),
], ids=["white", "black", "grey", "noise"])
def test_a_blank_image_has_no_ink(blank):
    with pytest.raises(ImageError, match="no ink found"):
        to_mnist(blank)


@pytest.mark.parametrize("args, match", [
    ((np.zeros((2, 3, 3), np.uint8),), "2-D"),
    ((np.zeros((0, 5), np.uint8),), "2-D"),
    ((np.full((4, 4), 2.0),), r"\[0, 1\]"),
    ((np.full((4, 4), 300, np.int32),), "0..255"),
    ((np.zeros((4, 4), np.uint8), "maybe"), "invert"),
])
def test_to_mnist_refuses_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        to_mnist(*args)


# -- save_png ---------------------------------------------------------------------------

def test_save_png_round_trips_and_enlarges(tmp_path):
    pixels = to_mnist(np.asarray(draw(1)))
    path = save_png(pixels, tmp_path / "one.png", scale=4)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (112, 112)
        np.testing.assert_array_equal(np.asarray(im)[::4, ::4], pixels)
    assert dot_files(tmp_path) == []


def test_save_png_into_a_missing_directory_creates_nothing(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        save_png(np.zeros((28, 28), np.uint8), tmp_path / "nowhere" / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(b"precious")

    def broken(self, fp, *args, **kwargs):
        fp.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(ImageError, match="No space left"):
        save_png(np.zeros((28, 28), np.uint8), path)
    assert path.read_bytes() == b"precious"
    assert dot_files(tmp_path) == []


# -- recognition ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("case", ["dark on light", "light on dark", "off-centre", "huge",
                                  "photo", "thin pen", "specks"])
@pytest.mark.parametrize("digit", DIGITS)
def test_drawn_digits_are_recognised(model, case, digit):
    x = to_mnist(CASES[case](digit)).reshape(1, 784)
    assert int(model.predict(x)[0]) == digit


@pytest.mark.slow
def test_wrong_polarity_is_not_recognised_as_well(model):
    dark_on_light = np.asarray(draw(7))
    right = model.predict_proba(to_mnist(dark_on_light).reshape(1, 784))[0][7]
    wrong = model.predict_proba(to_mnist(dark_on_light, "no").reshape(1, 784))[0][7]
    assert right > 0.9 and wrong < right


# -- the command line -------------------------------------------------------------------

LINE = re.compile(r"(.+): (\d) \((\d+\.\d)%\)")


def printed(stdout: str) -> dict[str, int]:
    """{input: digit} from predict's text output (top-1)."""
    out = {}
    for line in stdout.splitlines():
        m = LINE.fullmatch(line)
        assert m, f"unexpected line {line!r}"
        out[m.group(1)] = int(m.group(2))
    return out


@pytest.mark.slow
def test_predict_recognises_pictures_in_every_format(model_file, pictures, tmp_path):
    paths = [path for path, _ in pictures.values()]
    result = run_cli("predict", "--model", model_file, "--device", "cpu", *paths, cwd=tmp_path)
    assert_ok(result)
    assert result.stderr == ""
    assert printed(result.stdout) == {str(path): digit for path, digit in pictures.values()}


@pytest.fixture(scope="module")
def cli_runs(model_file, pictures, tmp_path_factory):
    """The CLI cases below, run side by side: {name: (CompletedProcess, context)}."""
    root = tmp_path_factory.mktemp("cli")
    zero, one, seven = (pictures[n][0] for n in ("zero.png", "one.jpg", "seven.bmp"))
    model = ["--model", model_file, "--device", "cpu"]
    jobs, context = {}, {}

    bad_dir = root / "bad"
    bad_dir.mkdir()
    bad = [_bad_file(kind, bad_dir) for kind in ("random bytes", "truncated", "blank",
                                                 "missing")]
    jobs["bad"] = (["predict", *model, zero, bad[0][0], bad[1][0], one, bad[2][0],
                    bad[3][0], seven], {"cwd": root})
    context["bad"] = {"bad": bad, "good": {str(zero): 0, str(one): 1, str(seven): 7}}

    folder = root / "folder"
    folder.mkdir()
    for name in ("b_seven.png", "a_zero.jpg", "c_one.GIF"):
        digit = _DIGIT_OF[name[2:].split(".")[0]]
        im = draw(digit)
        save(im.convert("P") if name.endswith("GIF") else im, folder / name)
    arrays = mnist_xp.load_mnist("bundled").x_test[:2]
    np.save(folder / "d_arrays.npy", arrays)
    (folder / "notes.txt").write_text("ignored\n")
    (folder / ".hidden.png").write_bytes(b"ignored: hidden")
    (folder / "sub").mkdir()
    empty = root / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here\n")
    jobs["dir"] = (["predict", *model, folder], {"cwd": root})
    jobs["dir+empty"] = (["predict", *model, empty, folder], {"cwd": root})
    context["dir"] = {"folder": folder, "empty": empty, "arrays": arrays}

    jobs["top3"] = (["predict", *model, "--top-k", 3, seven], {"cwd": root})
    jobs["json"] = (["predict", *model, "--json", "--top-k", 2, seven, folder / "d_arrays.npy"],
                    {"cwd": root})
    jobs["top11"] = (["predict", *model, "--top-k", 11, seven], {"cwd": root})
    jobs["invert bad"] = (["predict", *model, "--invert", "maybe", seven], {"cwd": root})
    inverted = save(draw(1), root / "one_dark.png")
    jobs["invert no"] = (["predict", *model, "--json", "--invert", "no", inverted],
                         {"cwd": root})
    jobs["invert auto"] = (["predict", *model, "--json", inverted], {"cwd": root})

    sniffed = root / "scan.dat"
    draw(7).save(sniffed, "PNG")
    jobs["sniffed"] = (["predict", *model, sniffed], {"cwd": root})

    fake = root / "fake"
    (fake / "PIL").mkdir(parents=True)
    (fake / "PIL" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'PIL'\", name='PIL')\n")
    npy = root / "digits.npy"
    np.save(npy, arrays)
    jobs["no pillow"] = (["predict", *model, seven, npy], {"cwd": root, "pythonpath": fake})
    jobs["no pillow preprocess"] = (["preprocess", seven, "-o", root / "np.png"],
                                    {"cwd": root, "pythonpath": fake})
    context["no pillow"] = {"npy": npy}

    out = root / "out"
    out.mkdir()
    jobs["preprocess png"] = (["preprocess", seven, "-o", out / "seen.png", "--scale", 3],
                              {"cwd": root})
    jobs["preprocess npy"] = (["preprocess", seven, "-o", out / "seen.npy"], {"cwd": root})
    jobs["preprocess missing dir"] = (["preprocess", seven, "-o", root / "nowhere" / "x.png"],
                                      {"cwd": root})
    kept = out / "kept.png"
    kept.write_bytes(b"the user's file")
    jobs["preprocess blank"] = (["preprocess", bad[2][0], "-o", kept], {"cwd": root})
    jobs["preprocess corrupt"] = (["preprocess", bad[0][0], "-o", kept], {"cwd": root})
    jobs["preprocess onto input"] = (["preprocess", zero, "-o", zero], {"cwd": root})
    jobs["preprocess bad suffix"] = (["preprocess", seven, "-o", out / "seen.jpg"],
                                     {"cwd": root})
    jobs["preprocess bad scale"] = (["preprocess", seven, "-o", out / "big.png", "--scale", 0],
                                    {"cwd": root})
    context["preprocess"] = {"out": out, "kept": kept, "seven": seven, "root": root,
                             "zero": (zero, zero.read_bytes())}

    jobs["default model"] = (["predict", "--device", "cpu", seven], {"cwd": root})
    results = run_many(jobs)
    return results, context


@pytest.mark.slow
def test_predict_reports_each_bad_picture_and_still_classifies_the_rest(cli_runs):
    results, context = cli_runs
    result, bad = results["bad"], context["bad"]["bad"]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(bad), result.stderr
    for line, (path, fragment) in zip(lines, bad):
        assert line.startswith(f"mnist-xp: error: {path}: ") and fragment in line, line
    assert printed(result.stdout) == context["bad"]["good"]


@pytest.mark.slow
def test_predict_a_directory_classifies_its_files_in_name_order(cli_runs):
    results, context = cli_runs
    result, folder = results["dir"], context["dir"]["folder"]
    assert_ok(result)
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    names = [line.split(": ")[0] for line in lines]
    assert names == [str(folder / "a_zero.jpg"), str(folder / "b_seven.png"),
                     str(folder / "c_one.GIF"), f"{folder / 'd_arrays.npy'}[0]",
                     f"{folder / 'd_arrays.npy'}[1]"]
    digits = [int(LINE.fullmatch(line).group(2)) for line in lines[:3]]
    assert digits == [0, 7, 1]


@pytest.mark.slow
def test_a_directory_without_pictures_is_an_error_for_that_input_only(cli_runs):
    results, context = cli_runs
    result, empty = results["dir+empty"], context["dir"]["empty"]
    assert_user_error(result, empty, "no image")
    assert len(result.stdout.splitlines()) == 5


@pytest.mark.slow
def test_top_k_lists_the_k_most_probable_digits(cli_runs):
    result = cli_runs[0]["top3"]
    assert_ok(result)
    (line,) = result.stdout.splitlines()
    m = re.fullmatch(r"(.+): (\d) \((\S+)%\), (\d) \((\S+)%\), (\d) \((\S+)%\)", line)
    assert m, line
    digits = [int(m.group(i)) for i in (2, 4, 6)]
    percents = [float(m.group(i)) for i in (3, 5, 7)]
    assert digits[0] == 7 and len(set(digits)) == 3
    assert percents == sorted(percents, reverse=True)


@pytest.mark.slow
def test_predict_json_describes_each_image(cli_runs, model):
    results, context = cli_runs
    result = results["json"]
    assert_ok(result)
    rows = json.loads(result.stdout)
    assert [row["index"] for row in rows] == [None, 0, 1]
    assert rows[0]["input"].endswith("seven.bmp") and rows[0]["prediction"] == 7
    arrays = context["dir"]["arrays"]
    expected = model.predict_proba(arrays.reshape(-1, 784))
    for row in rows:
        assert set(row) == {"input", "index", "prediction", "probability", "probabilities",
                            "probabilities_by_class", "top_k", "number", "digits"}
        # One digit: the top-level fields are that digit's, and "digits" holds it alone.
        assert row["number"] == str(row["prediction"])
        (digit,) = row["digits"]
        assert digit == {"prediction": row["prediction"], "probability": row["probability"],
                         "probabilities": row["probabilities"], "top_k": row["top_k"],
                         "box": digit["box"]}
        assert len(row["probabilities"]) == 10
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert row["probability"] == max(row["probabilities"])
        assert row["probabilities_by_class"] == {str(c): p for c, p in
                                                 enumerate(row["probabilities"])}
        assert len(row["top_k"]) == 2
        assert row["top_k"][0] == {"prediction": row["prediction"],
                                   "probability": row["probability"]}
        assert row["top_k"][1]["probability"] <= row["top_k"][0]["probability"]
    np.testing.assert_allclose([r["probabilities"] for r in rows[1:]], expected,
                               rtol=1e-5, atol=1e-7)
    top, left, bottom, right = rows[0]["digits"][0]["box"]  # where the 7 is in its picture
    with Image.open(rows[0]["input"]) as im:
        assert 0 <= top < bottom <= im.height and 0 <= left < right <= im.width
    assert [r["digits"][0]["box"] for r in rows[1:]] == [[0, 0, 28, 28]] * 2  # array rows


@pytest.mark.slow
def test_bad_predict_flags_are_one_line(cli_runs):
    results, _ = cli_runs
    assert_user_error(results["top11"], "--top-k 11", "at most 10")
    assert_user_error(results["invert bad"], "--invert", "maybe")


@pytest.mark.slow
def test_invert_no_is_obeyed_even_when_wrong(cli_runs):
    results, _ = cli_runs
    auto = json.loads(results["invert auto"].stdout)[0]
    assert auto["prediction"] == 1
    # Told the ink is light, a dark 1 on white paper has no light marks to read.
    no = results["invert no"]
    assert no.returncode == 2 and "one_dark.png: no ink found" in no.stderr
    assert json.loads(no.stdout) == []


@pytest.mark.slow
def test_a_picture_with_an_unknown_suffix_is_recognised_by_its_content(cli_runs):
    result = cli_runs[0]["sniffed"]
    assert_ok(result)
    assert list(printed(result.stdout).values()) == [7]


@pytest.mark.slow
def test_without_pillow_pictures_fail_in_one_line_and_arrays_still_work(cli_runs):
    results, context = cli_runs
    result = results["no pillow"]
    assert_user_error(result, "seven.bmp", "pip install 'mnist-xp[images]'")
    npy = context["no pillow"]["npy"]
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == [
        f"{npy}[0]", f"{npy}[1]"]
    assert_user_error(results["no pillow preprocess"], "pip install 'mnist-xp[images]'")


def test_preprocess_writes_the_28x28_image_as_png_and_npy(cli_runs):
    results, context = cli_runs
    out, seven = context["preprocess"]["out"], context["preprocess"]["seven"]
    assert_ok(results["preprocess png"])
    assert_ok(results["preprocess npy"])
    (digit,) = read_digits_file(seven)  # what predict gives the model
    expected = digit.image
    with Image.open(out / "seen.png") as im:
        assert im.format == "PNG" and im.size == (84, 84) and im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im)[::3, ::3], expected)
    saved = np.load(out / "seen.npy", allow_pickle=False)
    assert saved.dtype == np.uint8
    np.testing.assert_array_equal(saved, expected)
    assert_mnist_like(saved)
    assert dot_files(out) == []


def test_preprocess_refuses_a_missing_directory_and_creates_nothing(cli_runs):
    results, context = cli_runs
    root = context["preprocess"]["root"]
    assert_user_error(results["preprocess missing dir"], "-o", "nowhere", "does not exist")
    assert not (root / "nowhere").exists()


@pytest.mark.parametrize("case, fragments", [
    ("preprocess blank", ("blank.png", "no ink found")),
    ("preprocess corrupt", ("noise.png", "not an image")),
    ("preprocess onto input", ("-o", "input picture")),
    ("preprocess bad suffix", ("-o", "seen.jpg", ".png")),
    ("preprocess bad scale", ("--scale", "at least 1")),
])
def test_preprocess_mistakes_are_one_line_and_leave_files_alone(cli_runs, case, fragments):
    results, context = cli_runs
    assert_user_error(results[case], *fragments)
    assert context["preprocess"]["kept"].read_bytes() == b"the user's file"
    zero, original = context["preprocess"]["zero"]
    assert zero.read_bytes() == original
    assert not (context["preprocess"]["out"] / "seen.jpg").exists()
    assert dot_files(context["preprocess"]["out"]) == []


def test_predict_without_model_uses_the_installed_one(cli_runs):
    # the package ships a model (mnist_xp/models/default.npz, --preset best)
    assert default_model_path().is_file()
    result = cli_runs[0]["default model"]
    assert_ok(result)
    assert list(printed(result.stdout).values()) == [7]


# -- pictures of numbers ------------------------------------------------------------------
# The segmentation is `read_digits`'s job; here it is replaced by one that finds MNIST's
# first three test digits (7, 2, 1) in any picture, so that what predict and preprocess
# make of several digits is tested on its own. The command runs in-process (the
# replacement must reach it), with the model installed with mnist-xp.

@pytest.fixture
def number(monkeypatch):
    """read_digits made to find three digits in any picture: the Digits it returns."""
    from mnist_xp.images import digits as module

    x = mnist_xp.load_mnist("bundled").x_test[:3]
    found = [module.Digit(x[i], (5, 10 + 60 * i, 95, 60 + 60 * i)) for i in range(3)]
    monkeypatch.setattr(module, "read_digits", lambda gray, invert="auto", *, name="image", classify=None: found)
    return found


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``mnist-xp ARGS`` run in this process."""
    from mnist_xp.cli import main

    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_predict_reads_a_picture_of_a_number_digit_by_digit(number, capsys, tmp_path):
    picture = save(draw(7), tmp_path / "number.png")
    model = mnist_xp.load(default_model_path(), device="cpu")
    proba = model.predict_proba(np.stack([d.image.reshape(-1) for d in number]))
    best = proba.max(axis=1)
    assert proba.argmax(axis=1).tolist() == [7, 2, 1]

    status, out, err = run_in_process(capsys, "predict", "--device", "cpu", picture)
    assert (status, err) == (0, "")
    assert out == (f"{picture}: 721 (digits: 7 ({best[0]:.1%}), 2 ({best[1]:.1%}), "
                   f"1 ({best[2]:.1%}))\n")

    status, out, err = run_in_process(capsys, "predict", "--device", "cpu", "--json",
                                      "--top-k", 2, picture)
    assert (status, err) == (0, "")
    (row,) = json.loads(out)
    assert row["input"] == str(picture) and row["index"] is None
    assert row["prediction"] == row["number"] == "721"
    assert row["probability"] == pytest.approx(float(np.prod(best)), rel=1e-6)
    # A distribution over ten classes describes one digit: null for a number.
    assert row["probabilities"] is None and row["probabilities_by_class"] is None
    assert row["top_k"] is None
    for d, found, p in zip(row["digits"], number, proba):
        assert set(d) == {"prediction", "probability", "probabilities", "top_k", "box"}
        assert d["box"] == list(found.box)
        assert d["prediction"] == int(p.argmax())
        np.testing.assert_allclose(d["probabilities"], p, rtol=1e-6)
        assert [t["prediction"] for t in d["top_k"]] == np.argsort(-p)[:2].tolist()
        assert d["top_k"][0]["probability"] == d["probability"]


def test_preprocess_writes_the_digits_of_a_number_side_by_side(number, capsys, tmp_path):
    picture = save(draw(7), tmp_path / "number.png")
    strip = np.hstack([d.image for d in number])

    status, out, err = run_in_process(capsys, "preprocess", picture, "-o",
                                      tmp_path / "seen.png", "--scale", 2)
    assert (status, err) == (0, "")
    assert out == (f"wrote {tmp_path / 'seen.png'} (168x56): the 3 28x28 images the model "
                   f"reads for {picture}, left to right\n")
    with Image.open(tmp_path / "seen.png") as im:
        assert im.size == (168, 56)
        np.testing.assert_array_equal(np.asarray(im)[::2, ::2], strip)

    status, out, err = run_in_process(capsys, "preprocess", picture, "-o",
                                      tmp_path / "seen.npy")
    assert (status, err) == (0, "")
    saved = np.load(tmp_path / "seen.npy", allow_pickle=False)
    assert saved.shape == (3, 28, 28) and saved.dtype == np.uint8
    np.testing.assert_array_equal(np.hstack(list(saved)), strip)

    # What preprocess wrote, predict reads back as the same three digits.
    status, out, err = run_in_process(capsys, "predict", "--device", "cpu", "--json",
                                      tmp_path / "seen.npy")
    assert (status, err) == (0, "")
    rows = json.loads(out)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert "".join(r["number"] for r in rows) == "721"
    assert all(r["digits"][0]["box"] == [0, 0, 28, 28] for r in rows)
