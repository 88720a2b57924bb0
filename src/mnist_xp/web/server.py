"""``mnist-xp serve``: a page to draw a digit (or a number) on, and a small JSON API behind it.

Built on the standard library's asyncio (HTTP/1.1 with keep-alive, one event loop):
one page and two JSON endpoints need no framework, so the server adds no dependency
beyond Pillow, which decoding uploaded pictures needs anyway. (`http.server`'s
thread-per-connection server was tried first: with 32 clients its threads spent the
machine's two cores handing the GIL around, at about 1,000 answers/s; one loop does
several times that.)

Endpoints
---------
``GET /``
    The page (``mnist_xp/web/``, package data read once at start-up; requests never
    touch the file system).
``GET /api/health``
    ``{"status": "ok", "device": ..., "model": {...metadata...}, ...}``.
``POST /api/predict``
    A PNG/JPEG (or other Pillow-readable) image body, read exactly as ``mnist-xp
    predict`` reads a picture (`mnist_xp.images.read_digits`: one digit, or each digit
    of a number, left to right), or a JSON array of 784 pixel values (0-255, white ink
    on black; or floats in [0, 1] when every value is at most 1), or
    ``{"pixels": [...]}``, which is one 28x28 digit used as it is. Answers::

        {"digit", "probability", "probabilities", "classes", "number", "image",
         "digits": [{"digit", "probability", "probabilities", "box", "image"}, ...]}

    ``digits`` has one entry per digit, left to right: its class, its probability, all
    its class probabilities (in the order of ``classes``), its ``box`` ``[top, left,
    bottom, right]`` in the decoded picture's pixels (``[0, 0, 28, 28]`` for a JSON
    array) and ``image``, the 784 uint8 pixels (row-major 28x28) the model saw for it.
    ``number`` is the digits' classes joined, always a string ("7", "2026").

    For one digit the top-level fields are that digit's, as they were before numbers
    were read: ``digit`` its class, ``image`` its 784 pixels. For several digits,
    ``digit`` is the number (the same string as ``number``), ``probability`` the
    product of the digits' probabilities (the chance that all are right, if their
    errors are independent and the segmentation is right), and ``probabilities`` and
    ``image`` are null: they describe one digit, and each digit's are in ``digits``.
    A client written for single digits thus gets a clear null rather than part of
    the answer.

Every error is a JSON object ``{"error": "..."}`` with a 4xx status (a 500, still JSON
and without a traceback, only for a bug). Bodies are capped at `MAX_BODY` bytes and
images at `mnist_xp.images.MAX_PIXELS` pixels before their pixels are decoded. A
blank input, in any form (a blank or transparent picture, 784 zeros, a lone dot, a
faint smudge), is refused by the one "no ink" rule (`mnist_xp.images.check_ink`) with
422 and the same message, which names the input "request body".

Concurrent predictions are batched: the digits of all requests parsed in one loop
iteration (every digit of a picture of a number among them) go through one
``predict_proba`` call. On a GPU that turns many tiny kernel launches into one; on the
CPU it amortises the per-call overhead. Pictures are read (decoded, normalised, cut into
digits) in two processes, started by a fork server when the first picture arrives, so
that they use both cores (threads would take turns on one interpreter lock) and the
loop keeps answering meanwhile; each holds a CPU copy of the model, to decide where
digits that touch are cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import socket
import threading
from concurrent.futures import ProcessPoolExecutor
from importlib import resources

import numpy as np

from .. import __version__
from ..backend import blas_threads, to_numpy
from ..errors import ImageError, MnistXPError
from ..images.blank import check_ink
from ..images.decode import INSTALL_HINT, has_image_signature
from ..pixels import IMAGE_SIDE, N_PIXELS

__all__ = ["MAX_BODY", "ApiError", "Server", "make_server"]

#: Largest request body accepted, in bytes (a drawn digit's PNG is a few kB).
MAX_BODY = 5 * 1024 * 1024

# Most rows one model call takes; more waiting requests go to the next call.
_MAX_BATCH = 256

# Longest request line plus headers accepted, in bytes (then 431).
_MAX_HEAD = 64 * 1024

# After refusing a body, read and drop at most this much of it, for at most this many
# seconds, before closing (see Server._discard).
_LINGER_BYTES, _LINGER_S = 4 * 5 * 1024 * 1024, 5.0
_LINGER = "linger"

# Seconds a connection may sit idle (or dribble a body) before its thread gives up;
# bounds the threads a slow or stalled client can hold.
_TIMEOUT = 30

# What error messages call the input, whatever its form (picture or JSON).
_BODY = "request body"

# A JSON array is one 28x28 digit: its box is the whole image.
_WHOLE = (0, 0, IMAGE_SIDE, IMAGE_SIDE)

# The files of the page, served from memory under these paths.
_PAGES = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8")}

# The page's only outside connections are to this server ('self'); inline script and
# style are its own (it ships as one file), and drawn/preview images are data: URLs.
_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


_DECIMAL = [str(i).encode() for i in range(256)]


class ApiError(Exception):
    """A request the client must change: becomes ``{"error": message}`` with `status`."""

    def __init__(self, status: int, message: str, *, body_unread: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.body_unread = body_unread

    def __reduce__(self):
        # Raised in a picture process, it must arrive whole in the server's.
        return _api_error, (self.status, self.message, self.body_unread)


def _api_error(status: int, message: str, body_unread: bool) -> ApiError:
    return ApiError(status, message, body_unread=body_unread)


def _reject_constant(name: str):
    raise ApiError(400, f"JSON holds {name}; pixel values must be finite numbers")


def _pixels_from_json(body: bytes, n_features: int) -> np.ndarray:
    """The uint8 row a JSON body describes, or an ApiError saying what is wrong (or blank)."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except ApiError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"body is neither an image nor valid JSON ({exc})") from None
    if isinstance(value, dict):
        value = value.get("pixels")
    if not isinstance(value, list):
        raise ApiError(400, f"JSON body must be an array of {n_features} numbers "
                            "(or {\"pixels\": [...]})")
    if len(value) != n_features:
        raise ApiError(422, f"JSON array has {len(value)} values; give {n_features} "
                            f"({math.isqrt(n_features)}x{math.isqrt(n_features)}, row by row)")
    # NumPy infers the type: strings, nulls or nested lists give a non-numeric dtype
    # (or a ValueError), all-true/false gives bool; only numbers pass. One C-level pass
    # instead of a Python-level type check of 784 items (this is the hot path).
    try:
        x = np.array(value)
    except (OverflowError, ValueError):
        raise ApiError(422, "pixel values must be numbers from 0 to 255") from None
    if x.dtype.kind not in "iuf" or x.ndim != 1:
        raise ApiError(422, "every pixel value must be a number from 0 to 255")
    if not np.all(np.isfinite(x)):
        raise ApiError(422, "pixel values must be finite numbers")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255:
        raise ApiError(422, f"pixel values must be in 0..255 (or floats in [0, 1]); "
                            f"found {low:g}..{high:g}")
    if high <= 1:
        x = x * 255  # floats in [0, 1], as the model's own float inputs are
    row = np.rint(x).astype(np.uint8)
    if n_features == N_PIXELS:  # the "no ink" rule is for 28x28 images
        try:
            check_ink(row, _BODY)
        except ImageError as exc:  # blank, or nearly all ink
            raise ApiError(422, str(exc)) from None
    return row


