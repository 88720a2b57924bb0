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
    array) and ``image``, the 784 uint8 pixels (row-major 28x28) the model saw for it
    (deskewed, for a model that deskews, as the shipped one does).
    ``number`` is the digits' classes joined, always a string ("7", "2026").

    For one digit the top-level fields are that digit's, as they were before numbers
    were read: ``digit`` its class, ``image`` its 784 pixels. For several digits,
    ``digit`` is the number (the same string as ``number``), ``probability`` the
    product of the digits' probabilities (the chance that all are right, if their
    errors are independent and the segmentation is right), and ``probabilities`` and
    ``image`` are null: they describe one digit, and each digit's are in ``digits``.
    A client written for single digits thus gets a clear null rather than part of
    the answer.

Every error is a JSON object ``{"error": "..."}`` with a 4xx status, or 503 with
``Retry-After`` when the picture queue is full (a 500, still JSON and without a
traceback, only for a bug). Bodies are capped at `MAX_BODY` bytes and
images at `mnist_xp.images.MAX_PIXELS` pixels before their pixels are decoded. A
blank input, in any form (a blank or transparent picture, 784 zeros, a lone dot, a
faint smudge), is refused by the one "no ink" rule (`mnist_xp.images.check_ink`) with
422 and the same message, which names the input "request body".

Concurrent predictions are batched: the digits of all requests parsed in one loop
iteration (every digit of a picture of a number among them) go through one
``predict_proba`` call. On a GPU that turns many tiny kernel launches into one; on the
CPU it amortises the per-call overhead. Pictures are read (decoded, normalised, cut into
digits) in worker processes, in two lanes with bounded queues, so that drawings never
wait behind a large picture (`mnist_xp.web.pictures`).

Limits: at most `connections.default_cap` connections are held open (the open-file
limit less a reserve); at the cap the one that has waited on its client the longest
(for a request, or the rest of a stalled head or body) is closed, and accept errors
are logged at most once a second (`mnist_xp.web.connections`). Request framing follows
RFC 9112 (`mnist_xp.web.http`): CRLF lines only, no control characters in field values,
one ``Host`` in HTTP/1.1, and a half-close after a refusal that leaves a body unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import threading
from importlib import resources

import numpy as np

from .. import __version__
from ..backend import blas_threads, to_numpy
from ..deskew import deskew
from ..errors import ImageError
from ..images.blank import check_ink
from ..images.decode import has_image_signature
from ..pixels import IMAGE_SIDE, N_PIXELS
from .connections import Connections, Listener, RateLimitedLog, default_cap
from .http import (MAX_BODY, MAX_HEAD, TIMEOUT, ApiError, discard, error, parse_head,
                   read_body, read_head, response)
from .pictures import PictureLanes

__all__ = ["MAX_BODY", "ApiError", "Server", "make_server"]

# Most rows one model call takes; more waiting requests go to the next call.
_MAX_BATCH = 256

# Connections the kernel queues for accept (capped by net.core.somaxconn).
_BACKLOG = 1024

# What error messages call the input, whatever its form (picture or JSON).
_BODY = "request body"

# A JSON array is one 28x28 digit: its box is the whole image.
_WHOLE = (0, 0, IMAGE_SIDE, IMAGE_SIDE)

# After a refused body: answer, then read and drop the rest before closing.
_LINGER = "linger"

# The files of the page, served from memory under these paths.
_PAGES = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8")}

# The page's only outside connections are to this server ('self'); inline script and
# style are its own (it ships as one file), and drawn/preview images are data: URLs.
_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


_DECIMAL = [str(i).encode() for i in range(256)]


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


def _without_paths(metadata: dict) -> dict:
    """The metadata with a distilled model's teacher files named, not located: the page is
    public, the training machine's directories are not."""
    params = metadata.get("estimator_params")
    if not isinstance(params, dict) or not isinstance(params.get("teacher"), list):
        return metadata
    names = [os.path.basename(str(p)) for p in params["teacher"]]
    return {**metadata, "estimator_params": {**params, "teacher": names}}


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


