"""Fuzz harness: `mnist-xp serve`'s handling of one connection's raw bytes.

The bytes are fed, as a client would send them and then hang up, to a
`asyncio.StreamReader` that `Server.serve_stream` reads requests from: the request
parser, framing (Content-Length, pipelining, refusals, lingering), routing and the JSON
pixel reader all run in-process, without sockets. Pictures are answered by a stand-in
(a fixed digit) after the real lane choice from their header: the picture decoder has
its own harness (fuzz_picture.py), and a picture that takes seconds to read would look
like a hang here.

Invariants (a failure raises AssertionError): `serve_stream` returns, without an
exception, within `_DEADLINE` seconds; what it wrote is a sequence of whole HTTP/1.1
responses, none of them a 500; every 4xx/503 carries a JSON ``{"error": ...}`` body
(unless it answers HEAD), and a 503 that says to retry says when (``Retry-After``);
nothing follows a ``Connection: close`` response, nor a half-close (``write_eof``,
sent after a refusal that leaves the body unread), which only follows such a response.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from concurrent.futures import Executor, Future

import numpy as np

from mnist_xp.web.http import MAX_HEAD
from mnist_xp.web.pictures import PictureLanes
from mnist_xp.web.server import Server

# Seconds one input may take; with the reader at EOF nothing should ever wait.
_DEADLINE = 10.0

_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")
_LENGTH = re.compile(rb"\r\nContent-Length: (\d+)\r\n")

_STATE: dict = {}


class _Inline(Executor):
    """An executor that runs each call at once, in the caller's thread."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed over, as a pool would
            future.set_exception(exc)
        return future


def _stand_in_picture(body: bytes, n_features: int):
    """A fixed digit (a vertical bar) for any picture: the decoder is fuzzed elsewhere."""
    row = np.zeros((28, 28), np.uint8)
    row[4:24, 12:16] = 255
    return row.reshape(1, -1), [[0, 0, 28, 28]]


def _server() -> tuple[Server, asyncio.AbstractEventLoop]:
    """The server under test and its loop, made once per process."""
    if not _STATE:
        from mnist_xp.model_files import default_model_path, load

        model = load(default_model_path(), device="cpu")
        lanes = PictureLanes(pools=(_Inline(), _Inline()), read=_stand_in_picture)
        sock = socket.socket()  # never bound: serve_stream needs no listening socket
        server = Server(model, sock, device="cpu", model_name="default.npz", metadata=None,
                        pictures=lanes)
        _STATE["server"], _STATE["loop"] = server, asyncio.new_event_loop()
    return _STATE["server"], _STATE["loop"]


class _Writer:
    """Collects what the server writes; the parts of a StreamWriter it uses."""

    def __init__(self):
        self.data = bytearray()
        self.closed = False
        self.eof = False
        self.transport = self

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        assert not self.eof, "write after write_eof"
        self.data += data

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        assert not self.closed, "write_eof after close"
        last = [m.start() for m in _STATUS.finditer(self.data)][-1:] or [0]
        assert self.data.find(b"\r\nConnection: close\r\n", last[0]) >= 0, \
            "write_eof after an answer that keeps the connection open"
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return default


def _check_responses(out: bytes) -> None:
    """`out` is whole responses, none a 500, errors in JSON, nothing after a close."""
    pos = 0
    while pos < len(out):
        m = _STATUS.match(out, pos)
        assert m, f"not a response at byte {pos}: {out[pos:pos + 80]!r}"
        end = out.find(b"\r\n\r\n", pos)
        assert end >= 0, f"response head without its end: {out[pos:pos + 200]!r}"
        head = out[pos:end + 2]
        status = int(m.group(1))
        assert status != 500, f"a 500: {out[pos:pos + 400]!r}"
        length = _LENGTH.search(head)
        assert length, f"no Content-Length: {head!r}"
        body_at = end + 4
        # An answer to HEAD has the length but not the body; bodies (JSON, HTML) never
        # start like a status line, so a response or the end next means HEAD's.
        if body_at == len(out) or _STATUS.match(out, body_at):
            body = None
            pos = body_at
        else:
            n = int(length.group(1))
            body = out[body_at:body_at + n]
            assert len(body) == n, f"body shorter than its Content-Length: {head!r}"
            pos = body_at + n
        if status >= 400 and body is not None:
            answer = json.loads(body)
            assert isinstance(answer, dict) and answer.get("error"), body[:200]
        if status == 503 and body is not None and b"retry" in body:  # a full queue
            assert b"\r\nRetry-After: " in head, head
        if b"\r\nConnection: close\r\n" in head:
            assert pos == len(out), f"a response after Connection: close: {out[pos:pos + 80]!r}"