def _pixels_from_image(body: bytes, n_features: int, classify=None) -> tuple[np.ndarray, list]:
    """The digits `mnist-xp predict` would read in an image body: (k, 784) uint8 rows, boxes.

    `classify` (the model's probabilities) decides where digits that touch are cut.
    """
    from ..images.digits import read_digits_file

    if n_features != N_PIXELS:
        raise ApiError(422, f"the model expects {n_features} pixels per image; pictures "
                            "become 28x28 = 784")
    upload = io.BytesIO(body)
    upload.name = _BODY  # how error messages name it
    try:
        digits = read_digits_file(upload, classify=classify)
    except MnistXPError as exc:
        # Pillow missing is the server's problem (503); anything else is the picture's.
        raise ApiError(503 if INSTALL_HINT in str(exc) else 422, str(exc)) from None
    rows = np.stack([d.image.reshape(-1) for d in digits])
    return rows, [[int(v) for v in d.box] for d in digits]


class _Batch:
    """Rows waiting for the model, answered together at the end of a loop iteration.

    Every request whose body was parsed in the same event-loop iteration joins one
    ``predict_proba`` call, with all the digits of its picture: under load that is
    dozens of rows per call (one kernel launch on a GPU instead of dozens; one BLAS
    call on the CPU), and a lone request waits no longer than its own call.
    """

    def __init__(self, model, loop, max_batch: int = _MAX_BATCH):
        self.model, self.loop, self.max_batch = model, loop, max_batch
        self.blocks: list = []
        self.futures: list = []
        self.n_rows = 0

    def predict(self, rows: np.ndarray):
        """A future of the class probabilities (numpy, (k, n_classes)) of `rows` (k, n_features)."""
        future = self.loop.create_future()
        if not self.blocks:
            self.loop.call_soon(self._run)
        self.blocks.append(rows)
        self.futures.append(future)
        self.n_rows += len(rows)
        if self.n_rows >= self.max_batch:
            self._run()
        return future

    def _run(self) -> None:
        blocks, futures = self.blocks, self.futures
        if not blocks:
            return  # already run when the batch filled up
        self.blocks, self.futures, self.n_rows = [], [], 0
        try:
            proba = np.asarray(to_numpy(self.model.predict_proba(np.concatenate(blocks))),
                               dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
            return
        ends = np.cumsum([len(b) for b in blocks])
        for f, p in zip(futures, np.split(proba, ends[:-1])):
            if not f.done():  # its client may have gone
                f.set_result(p)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            415: "Unsupported Media Type", 422: "Unprocessable Content",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}


