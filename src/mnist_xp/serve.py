"""``mnist-xp serve``: a page to draw a digit on, and a small JSON API behind it.

Built on the standard library's `http.server.ThreadingHTTPServer` (HTTP/1.1 with
keep-alive): one page and two JSON endpoints need no framework, and the server then
adds no dependency beyond Pillow, which decoding uploaded pictures needs anyway.

Endpoints
---------
``GET /``
    The page (``mnist_xp/web/``, package data read once at start-up; requests never
    touch the file system).
``GET /api/health``
    ``{"status": "ok", "device": ..., "model": {...metadata...}, ...}``.
``POST /api/predict``
    A PNG/JPEG (or other Pillow-readable) image body, preprocessed exactly like
    ``mnist-xp predict`` does, or a JSON array of 784 pixel values (0-255, white ink on
    black; or floats in [0, 1] when every value is at most 1), or ``{"pixels": [...]}``.
    Answers ``{"digit", "probability", "probabilities", "classes", "image"}`` where
    ``image`` is the 784 uint8 pixels (row-major 28x28) the model saw.

Every error is a JSON object ``{"error": "..."}`` with a 4xx status (a 500, still JSON
and without a traceback, only for a bug). Bodies are capped at `MAX_BODY` bytes and
images at `mnist_xp.images.MAX_PIXELS` pixels before their pixels are decoded.

Concurrent predictions are batched: request threads hand their row to one worker
thread, which stacks whatever is waiting into one ``predict_proba`` call. On a GPU
that turns many tiny kernel launches into one; on the CPU it keeps the BLAS call
count (and GIL hand-offs) per request low.
"""

from __future__ import annotations

import io
import json
import math
import queue
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np

from . import __version__
from .backend import to_numpy
from .errors import MnistXPError

__all__ = ["MAX_BODY", "Batcher", "make_server", "ApiError"]

#: Largest request body accepted, in bytes (a drawn digit's PNG is a few kB).
MAX_BODY = 5 * 1024 * 1024

# Most rows one model call takes; more waiting requests go to the next call.
_MAX_BATCH = 256

# Seconds a connection may sit idle (or dribble a body) before its thread gives up;
# bounds the threads a slow or stalled client can hold.
_TIMEOUT = 30

# The files of the page, served from memory under these paths.
_PAGES = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8")}

# Images start with one of these signatures; anything else must be JSON.
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
                b"II*\x00", b"MM\x00*", b"RIFF")