def one_input(data: bytes) -> None:
    """Serve `data` as one connection's bytes (then EOF); raise only on a bug."""
    server, loop = _server()

    async def serve() -> bytes:
        reader = asyncio.StreamReader(limit=MAX_HEAD)
        reader.feed_data(data)
        reader.feed_eof()
        writer = _Writer()
        await asyncio.wait_for(server.serve_stream(reader, writer), _DEADLINE)
        assert writer.closed, "the connection was not closed"
        return bytes(writer.data)

    try:
        out = loop.run_until_complete(serve())
    except asyncio.TimeoutError:
        raise AssertionError(f"no end within {_DEADLINE} s: a hang") from None
    _check_responses(out)


def _request(method: str, target: str, body: bytes = b"", headers: str = "",
             version: str = "HTTP/1.1", length: bool = True) -> bytes:
    """Raw request bytes."""
    cl = f"Content-Length: {len(body)}\r\n" if length and (body or method == "POST") else ""
    return (f"{method} {target} {version}\r\nHost: 127.0.0.1\r\n{headers}{cl}\r\n").encode() + body


def _pictures() -> list[bytes]:
    """Small pictures of a drawn stroke (PNG, JPEG, GIF), or a bare PNG signature
    without Pillow."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return [b"\x89PNG\r\n\x1a\n" + bytes(32)]
    im = Image.new("L", (56, 56), 255)
    ImageDraw.Draw(im).line([(28, 6), (28, 50)], fill=0, width=5)
    out = []
    for kind in ("PNG", "JPEG", "GIF"):
        buf = io.BytesIO()
        im.save(buf, format=kind)
        out.append(buf.getvalue())
    return out


def seeds() -> list[bytes]:
    """Generated requests: pages, JSON and PNG predictions, pipelining, bad framing."""
    digit = [0] * 784
    for i in range(4, 24):
        digit[i * 28 + 13] = digit[i * 28 + 14] = 255
    array = json.dumps(digit).encode()
    png, *others = _pictures()
    json_type = "Content-Type: application/json\r\n"
    good = [
        _request("GET", "/"),
        _request("HEAD", "/"),
        _request("GET", "/api/health"),
        _request("GET", "/index.html?x=1", headers="Connection: keep-alive\r\n",
                 version="HTTP/1.0"),
        _request("POST", "/api/predict", array, json_type),
        _request("POST", "/api/predict", b'{"pixels": ' + array + b"}", json_type),
        _request("POST", "/api/predict", png, "Content-Type: image/png\r\n"),
        _request("POST", "/api/predict", b"[1, 2,", json_type),
        _request("POST", "/api/predict", b"[" + b"0," * 783 + b"NaN]", json_type),
    ]
    good += [_request("POST", "/api/predict", picture) for picture in others]
    pipelined = [good[2] + good[4] + good[1] + good[6],
                 good[2] + _request("GET", "/", headers="Connection: close\r\n") + good[2]]
    bad = [
        _request("POST", "/api/predict", b"5\r\n[1,2]\r\n0\r\n\r\n",
                 "Transfer-Encoding: chunked\r\n", length=False),
        _request("POST", "/api/predict", b"[1]", "Content-Length: \xb2\r\n".replace(
            "\xb2", "\u00b2"), length=False),
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n[1]",
        _request("GET", "/api/health", headers="Content-Length: 1\r\nContent-Length: 0\r\n",
                 length=False),
        _request("POST", "/api/predict", b"[1]", "Content-Length: 3, 3\r\n", length=False),
        _request("POST", "/api/predict", b"[1]", "Content-Length : 3\r\n", length=False),
        _request("GET", "/", headers="X-A: 1\r\n folded\r\n"),
        _request("POST", "/api/predict", b"", "Content-Length: 99999999999\r\n", length=False),
        _request("DELETE", "/api/predict"),
        _request("GET", "/nope/../../etc/passwd"),
        _request("GET", "/", version="HTTP/2.0"),
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # TLS hello bytes
        _request("POST", "/api/predict", array[:100], json_type, length=False)
        .replace(b"\r\n\r\n", f"\r\nContent-Length: {len(array)}\r\n\r\n".encode(), 1),
        _request("GET", "/", headers="Expect: 100-continue\r\n"),
        # Refused with 400 (RFC 9110 5.5, RFC 9112 2.2, 3.2): control characters in a
        # field value, lines ending in a bare LF, HTTP/1.1 without one Host.
        _request("GET", "/api/health", headers="X-A: a\nTransfer-Encoding: chunked\r\n"),
        _request("GET", "/api/health", headers="X-A: a\rContent-Length: 5\r\n"),
        _request("GET", "/api/health", headers="X-A: a\x00b\r\n"),
        _request("GET", "/api/health", headers="Connection: close\r\n").replace(b"\r\n", b"\n"),
        b"GET /api/health HTTP/1.1\r\n\r\n",
        _request("GET", "/api/health", headers="Host: y\r\n"),
    ]
    return good + pipelined + bad