def _response(status: int, body: bytes, content_type: str = "application/json", *,
              close: bool = False, head_only: bool = False, extra: str = "") -> bytes:
    """The bytes of one HTTP/1.1 response."""
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Server: mnist-xp/{__version__}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n"
            f"Cache-Control: no-store\r\n{extra}"
            f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
            ).encode("latin-1") + (b"" if head_only else body)


def _error(status: int, message: str, **kw) -> bytes:
    return _response(status, json.dumps({"error": message}).encode(), **kw)


class Server:
    """The HTTP/1.1 server: one asyncio event loop, keep-alive, batched inference.

    Made by `make_server`, bound but not yet serving. `serve_forever` runs it in the
    calling thread until `shutdown` (from another thread) or Ctrl-C; `server_close`
    releases the socket.
    """

    def __init__(self, model, sock: socket.socket, *, device: str, model_name: str,
                 metadata: dict | None):
        self.model = model
        self.socket = sock
        self.server_address = sock.getsockname()
        self.n_features = int(model.n_features_in_)
        self.classes = [c.item() for c in np.asarray(model.classes_)]
        self.pages = _page_files()
        self.health = json.dumps(
            {"status": "ok", "mnist_xp": __version__, "device": device,
             "model": {"file": model_name, "n_features": self.n_features,
                       "classes": self.classes, "metadata": metadata or {}},
             "max_body_bytes": MAX_BODY}, default=str).encode()
        self._loop = None
        self._stop = None
        self._stop_requested = False
        self._started = threading.Event()
        # Reading a picture takes milliseconds of Python and OpenCV: it runs in two
        # processes (threads would share one interpreter lock), so that pictures are
        # read on both cores and the loop keeps answering meanwhile. Each holds a CPU
        # copy of the model, to decide where digits that touch are cut.
        self._pool = _picture_processes(model)

    # -- running -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until `shutdown` is called (or KeyboardInterrupt)."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:  # shutdown() came before the loop existed
            return
        self._batch = _Batch(self.model, self._loop)
        server = await asyncio.start_server(self._connection, sock=self.socket,
                                            limit=_MAX_HEAD, backlog=128)
        self._started.set()
        limit = contextlib.nullcontext()
        if str(getattr(getattr(self.model, "backend_", None), "device", "cpu")) == "cpu":
            # Batches here are small: a multi-threaded BLAS would only spin its threads
            # on the cores the server and its clients need.
            limit = blas_threads(1)
        try:
            with limit:
                await self._stop.wait()
        finally:
            server.close()

    def wait_started(self, timeout: float = 10.0) -> bool:
        """Whether `serve_forever` (in another thread) is accepting connections."""
        return self._started.wait(timeout)

    def shutdown(self) -> None:
        """Stop `serve_forever`: from another thread, or from a signal handler."""
        self._stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stop.set)

    def server_close(self) -> None:
        """Release the listening socket and the picture processes."""
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one connection ------------------------------------------------------------------

    async def _connection(self, reader, writer) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _TIMEOUT)
                except asyncio.LimitOverrunError:
                    writer.write(_error(431, "request headers too large", close=True))
                    break
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    break
                answer, close = await self._answer(head, reader)
                writer.write(answer)
                if writer.transport.get_write_buffer_size() > 1 << 16:
                    await writer.drain()
                if close:
                    if close is _LINGER:
                        await writer.drain()
                        await self._discard(reader)
                    break
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if not writer.is_closing():
                    await writer.drain()
                writer.close()

    async def _answer(self, head: bytes, reader) -> tuple[bytes, bool]:
        """(response bytes, close the connection?) for one request."""
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, sep, value = line.partition(":")
                    if not sep:
                        raise ValueError(line)
                    headers[name.strip().lower()] = value.strip()
        except ValueError:
            return _error(400, "malformed request", close=True), True
        if not version.startswith("HTTP/1."):
            return _error(400, "only HTTP/1.x is spoken here (a malformed request for this server)", close=True), True
        close = (headers.get("connection", "").lower() == "close"
                 or (version == "HTTP/1.0"
                     and headers.get("connection", "").lower() != "keep-alive"))
        path = target.split("?", 1)[0]
        try:
            body = await self._body(method, headers, reader)
            if method in ("GET", "HEAD"):
                return self._get(path, head_only=method == "HEAD", close=close), close
            if method != "POST":
                raise ApiError(405, f"method {method[:20]} is not allowed; GET the page, "
                                    "POST /api/predict")
            if path != "/api/predict":
                raise ApiError(404, f"no such endpoint: {path[:200]}")
            return _response(200, await self._predict(body), close=close), close
        except ApiError as exc:
            # After a refused body the rest of it may still be on the wire: hang up,
            # after reading (and dropping) what the client is still sending.
            if exc.body_unread:
                return _error(exc.status, exc.message, close=True), _LINGER
            return _error(exc.status, exc.message, close=close), close
        except Exception:  # noqa: BLE001 - a bug must not leak a traceback to clients
            return _error(500, "internal error", close=True), True

    async def _body(self, method: str, headers: dict, reader) -> bytes:
        if "transfer-encoding" in headers:
            raise ApiError(411, "send the body with a Content-Length, not chunked",
                           body_unread=True)
        length = headers.get("content-length")
        if length is None:
            if method == "POST":
                raise ApiError(411, "a Content-Length header is required")
            return b""
        if not length.isdigit():
            raise ApiError(400, "Content-Length is not a whole number", body_unread=True)
        n = int(length)
        if n > MAX_BODY:
            raise ApiError(413, f"body of {n} bytes is too large; the limit is "
                                f"{MAX_BODY // (1024 * 1024)} MB", body_unread=True)
        return await asyncio.wait_for(reader.readexactly(n), _TIMEOUT) if n else b""

    @staticmethod
    async def _discard(reader) -> None:
        """Read and drop what the client still sends, for a while, before closing.

        Closing a socket with unread data in it makes the kernel send a reset, which
        can destroy the answer before a client that is still uploading reads it (an
        oversized body sent whole, say). The 413 has been sent; this lets it arrive.
        """
        left, deadline = _LINGER_BYTES, asyncio.get_running_loop().time() + _LINGER_S
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            while left > 0:
                wait = deadline - asyncio.get_running_loop().time()
                if wait <= 0:
                    break
                chunk = await asyncio.wait_for(reader.read(1 << 16), wait)
                if not chunk:
                    break
                left -= len(chunk)

    def _get(self, path: str, *, head_only: bool, close: bool) -> bytes:
        if path in _PAGES:
            name, kind = _PAGES[path]
            return _response(200, self.pages[name], kind, close=close, head_only=head_only,
                             extra=f"Content-Security-Policy: {_CSP}\r\n"
                                   "Referrer-Policy: no-referrer\r\n")
        if path == "/api/health":
            return _response(200, self.health, close=close, head_only=head_only)
        if path == "/api/predict":
            raise ApiError(405, "use POST with an image or a JSON array of pixels")
        raise ApiError(404, f"no such page: {path[:200]}")

    async def _predict(self, body: bytes) -> bytes:
        """The JSON answer (encoded) for one /api/predict body (raises ApiError)."""
        if not body:
            raise ApiError(400, "empty body; send an image or a JSON array of pixels")
        n_features = self.n_features
        if has_image_signature(body[:12]):  # anything else must be JSON
            rows, boxes = await self._loop.run_in_executor(self._pool, _picture_digits,
                                                           body, n_features)
        else:
            rows, boxes = _pixels_from_json(body, n_features)[None], [_WHOLE]
        proba = await self._batch.predict(rows)
        return self._encode(proba, rows, boxes)

    def _encode(self, proba: np.ndarray, rows: np.ndarray, boxes: list) -> bytes:
        """The answer's JSON bytes for digits of probabilities `proba` and pixels `rows`."""
        digits, images = [], []
        for p, row, box in zip(proba, rows, boxes):
            best = int(np.argmax(p))
            digits.append({"digit": self.classes[best], "probability": float(p[best]),
                           "probabilities": [round(float(v), 6) for v in p],
                           "box": list(box)})
            # The pixels joined from pre-encoded numbers: half the time of json.dumps on
            # the list, and this runs once per digit of every request.
            images.append(b"[" + b",".join([_DECIMAL[v] for v in row.tolist()]) + b"]")
        number = "".join(str(d["digit"]) for d in digits)
        if len(digits) == 1:
            head = {k: digits[0][k] for k in ("digit", "probability", "probabilities")}
            image = images[0]
        else:
            # Fields of one digit have no value for a number; see the module docstring.
            head = {"digit": number, "probability": float(np.prod([d["probability"]
                                                                    for d in digits])),
                    "probabilities": None}
            image = b"null"
        head.update(classes=self.classes, number=number)
        parts = [_open(head), b',"image":', image, b',"digits":[']
        for i, (d, pixels) in enumerate(zip(digits, images)):
            parts += [b"," if i else b"", _open(d), b',"image":', pixels, b"}"]
        parts.append(b"]}")
        return b"".join(parts)


