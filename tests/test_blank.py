"""Blank input is refused the same way everywhere (issue 13, item 3).

The inputs in tests/data/cases/blank/ were once answered with a digit ("5" at 30%), or
refused with a message starting with a Python object repr. They are 784 zeros as JSON
(plain and ``{"pixels": ...}``), a single dot, a very faint smudge, a zero ``.npy``, and
white and transparent PNGs. Each goes through the library, ``mnist-xp predict`` and
``mnist-xp serve``. Each must be refused by the one "no ink" rule
(`mnist_xp.images.check_ink`) with the one message, `blank_error`'s, which names the
input: a file, ``file[i]`` for a row of an array, ``image``, or ``request body``.
Nothing blank may be answered with a digit.
"""

from __future__ import annotations

import http.client
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers_serve import running_server
from test_cli import run_cli

import mnist_xp
from mnist_xp import BlankImageError
from mnist_xp.data import write_idx
from mnist_xp.images import check_ink, is_blank, load_image, read_digits, read_digits_file
from mnist_xp.images.blank import blank_error

pytest.importorskip("PIL", reason="Pillow is needed to decode the blank pictures")

TIMEOUT = 60  # seconds; a safety net against a hung server, never asserted on

CASES = Path(__file__).parent / "data" / "cases" / "blank"
PICTURES = ("blank_white.png", "blank_transparent.png")
ARRAYS = ("blank.json", "blank_obj.json", "single_dot.json", "very_faint.json", "zeros.npy")


def message(name: str) -> str:
    """The one refusal of a blank input called `name`."""
    return str(blank_error(name))


def pixels(name: str) -> np.ndarray:
    """The (28, 28) image an array case holds, read as serve reads a JSON body."""
    path = CASES / name
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).reshape(28, 28)
    value = json.loads(path.read_text())
    x = np.array(value["pixels"] if isinstance(value, dict) else value, dtype=np.float64)
    if x.max() <= 1:
        x = x * 255  # floats in [0, 1]
    return np.rint(x).astype(np.uint8).reshape(28, 28)


def assert_no_repr(text: str) -> None:
    assert "object at 0x" not in text and "<_io." not in text, text


def test_the_cases_are_all_here():
    assert sorted(p.name for p in CASES.iterdir() if p.suffix != ".md") == sorted(
        PICTURES + ARRAYS)


# -- the library ---------------------------------------------------------------------------

def test_the_message_names_the_input_and_says_what_to_do():
    text = message("photo.npy[3]")
    assert text.startswith("photo.npy[3]: no ink found: ")
    assert "fewer than 10 of the 784 pixels" in text and "write the digit" in text
    assert isinstance(blank_error("x"), BlankImageError)
    assert isinstance(blank_error("x"), mnist_xp.ImageError)


@pytest.mark.parametrize("name", ARRAYS)
def test_every_blank_array_is_blank_by_the_one_rule(name):
    x = pixels(name)
    assert is_blank(x).tolist() == [True]
    assert is_blank(x.reshape(784)).tolist() == [True]
    assert is_blank(x.reshape(1, 784)).tolist() == [True]
    assert is_blank(x.astype(np.float32) / 255).tolist() == [True]
    with pytest.raises(BlankImageError) as caught:
        check_ink(x, "drawing")
    assert str(caught.value) == message("drawing")


def test_is_blank_judges_each_row():
    images = np.zeros((784, 784), np.uint8)  # 784 images of 784 pixels, not one image
    images[::2, 300:330] = 255
    assert is_blank(images).tolist() == [False, True] * 392
    assert is_blank(images.reshape(784, 28, 28)).tolist() == [False, True] * 392
    with pytest.raises(BlankImageError) as caught:
        check_ink(images, "many.npy")
    assert str(caught.value) == message("many.npy[1]")  # the first blank one


def test_no_mnist_digit_is_blank():
    data = mnist_xp.load_mnist("bundled")
    assert not is_blank(data.x_train).any()
    assert not is_blank(data.x_test).any()


@pytest.mark.parametrize("name", PICTURES)
def test_every_blank_picture_is_refused_by_read_digits_with_the_one_message(name):
    path = CASES / name
    with pytest.raises(BlankImageError) as caught:
        read_digits_file(path)
    assert str(caught.value) == message(str(path))
    with pytest.raises(BlankImageError) as caught:
        read_digits_file(str(path))
    assert str(caught.value) == message(str(path))
    # A file object is named by its ``name``, else "image": never by its repr.
    with pytest.raises(BlankImageError) as caught:
        read_digits_file(io.BytesIO(path.read_bytes()))
    assert str(caught.value) == message("image")
    upload = io.BytesIO(path.read_bytes())
    upload.name = "request body"
    with pytest.raises(BlankImageError) as caught:
        read_digits_file(upload)
    assert str(caught.value) == message("request body")
    gray = load_image(path)
    for kwargs, named in (({}, "image"), ({"name": "scan 1"}, "scan 1")):
        with pytest.raises(BlankImageError) as caught:
            read_digits(gray, **kwargs)
        assert str(caught.value) == message(named)


@pytest.mark.parametrize("name", PICTURES)
def test_preprocess_file_refuses_a_blank_picture_like_read_digits(name):
    path = CASES / name
    with pytest.raises(BlankImageError) as caught:
        mnist_xp.images.preprocess_file(io.BytesIO(path.read_bytes()))
    assert_no_repr(str(caught.value))
    assert str(caught.value) == message("image")


