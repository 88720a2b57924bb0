"""Where ``mnist-xp serve`` reads pictures: worker processes in two lanes, each with a bounded queue.

Reading a picture (decoding, normalising, cutting it into digits) takes milliseconds of
Python and OpenCV for a drawing, and up to seconds for a large or hostile picture. It
runs in processes (threads would take turns on one interpreter lock), so the event loop
keeps answering meanwhile. Two lanes keep drawings from waiting behind big pictures:

* the **small** lane, two processes, for pictures of at most `BIG_PIXELS` pixels (the
  page's drawings, scans and photos of modest size);
* the **big** lane, one process, for larger ones.

A picture's lane is decided from its header alone (`declared_pixels`: microseconds,
nothing decoded), before it is queued. Each lane holds
at most a fixed number of pictures, queued or being read; one more is refused at once
with 503 and ``Retry-After`` instead of waiting without bound.

Each process holds a CPU copy of the model, to decide where digits that touch are cut.
The processes are started, and read one drawing each, when the server starts
(`PictureLanes.warm`). A PNG's text chunks are dropped before it is decoded
(`_without_text_chunks`): the lane is chosen by declared pixels, and a tiny picture of
many compressed text chunks would otherwise cost its process seconds of inflating.
"""

from __future__ import annotations

import asyncio
import io
import struct
import warnings
from concurrent.futures import BrokenExecutor

import numpy as np

from ..backend import blas_threads
from ..errors import MnistXPError
from ..images.decode import INSTALL_HINT, MAX_PIXELS
from ..pixels import N_PIXELS
from .http import ApiError

__all__ = ["BIG_PIXELS", "BIG_QUEUE", "SMALL_QUEUE", "PictureLanes"]

#: Pictures declaring more pixels than this (about 1400 x 1400) go to the big lane. A
#: drawing from the page is 280 x 280 (0.08 MP, ~3 ms to read); 2 MP takes ~15 ms.
BIG_PIXELS = 2_000_000

#: Most pictures each lane holds (queued or being read) before answering 503. The small
#: lane's bound is above any fair load (each connection has one request at a time);
#: the big lane holds one being read and one waiting.
SMALL_QUEUE, BIG_QUEUE = 64, 2

#: Seconds a client told 503 is asked to wait (``Retry-After``).
RETRY_AFTER = 1

# What error messages call the input, whatever its form (picture or JSON).
_BODY = "request body"

_PNG = b"\x89PNG\r\n\x1a\n"
# The formats whose signatures make a body a picture (images.decode.has_image_signature),
# but PNG, for the header peek; and how much of the body it reads.
_FORMATS = ("JPEG", "GIF", "BMP", "TIFF", "WEBP")
_PEEK_BYTES = 256 * 1024


class _Lane:
    """One executor and a count of the pictures it holds, refused above `capacity`.

    `factory`, if given, makes the executor, and makes a new one when a process of the
    old one died (killed for memory, say): otherwise every later picture would fail.
    """

    def __init__(self, name: str, pool, capacity: int, factory=None, processes: int = 1):
        self.name, self.capacity, self.factory = name, capacity, factory
        self.processes = processes  # how many the factory's executor runs
        self.pool = pool if pool is not None else factory()
        self.held = 0  # queued or being read
        self.refused = 0
        self.restarts = 0

    async def run(self, fn, *args):
        """``fn(*args)`` in the lane's executor, or 503 when the lane is full."""
        if self.held >= self.capacity:
            self.refused += 1
            raise ApiError(503, f"busy reading other pictures ({self.name} lane full); "
                                f"retry in {RETRY_AFTER} s", retry_after=RETRY_AFTER)
        pool = self.pool
        try:
            future = pool.submit(fn, *args)
        except BrokenExecutor:
            self._restart(pool)
            future = self.pool.submit(fn, *args)
        self.held += 1
        # Released when the work ends (the loop's copy of the future is completed from
        # the executor's), not when the request does: a client that hangs up does not
        # free the process it occupies. (Only a shutdown cancels the copy sooner.)
        done = asyncio.wrap_future(future)
        done.add_done_callback(self._release)
        try:
            return await done
        except BrokenExecutor:
            self._restart(pool)
            raise ApiError(503, "the picture reader stopped (out of memory?) and was "
                                f"restarted; retry in {RETRY_AFTER} s",
                           retry_after=RETRY_AFTER) from None

    def _restart(self, broken) -> None:
        """Replace the executor `broken` (once, however many requests saw it break)."""
        if self.factory is None:  # an executor given from outside: not ours to replace
            raise ApiError(503, "the picture reader stopped", retry_after=RETRY_AFTER)
        # Stopped even if already replaced: a process it started since is killed too.
        _stop(broken)
        if self.pool is broken:  # not yet replaced for another request that saw it break
            self.pool = self.factory()
            self.restarts += 1

    def _release(self, _=None) -> None:
        """One picture fewer held."""
        self.held -= 1