def _open(obj: dict) -> bytes:
    """`obj` as compact JSON without its closing brace, for more fields to follow."""
    return json.dumps(obj, separators=(",", ":"))[:-1].encode()


# -- the picture processes -------------------------------------------------------------

_WORKER_CLASSIFY = None  # in a picture process: its model's predict_proba


def _picture_processes(model) -> ProcessPoolExecutor:
    """Two processes to read pictures in, each with a CPU copy of `model`.

    Started by a fork server (forking this multi-threaded process directly is unsafe),
    with NumPy, OpenCV and mnist_xp preloaded, when the first picture arrives.
    """
    import multiprocessing
    import pickle

    from ..backend import get_backend

    state = model.__getstate__()
    if "backend_" in state:
        state["backend_"] = get_backend("cpu")
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["numpy", "mnist_xp.images", "mnist_xp.estimator"])
    return ProcessPoolExecutor(max_workers=2, mp_context=context, initializer=_picture_process,
                               initargs=(type(model), pickle.dumps(state)))


def _picture_process(model_type, state: bytes) -> None:
    """Set up a picture process: its model, and one thread each for OpenCV and the BLAS."""
    import pickle

    global _WORKER_CLASSIFY
    model = model_type.__new__(model_type)
    model.__setstate__(pickle.loads(state))
    _WORKER_CLASSIFY = model.predict_proba
    _one_opencv_thread()
    blas_threads(1).__enter__()  # for the process's life: its batches are one picture