class Server:
    """The HTTP/1.1 server: one asyncio event loop, keep-alive, batched inference.

    Made by `make_server`, bound but not yet serving. `serve_forever` runs it in the
    calling thread until `shutdown` (from another thread) or Ctrl-C; `server_close`
    releases the socket. See `make_server` for the keywords.
    """

    def __init__(self, model, sock: socket.socket, *, device: str, model_name: str,
                 metadata: dict | None, max_connections: int | None = None,
                 pictures: PictureLanes | None = None, log=None):
        self.model = model
        self.socket = sock
        self.server_address = sock.getsockname()
        self.n_features = int(model.n_features_in_)
        self.classes = [c.item() for c in np.asarray(model.classes_)]
        self.pages = _page_files()
        self.health = json.dumps(
            {"status": "ok", "mnist_xp": __version__, "device": device,
             "model": {"file": model_name, "n_features": self.n_features,
                       "classes": self.classes, "metadata": _without_paths(metadata or {})},
             "max_body_bytes": MAX_BODY}, default=str).encode()
        self.connections = Connections(max_connections or default_cap())
        self.accept_log = RateLimitedLog(log)
        self._loop = None
        self._stop = None
        self._stop_requested = False
        self._started = threading.Event()
        # Pictures are read in processes, in lanes with bounded queues (see pictures.py).
        self.pictures = pictures if pictures is not None else PictureLanes(model)

    # -- running -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until `shutdown` is called (or KeyboardInterrupt)."""
        asyncio.run(self._main())

    def _attach(self, loop) -> None:
        """Bind the per-loop state (the batch) to `loop`."""
        self._loop = loop
        self._batch = _Batch(self.model, loop)

    async def _main(self) -> None:
        self._attach(asyncio.get_running_loop())
        self._stop = asyncio.Event()
        if self._stop_requested:  # shutdown() came before the loop existed
            return
        # Our own accept loop rather than asyncio.start_server's: see connections.py.
        self._listener = Listener(self._loop, self.socket, self._accepted, self.connections,
                                  self.accept_log)
        self._listener.start()
        self._started.set()
        # The picture processes start (and read a drawing once) meanwhile, so that the
        # first picture does not wait for them; in a thread, as starting them blocks.
        threading.Thread(target=self.pictures.warm, name="mnist-xp warm pictures",
                         daemon=True).start()
        limit = contextlib.nullcontext()
        if str(getattr(getattr(self.model, "backend_", None), "device", "cpu")) == "cpu":
            # Batches here are small: a multi-threaded BLAS would only spin its threads
            # on the cores the server and its clients need.
            limit = blas_threads(1)
        try:
            with limit:
                await self._stop.wait()
        finally:
            self._listener.stop()

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
        self.pictures.close()

    # -- one connection ------------------------------------------------------------------

    def _accepted(self, sock: socket.socket) -> None:
        """Serve the accepted socket `sock` in a task of its own."""
        self._loop.create_task(self._open(sock))

    async def _open(self, sock: socket.socket) -> None:
        """Wrap `sock` in asyncio streams (as start_server does) and serve it."""
        loop = self._loop
        key = object()
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            try:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
            except OSError:
                sock.close()
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self.serve_stream(reader, writer, key)
        finally:
            self.connections.closed(key)

    async def serve_stream(self, reader: asyncio.StreamReader, writer, key=None) -> None:
        """Answer the requests read from `reader` on `writer` until either side closes.

        One connection's life, without the socket: the fuzz harness
        (tests/fuzz/fuzz_http.py) feeds a reader raw bytes and collects the answers.

        Parameters
        ----------
        reader : asyncio.StreamReader
            The request bytes.
        writer : asyncio.StreamWriter
            Where the responses go (closed at the end).
        key : object, optional
            The connection's key in `connections`, to mark it idle between requests
            (None: not counted).
        """
        if self._loop is None:
            self._attach(asyncio.get_running_loop())
        connections = self.connections if key is not None else None

        def waiting_on_client() -> None:
            # Evictable from now: what it holds is the client's to send.
            if connections is not None:
                connections.idle(key, writer.transport)

        def working() -> None:
            # The server's own work from now (prediction, answer): not evictable.
            if connections is not None:
                connections.busy(key)

        try:
            while True:
                waiting_on_client()
                try:
                    head = await asyncio.wait_for(read_head(reader), TIMEOUT)
                except ApiError as exc:
                    # 431, or a bare LF: the framing is unknown, so refuse and hang up.
                    answer, close = error(exc.status, exc.message, close=True), _LINGER
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    break
                else:
                    answer, close = await self._answer(head, reader, working)
                writer.write(answer)
                if writer.transport.get_write_buffer_size() > 1 << 16:
                    await writer.drain()
                if close:
                    if close is _LINGER:
                        await writer.drain()
                        # Half-close: a client reading to EOF has its whole answer now,
                        # not when the lingering below ends.
                        with contextlib.suppress(OSError, NotImplementedError):
                            if writer.can_write_eof():
                                writer.write_eof()
                        waiting_on_client()  # what is left is the client's to stop sending
                        await discard(reader)
                    break
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if not writer.is_closing():
                    await writer.drain()
                writer.close()

    async def _answer(self, head: bytes, reader, working=None) -> tuple[bytes, bool | str]:
        """(response bytes, close the connection? `_LINGER`: after draining) for one request.

        `working` is called once the body has arrived: from then on the connection
        waits on the server, not the client.
        """
        close, head_only = True, False
        try:
            request = parse_head(head)
            close, head_only = request.close, request.method == "HEAD"
            body = await read_body(request, reader)
            if working is not None:
                working()
            method, path = request.method, request.path
            if method in ("GET", "HEAD"):
                return self._get(path, head_only=method == "HEAD", close=close), close
            if method != "POST":
                raise ApiError(405, f"method {method[:20]} is not allowed; GET the page, "
                                    "POST /api/predict")
            if path != "/api/predict":
                raise ApiError(404, f"no such endpoint: {path[:200]}")
            return response(200, await self._predict(body), close=close), close
        except ApiError as exc:
            # After a refused body the rest of it may still be on the wire: hang up,
            # after reading (and dropping) what the client is still sending.
            # An answer to HEAD has no body, errors included (RFC 9110 9.3.2): one would
            # be read as the start of the next answer.
            if exc.body_unread:
                return error(exc.status, exc.message, close=True, head_only=head_only,
                             retry_after=exc.retry_after), _LINGER
            return error(exc.status, exc.message, close=close, head_only=head_only,
                         retry_after=exc.retry_after), close
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            raise  # the client went away or stalled mid-body: nothing to answer
        except Exception:  # noqa: BLE001 - a bug must not leak a traceback to clients
            return error(500, "internal error", close=True, head_only=head_only), True

    def _get(self, path: str, *, head_only: bool, close: bool) -> bytes:
        if path in _PAGES:
            name, kind = _PAGES[path]
            return response(200, self.pages[name], kind, close=close, head_only=head_only,
                             extra=f"Content-Security-Policy: {_CSP}\r\n"
                                   "Referrer-Policy: no-referrer\r\n")
        if path == "/api/health":
            return response(200, self.health, close=close, head_only=head_only)
        if path == "/api/predict":
            raise ApiError(405, "use POST with an image or a JSON array of pixels")
        raise ApiError(404, f"no such page: {path[:200]}")

    async def _predict(self, body: bytes) -> bytes:
        """The JSON answer (encoded) for one /api/predict body (raises ApiError)."""
        if not body:
            raise ApiError(400, "empty body; send an image or a JSON array of pixels")
        n_features = self.n_features
        if has_image_signature(body[:12]):  # anything else must be JSON
            rows, boxes = await self.pictures.read(body, n_features)
        else:
            rows, boxes = _pixels_from_json(body, n_features)[None], [_WHOLE]
        proba = await self._batch.predict(rows)
        return self._encode(proba, rows, boxes)

    def _encode(self, proba: np.ndarray, rows: np.ndarray, boxes: list) -> bytes:
        """The answer's JSON bytes for digits of probabilities `proba` and pixels `rows`."""
        digits, images = [], []
        if getattr(self.model, "deskew", False) and len(rows):
            rows = deskew(np.asarray(rows), np)  # what the network's first layer saw
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


def _page_files() -> dict[str, bytes]:
    web = resources.files("mnist_xp") / "web"
    return {name: (web / name).read_bytes() for name, _ in set(_PAGES.values())}


def make_server(model, host: str = "127.0.0.1", port: int = 8000, *, device: str = "cpu",
                model_name: str = "", metadata: dict | None = None,
                max_connections: int | None = None, pictures: PictureLanes | None = None,
                log=None) -> Server:
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
    max_connections : int, optional
        Most connections held open; at the cap the one idle the longest is closed to
        make room. Default: the open-file limit less 64 (`connections.default_cap`).
    pictures : PictureLanes, optional
        Where pictures are read; default: worker processes with copies of `model` and
        the default queue bounds (`mnist_xp.web.pictures`).
    log : callable, optional
        Says one line (accept errors, rate-limited); default: stderr.

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
        # A deep backlog: connections waiting there hold no descriptor of ours, and a
        # burst that overflows it makes the kernel drop SYNs (a 1 s retry for clients).
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return Server(model, sock, device=device, model_name=model_name, metadata=metadata,
                  max_connections=max_connections, pictures=pictures, log=log)