class PictureLanes:
    """The small and big lanes that pictures are read in (see the module docstring).

    Parameters
    ----------
    model : MLPClassifier, optional
        Copied (on the CPU) into each process, to cut digits that touch. Needed unless
        `pools` is given.
    small_queue, big_queue : int
        Most pictures each lane holds, queued or being read, before refusing with 503.
    big_pixels : int
        Pictures declaring more pixels than this go to the big lane.
    pools : (Executor, Executor), optional
        The small and big lanes' executors, instead of processes (for tests and the
        fuzz harness).
    read : callable, optional
        ``read(body, n_features) -> (rows, boxes)``, run in the executors; by default
        ``_picture_digits``, looked up when called (benchmarks/legacy_serve.py swaps it).
    """

    def __init__(self, model=None, *, small_queue: int = SMALL_QUEUE,
                 big_queue: int = BIG_QUEUE, big_pixels: int = BIG_PIXELS, pools=None,
                 read=None):
        if pools is None:
            self.small = _Lane("small", None, small_queue,
                               factory=lambda: _picture_processes(model, 2), processes=2)
            self.big = _Lane("big", None, big_queue, factory=lambda: _picture_processes(model, 1))
        else:
            self.small = _Lane("small", pools[0], small_queue)
            self.big = _Lane("big", pools[1], big_queue)
        self.big_pixels = big_pixels
        self._read = read
        self.warming: list = []  # futures of `warm`'s tasks

    async def read(self, body: bytes, n_features: int) -> tuple[np.ndarray, list]:
        """The digits in the picture `body`: ((k, n_features) uint8 rows, their boxes).

        Raises
        ------
        ApiError
            422 for a picture that cannot be read (the reason in one line), 503 (with
            ``retry_after``) when its lane is full or its process died while reading
            (the lane's processes are then started afresh).
        """
        # Above MAX_PIXELS a picture is refused from its header alone, at once: in the
        # small lane, where a flood of such headers cannot crowd out real big pictures.
        # A picture of unknown size may be big: it must not hold up the drawings.
        pixels = declared_pixels(body)
        big = pixels is None or self.big_pixels < pixels <= MAX_PIXELS
        lane = self.big if big else self.small
        return await lane.run(self._read or _picture_digits, body, n_features)

    def warm(self) -> None:
        """Start each lane's processes now, and have each read a small drawing once.

        Processes are otherwise started by the first picture, which then waited ~0.7 s
        for the fork server, the model's copy and the imports. Blocks while the
        processes are being started: the server calls it in a thread of its own. The
        warm-up's futures are kept in ``warming`` (lanes given executors from outside
        are left alone).
        """
        for lane in (self.small, self.big):
            if lane.factory is None:
                continue
            try:
                # One task per process: a pool starts a process per task it cannot
                # hand to an idle one.
                for _ in range(lane.processes):
                    self.warming.append(lane.pool.submit(_warm_up))
            # Closed or broken meanwhile, or the fork server gone: a server that is
            # stopping needs no warm processes.
            except (RuntimeError, BrokenExecutor, OSError):
                return

    @property
    def refused(self) -> int:
        """Pictures refused with 503 so far, both lanes."""
        return self.small.refused + self.big.refused

    def close(self) -> None:
        """Stop the executors and their processes, without waiting for the pictures they read."""
        for lane in (self.small, self.big):
            if lane.factory is None:  # given from outside: its owner stops it
                lane.pool.shutdown(wait=False, cancel_futures=True)
            else:
                _stop(lane.pool)