# The page's only outside connections are to this server ('self'); inline script and
# style are its own (it ships as one file), and drawn/preview images are data: URLs.
_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ApiError(Exception):
    """A request the client must change: becomes ``{"error": message}`` with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Batcher:
    """Run ``model.predict_proba`` for many threads, stacking waiting rows into one call.

    Parameters
    ----------
    model : MLPClassifier
        A fitted model; it is only ever called from the worker thread.
    max_batch : int, default 256
        Most rows per model call.
    """

    def __init__(self, model, max_batch: int = _MAX_BATCH):
        self.model = model
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="mnist-xp-batcher", daemon=True)
        self._worker.start()

    def predict(self, row: np.ndarray) -> np.ndarray:
        """Class probabilities for one uint8 row of ``n_features`` pixels.

        Parameters
        ----------
        row : numpy.ndarray, shape (n_features,), uint8

        Returns
        -------
        numpy.ndarray, shape (n_classes,)
        """
        # A pre-acquired lock is the cheapest one-shot signal between two threads
        # (an Event wraps a Condition around one); the worker releases it when done.
        done = threading.Lock()
        done.acquire()
        slot = [row, None, done]
        self._queue.put(slot)
        done.acquire()
        if isinstance(slot[1], BaseException):
            raise slot[1]
        return slot[1]

    def close(self) -> None:
        """Stop the worker thread (after the rows already queued)."""
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _run(self) -> None:
        q = self._queue
        while True:
            first = q.get()
            if first is None:
                return
            batch = [first]
            # Whatever arrived while the last call ran goes into this one.
            while len(batch) < self.max_batch:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    q.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                x = np.stack([slot[0] for slot in batch])
                proba = np.asarray(to_numpy(self.model.predict_proba(x)), dtype=np.float64)
                for slot, p in zip(batch, proba):
                    slot[1] = p
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for slot in batch:
                    slot[1] = exc
            for slot in batch:
                slot[2].release()


def _reject_constant(name: str):
    raise ApiError(400, f"JSON holds {name}; pixel values must be finite numbers")


def _pixels_from_json(body: bytes, n_features: int) -> np.ndarray:
    """The uint8 row a JSON body describes, or an ApiError saying what is wrong."""
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
    # bool is an int to Python and NumPy; true/false are not pixel values.
    if any(type(v) not in (int, float) for v in value):
        raise ApiError(422, "every pixel value must be a number")
    try:
        x = np.array(value, dtype=np.float64)
    except (OverflowError, ValueError):
        raise ApiError(422, "pixel values must be numbers from 0 to 255") from None
    if not np.all(np.isfinite(x)):
        raise ApiError(422, "pixel values must be finite numbers")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255:
        raise ApiError(422, f"pixel values must be in 0..255 (or floats in [0, 1]); "
                            f"found {low:g}..{high:g}")
    if high <= 1:
        x = x * 255  # floats in [0, 1], as the model's own float inputs are
    return np.rint(x).astype(np.uint8)


def _pixels_from_image(body: bytes, n_features: int) -> np.ndarray:
    """The uint8 row `mnist-xp predict` would make of an image body."""
    from .images import preprocess_file

    if n_features != 28 * 28:
        raise ApiError(422, f"the model expects {n_features} pixels per image; pictures "
                            "become 28x28 = 784")
    upload = io.BytesIO(body)
    upload.name = "image"  # how error messages name it
    try:
        return preprocess_file(upload).reshape(-1)
    except MnistXPError as exc:
        raise ApiError(422 if "Pillow" not in str(exc) else 503, str(exc)) from None


class _Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 keep-alive, JSON errors, no logging per request."""

    protocol_version = "HTTP/1.1"
    server_version = f"mnist-xp/{__version__}"
    sys_version = ""
    timeout = _TIMEOUT
    # The response is small and written in one go: no Nagle delay before it leaves.
    disable_nagle_algorithm = True

    # -- responses -------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, extra=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value, separators=(",", ":")).encode(),
                   "application/json")

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, 501...) as JSON too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.close_connection = True
        if self.command is None or not hasattr(self, "headers"):
            # The request line itself was unreadable: answer as HTTP/1.0.
            self.request_version = "HTTP/1.0"
        body = json.dumps({"error": message or phrase}).encode()
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        """Quiet: a line per request would cost more than the prediction."""

    # -- routing ---------------------------------------------------------------------

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in _PAGES:
            name, kind = _PAGES[path]
            self._send(200, self.server.pages[name], kind,
                       extra=(("Content-Security-Policy", _CSP),
                              ("Referrer-Policy", "no-referrer")))
        elif path == "/api/health":
            self._json(200, self.server.health)
        elif path == "/api/predict":
            self._json(405, {"error": "use POST with an image or a JSON array of pixels"})
        else:
            self._json(404, {"error": f"no such page: {path[:200]}"})

    do_HEAD = do_GET

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()
            if path != "/api/predict":
                raise ApiError(404, f"no such endpoint: {path[:200]}")
            self._json(200, self.server.predict(body))
        except ApiError as exc:
            if exc.status in (411, 413):
                self.close_connection = True  # the unread body would poison the connection
            self._json(exc.status, {"error": exc.message})
        except OSError:
            self.close_connection = True  # the client went away or stalled
        except Exception:  # noqa: BLE001 - a bug must not leak a traceback to clients
            self.close_connection = True
            self._json(500, {"error": "internal error"})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a Content-Length header is required")
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if n < 0:
            raise ApiError(400, "Content-Length is negative")
        if n > MAX_BODY:
            raise ApiError(413, f"body of {n} bytes is too large; the limit is "
                                f"{MAX_BODY // (1024 * 1024)} MB")
        body = self.rfile.read(n)
        if len(body) != n:
            raise OSError("body shorter than its Content-Length")
        return body


class _Server(ThreadingHTTPServer):
    """The HTTP server holding the model, the page and the batcher."""

    daemon_threads = True
    # The default backlog of 5 drops SYNs when dozens of clients connect at once, and
    # a dropped SYN costs a 1-second retransmit.
    request_queue_size = 128

    def predict(self, body: bytes) -> dict:
        """The JSON answer for one /api/predict body (raises ApiError)."""
        if not body:
            raise ApiError(400, "empty body; send an image or a JSON array of pixels")
        n_features = self.n_features
        if body.startswith(_IMAGE_MAGIC):
            row = _pixels_from_image(body, n_features)
        else:
            row = _pixels_from_json(body, n_features)
        p = self.batcher.predict(row)
        best = int(np.argmax(p))
        return {"digit": self.classes[best], "probability": float(p[best]),
                "probabilities": [round(float(v), 6) for v in p],
                "classes": self.classes, "image": row.tolist()}

    def server_close(self):
        super().server_close()
        self.batcher.close()


def _page_files() -> dict[str, bytes]:
    web = resources.files("mnist_xp") / "web"
    return {name: (web / name).read_bytes() for name, _ in set(_PAGES.values())}


def make_server(model, host: str = "127.0.0.1", port: int = 8000, *, device: str = "cpu",
                model_name: str = "", metadata: dict | None = None) -> _Server:
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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("_BoundServer", (_Server,), {"address_family": family})
    server = server_class((host, port), _Handler, bind_and_activate=False)
    try:
        server.server_bind()
        server.server_activate()
    except BaseException:
        server.socket.close()
        raise
    server.n_features = int(model.n_features_in_)
    server.classes = [c.item() for c in np.asarray(model.classes_)]
    server.pages = _page_files()
    server.batcher = Batcher(model)
    server.health = {"status": "ok", "mnist_xp": __version__, "device": device,
                     "model": {"file": model_name, "n_features": server.n_features,
                               "classes": server.classes,
                               "metadata": json.loads(json.dumps(metadata or {}, default=str))},
                     "max_body_bytes": MAX_BODY}
    # Request threads mostly wait on sockets; a shorter GIL switch interval keeps a
    # ready thread from waiting 5 ms behind a busy one (p99 latency under load).
    if sys.getswitchinterval() > 0.001:
        sys.setswitchinterval(0.001)
    return server