# -- mnist-xp predict ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory):
    """Every blank case as a predict input, with good rows around blank ones in arrays.

    Returns (inputs, expected stderr lines, expected answered names).
    """
    d = tmp_path_factory.mktemp("blank-predict")
    good = mnist_xp.load_mnist("bundled").x_test[:3]
    inputs, errors, answered = [], [], []
    for name in PICTURES:
        inputs.append(CASES / name)
        errors.append(message(str(CASES / name)))
    for name in ARRAYS:
        if name.endswith(".npy"):
            path = CASES / name  # as it was given: (28, 28)
        else:
            path = d / (Path(name).stem + ".npy")
            np.save(path, pixels(name))
        inputs.append(path)
        errors.append(message(f"{path}[0]"))
    faint = d / "very_faint_floats.npy"  # the smudge as floats in [0, 1], as it was sent
    np.save(faint, pixels("very_faint.json").astype(np.float32) / 255)
    inputs.append(faint)
    errors.append(message(f"{faint}[0]"))
    # Arrays of several rows: the blank rows are refused, the others still answered.
    mixed = d / "mixed.npy"
    np.save(mixed, np.stack([good[0], pixels("single_dot.json"), good[1], pixels("blank.json")]))
    idx = d / "mixed-idx3-ubyte"
    write_idx(idx, np.stack([pixels("zeros.npy"), good[2]]))
    inputs += [mixed, idx]
    errors += [message(f"{mixed}[1]"), message(f"{mixed}[3]"), message(f"{idx}[0]")]
    answered += [f"{mixed}[0]", f"{mixed}[2]", f"{idx}[1]"]
    return d, inputs, errors, answered


@pytest.mark.parametrize("as_json", [False, True])
def test_predict_refuses_every_blank_input_and_row_with_the_one_message(predict_inputs,
                                                                         as_json):
    d, inputs, errors, answered = predict_inputs
    result = run_cli("predict", "--device", "cpu", *(["--json"] if as_json else []), *inputs,
                     cwd=d)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"mnist-xp: error: {e}" for e in errors]
    assert_no_repr(result.stderr)
    if as_json:
        rows = json.loads(result.stdout)
        shown = [f"{r['input']}[{r['index']}]" for r in rows]
        assert all(isinstance(r["prediction"], int) for r in rows)
    else:
        shown = [line.split(": ")[0] for line in result.stdout.splitlines()]
    assert shown == answered


def test_preprocess_refuses_a_blank_picture_with_the_one_message(tmp_path):
    path = CASES / "blank_transparent.png"
    result = run_cli("preprocess", path, "-o", tmp_path / "seen.png", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"mnist-xp: error: {message(str(path))}\n"
    assert list(tmp_path.iterdir()) == []


# -- mnist-xp serve --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


def post(server, body: bytes):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/api/predict", body)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _bodies():
    """(id, body) for every blank case in every form serve takes."""
    for name in PICTURES + ARRAYS:
        if name.endswith(".npy"):
            x = np.load(CASES / name).reshape(-1).tolist()
            yield f"{name} as JSON", json.dumps(x).encode()
            yield f"{name} as pixels", json.dumps({"pixels": x}).encode()
        else:
            yield name, (CASES / name).read_bytes()
    yield "single dot as pixels", json.dumps({"pixels": pixels("single_dot.json")
                                                .reshape(-1).tolist()}).encode()


BODIES = dict(_bodies())


@pytest.mark.parametrize("name", sorted(BODIES))
def test_serve_refuses_every_blank_body_with_422_and_the_one_message(server, name):
    status, answer = post(server, BODIES[name])
    assert status == 422, answer
    assert answer == {"error": message("request body")}


def test_serve_still_answers_a_digit_after_blank_bodies(server):
    x = mnist_xp.load_mnist("bundled").x_test[0]
    status, answer = post(server, json.dumps(x.reshape(-1).tolist()).encode())
    assert status == 200 and answer["digit"] == 7


# -- the other end: nearly all ink --------------------------------------------------------

def test_an_image_nearly_all_ink_is_not_a_digit():
    from mnist_xp.images import is_all_ink
    from mnist_xp.errors import ImageError

    full = np.full((28, 28), 255, np.uint8)
    assert is_all_ink(full).tolist() == [True]
    assert not is_all_ink(mnist_xp.load_mnist("bundled").x_test[:1000]).any()
    with pytest.raises(ImageError, match=r"^image: not a digit: nearly all of the image is ink"):
        check_ink(full)


def test_predict_and_serve_refuse_an_all_ink_array(tmp_path, server):
    digit = mnist_xp.load_mnist("bundled").x_test[0]
    np.save(tmp_path / "rows.npy", np.stack([np.full((28, 28), 255, np.uint8), digit]))
    result = run_cli("predict", "--device", "cpu", tmp_path / "rows.npy", cwd=tmp_path)
    assert result.returncode == 2
    assert "rows.npy[0]: not a digit: nearly all of the image is ink" in result.stderr
    assert "rows.npy[1]: 7" in result.stdout
    status, answer = post(server, json.dumps([255] * 784).encode())
    assert status == 422 and answer["error"].startswith("request body: not a digit")