def _stop(pool) -> None:
    """Shut `pool` down without waiting, and kill the processes it still has.

    A process pool that breaks (a process killed for memory) sends its processes SIGTERM
    and then waits for all of them; one started by a picture submitted while it broke
    (Python before 3.14 does not guard against that race) is never signalled, so the
    pool's thread, and Python's exit with it, would wait for ever.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()


def declared_pixels(body: bytes) -> int | None:
    """The pixel count a picture's header declares, without decoding it.

    Runs on the event loop, so its cost must stay small whatever the body:

    * a PNG's size is read by hand from its IHDR chunk, which must come first (0 when it
      does not: not a PNG, refused at once in a process). Pillow's ``open`` would also
      inflate every text and colour-profile chunk before the pixels, up to 64 MB: 200 kB
      of compressed text chunks held the loop for 0.6 s;
    * other formats are opened lazily by Pillow, on the first `_PEEK_BYTES` of the body
      only: it walks their headers, inflating nothing, but 4.5 MB of JPEG Exif segments
      took 45 ms. A header that does not fit there, or that Pillow cannot read, gives
      None: the size is unknown.
    """
    if body.startswith(_PNG):
        if body[12:16] != b"IHDR" or len(body) < 24:
            return 0
        width, height = struct.unpack(">II", body[16:24])
        return width * height
    try:
        from PIL import Image
    except ImportError:
        return 0  # the picture is refused with the install hint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the size is what is asked; decoding checks it
        try:
            with Image.open(io.BytesIO(body[:_PEEK_BYTES]), formats=_FORMATS) as im:
                width, height = im.size
        except Exception:  # noqa: BLE001 - any header Pillow cannot make sense of
            return None
    return max(0, width) * max(0, height)


# PNG chunks of text (comments, XMP): never used here, and Pillow inflates each, up to
# 1 MB apiece and 64 MB in all, before a pixel is read.
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")


def _without_text_chunks(body: bytes) -> bytes:
    """`body` without its PNG text chunks (unchanged if not a PNG, or none are found).

    A 60 kB PNG of 60 zTXt chunks, each inflating to 1 MB, held a picture process for
    0.5 s in Pillow's ``open``, and a few of them made drawings wait behind it (the lane
    is chosen by declared pixels, not cost). Walking the chunk headers costs
    microseconds; a chunk list that runs past the end is left for Pillow to refuse.
    """
    if not body.startswith(_PNG):
        return body
    # Kept: the bytes from `start` to each text chunk (the signature added at the end).
    parts, pos, start, end = [], len(_PNG), len(_PNG), len(body)
    while pos + 12 <= end:
        length = int.from_bytes(body[pos:pos + 4], "big")
        kind = body[pos + 4:pos + 8]
        after = pos + 12 + length
        if after > end:
            break
        if kind in _PNG_TEXT:
            parts.append(body[start:pos])
            start = after
        pos = after
        if kind == b"IEND":
            break
    if not parts:
        return body
    parts.append(body[start:])
    return _PNG + b"".join(parts)


def _pixels_from_image(body: bytes, n_features: int, classify=None) -> tuple[np.ndarray, list]:
    """The digits `mnist-xp predict` would read in an image body: (k, 784) uint8 rows, boxes.

    `classify` (the model's probabilities) decides where digits that touch are cut.
    """
    from ..images.digits import read_digits_file

    if n_features != N_PIXELS:
        raise ApiError(422, f"the model expects {n_features} pixels per image; pictures "
                            "become 28x28 = 784")
    upload = io.BytesIO(_without_text_chunks(body))
    upload.name = _BODY  # how error messages name it
    try:
        digits = read_digits_file(upload, classify=classify)
    except MnistXPError as exc:
        # Pillow missing is the server's problem (503); anything else is the picture's.
        raise ApiError(503 if INSTALL_HINT in str(exc) else 422, str(exc)) from None
    rows = np.stack([d.image.reshape(-1) for d in digits])
    return rows, [[int(v) for v in d.box] for d in digits]


# -- the picture processes -------------------------------------------------------------

_WORKER_CLASSIFY = None  # in a picture process: its model's predict_proba


def _picture_processes(model, n: int):
    """`n` processes to read pictures in, each with a CPU copy of `model`.

    Started by a fork server (forking this multi-threaded process directly is unsafe),
    with NumPy, OpenCV and mnist_xp preloaded, when `PictureLanes.warm` (at the
    server's start) or the first picture submits work. The fork server itself is
    started here, when the lanes are built (`_start_fork_server`).
    """
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    from ..backend import get_backend

    state = model.__getstate__()
    if "backend_" in state:
        state["backend_"] = get_backend("cpu")
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["numpy", "mnist_xp.images", "mnist_xp.estimator"])
        _start_fork_server()
    return ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_picture_process,
                               initargs=(type(model), pickle.dumps(state)))


def _start_fork_server() -> None:
    """Start multiprocessing's fork server, if not running, with SIGINT blocked in it.

    A terminal's Ctrl-C reaches the whole process group. The fork server takes the
    default handler while it imports its preload, and restores it in each process it
    forks until that process's initializer ignores SIGINT: a Ctrl-C in either window
    printed a KeyboardInterrupt traceback beside "stopped". A mask blocked at the
    spawn is inherited by the server and every process it forks, from their first
    instruction (CPython's resource tracker is started the same way). The calling
    thread's mask is restored, so a Ctrl-C meanwhile still reaches this process.

    A fork server already running (started by other code in this process) is left as
    it is, without the mask. Every process this one forks keeps SIGINT blocked for
    life; the server stops them with SIGTERM or SIGKILL.
    """
    import signal
    from multiprocessing import forkserver, resource_tracker

    if not hasattr(signal, "pthread_sigmask"):  # no platform with a fork server lacks it
        forkserver.ensure_running()
        return

    # The fork server starts the resource tracker first, which unblocks SIGINT after
    # its own spawn: start it before blocking.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _picture_process(model_type, state: bytes) -> None:
    """Set up a picture process: its model, and one thread each for OpenCV and the BLAS."""
    import pickle
    import signal

    # Ctrl-C reaches the whole process group; the server stops its workers itself, and
    # a worker's own KeyboardInterrupt would print a traceback beside "stopped".
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    global _WORKER_CLASSIFY
    model = model_type.__new__(model_type)
    model.__setstate__(pickle.loads(state))
    _WORKER_CLASSIFY = model.predict_proba
    _one_opencv_thread()
    blas_threads(1).__enter__()  # for the process's life: its batches are one picture


def _picture_digits(body: bytes, n_features: int) -> tuple[np.ndarray, list]:
    """`_pixels_from_image` in a picture process, with its model."""
    return _pixels_from_image(body, n_features, _WORKER_CLASSIFY)


def _warm_up() -> bool:
    """Read a small drawing in a picture process: its imports and first calls done."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (56, 56), 255)
    ImageDraw.Draw(im).line([(28, 6), (28, 50)], fill=0, width=5)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    _picture_digits(buf.getvalue(), N_PIXELS)
    return True


def _one_opencv_thread() -> None:
    """OpenCV's own thread pool off: each process reads one picture at a time, and
    OpenCV's threads would fight the other processes (and the clients) for the cores."""
    try:
        import cv2
    except ImportError:
        return  # pictures are refused with the install hint instead
    cv2.setNumThreads(1)