def _picture_digits(body: bytes, n_features: int) -> tuple[np.ndarray, list]:
    """`_pixels_from_image` in a picture process, with its model."""
    return _pixels_from_image(body, n_features, _WORKER_CLASSIFY)


def _one_opencv_thread() -> None:
    """OpenCV's own thread pool off: each picture has a thread of its own already, and
    OpenCV's threads would fight them (and the clients) for the same cores."""
    try:
        import cv2
    except ImportError:
        return  # pictures are refused with the install hint instead
    cv2.setNumThreads(1)


def _page_files() -> dict[str, bytes]:
    web = resources.files("mnist_xp") / "web"
    return {name: (web / name).read_bytes() for name, _ in set(_PAGES.values())}


def make_server(model, host: str = "127.0.0.1", port: int = 8000, *, device: str = "cpu",
                model_name: str = "", metadata: dict | None = None) -> Server:
    """A bound, not yet serving, server; call ``serve_forever()`` then ``server_close()``.

    Parameters
    ----------
    model : MLPClassifier
        A fitted model.
    host, port : str, int
        Where to listen; port 0 picks a free one (see ``server_address``).
    device : str
        Reported by /api/health.
    model_name : str
        The model file's name (not its path), reported by /api/health.
    metadata : dict, optional
        The model file's metadata, reported by /api/health.

    Raises
    ------
    OSError
        If the address cannot be bound (in use, not local, unknown host).
    """
    # Bound here, not in serve_forever, so that a busy port is reported before the
    # server announces itself.
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return Server(model, sock, device=device, model_name=model_name, metadata=metadata)
