"""Accepting connections for ``mnist-xp serve`` without running out of file descriptors.

asyncio's own accept loop, given ``EMFILE`` (no file descriptor left), logs a traceback
and stops accepting for a second; under a flood of idle keep-alive connections that
was 100,000 tracebacks on stderr and well-behaved clients left unanswered. Here:

* `Connections` caps the open connections below the open-file limit (`default_cap`);
  at the cap, the connection idle the longest (waiting on its client: for its next
  request, or for the rest of one stalled mid-head or mid-body) is closed
  to make room, and when none is idle, accepting pauses until one closes, so new
  clients wait in the kernel's backlog instead of failing;
* `Listener` accepts, and hands each socket to the server; an accept error that happens
  anyway (descriptors used elsewhere) is logged by `RateLimitedLog`, at most one line a
  second with a count, and accepting pauses briefly instead of spinning.
"""

from __future__ import annotations

import errno
import socket
import sys
import time
from collections import OrderedDict

__all__ = ["Connections", "Listener", "RateLimitedLog", "default_cap"]

# Descriptors kept for everything but client connections: the listening socket, the
# event loop's, the picture processes' pipes, files opened while serving.
_RESERVE = 64

# Largest default cap, whatever the open-file limit: each connection holds buffers.
_MAX_CAP = 10_000

# Most connections accepted per wakeup: bounds how far the open descriptors can pass
# the cap before the idle connections closed to make room release theirs (well
# within the reserve), and lets the loop answer between bursts.
_ACCEPT_BURST = 16

# Seconds accepting pauses after an accept error with no idle connection to close.
_ACCEPT_PAUSE = 0.05

# Errors meaning "out of descriptors or memory" (the rest are one client's problem).
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def default_cap(reserve: int = _RESERVE) -> int:
    """The most connections to hold open: the open-file limit less `reserve`, at least 1.

    Parameters
    ----------
    reserve : int
        Descriptors left for everything else the server opens.

    Returns
    -------
    int
        ``RLIMIT_NOFILE``'s soft limit minus `reserve`, between 1 and 10,000.
    """
    try:
        import resource
    except ImportError:  # Windows: no descriptor limit to keep below
        return _MAX_CAP
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_CAP
    return max(1, min(_MAX_CAP, soft - reserve))


class RateLimitedLog:
    """Lines said at most once per `interval` seconds; the ones held back are counted.

    ``note(what)`` says ``what`` at once if nothing was said in the last `interval`;
    otherwise it is counted, and one line a little later says how many there were
    (``what (and 4,211 more in 1.0 s)``), so a flood of errors costs a line a second.

    Parameters
    ----------
    say : callable
        Writes one line (default: to stderr, prefixed ``mnist-xp: ``).
    interval : float
        Seconds between lines.
    clock : callable
        The time in seconds (`time.monotonic`; replaceable in tests).
    """

    def __init__(self, say=None, interval: float = 1.0, clock=time.monotonic):
        self.say = say or _say
        self.interval, self.clock = interval, clock
        self.last_said = None
        self.held = 0  # noted since the last line, not yet said
        self.last = ""
        self.total = 0
        self.lines = 0

    def note(self, what: str) -> None:
        """Count `what`, and say it if the last line is at least `interval` old."""
        self.total += 1
        self.last = what
        now = self.clock()
        if self.last_said is None or now - self.last_said >= self.interval:
            self._say(what, now)
        else:
            self.held += 1

    def flush(self) -> None:
        """Say the count held back, if any and if `interval` has passed."""
        now = self.clock()
        if self.held and now - self.last_said >= self.interval:
            self._say(self.last, now)

    def _say(self, what: str, now: float) -> None:
        """One line: `what`, and how many more were held back since the last."""
        more = self.held
        if self.last_said is not None and more:
            what = f"{what} (and {more:,} more in {now - self.last_said:.1f} s)"
        self.held, self.last_said = 0, now
        self.lines += 1
        self.say(what)


def _say(line: str) -> None:
    """One line on stderr, as the command line's diagnostics are."""
    print(f"mnist-xp: {line}", file=sys.stderr, flush=True)


class Connections:
    """The open connections, at most `cap`; the idle ones in the order they went idle.

    A connection is idle (evictable) while it waits on its client: for a request (a new
    connection, or a keep-alive one between requests), for the rest of a head or body
    still arriving, or while the rest of a refused body is read and dropped. A client
    that stalls there holds a descriptor as an idle one does, and would otherwise make
    the cap an outage. It is busy only while it waits on the server's own work (a
    prediction or picture in progress, an answer being written).
    """

    def __init__(self, cap: int):
        self.cap = cap
        self.open = 0
        self.evicted = 0
        self._idle: OrderedDict = OrderedDict()  # key -> transport, oldest first
        self._closing: set = set()  # closed to make room, their handlers not yet done
        # Called when a connection closes or goes idle: the Listener's resume, if it
        # paused because every connection was busy.
        self.on_room = None

    @property
    def full(self) -> bool:
        """Whether accepting one more would exceed the cap (the ones closing not counted)."""
        return self.open - len(self._closing) >= self.cap

    @property
    def over_cap(self) -> bool:
        """Whether more are open than the cap allows (the ones closing not counted)."""
        return self.open - len(self._closing) > self.cap

    def has_idle(self) -> bool:
        """Whether an idle connection is left to close (ones already closing dropped)."""
        while self._idle:
            key = next(iter(self._idle))
            if not self._idle[key].is_closing():
                return True
            del self._idle[key]
        return False

    def opened(self) -> None:
        """Count a newly accepted connection."""
        self.open += 1

    def closed(self, key) -> None:
        """Forget a connection that has closed."""
        self.open -= 1
        self._idle.pop(key, None)
        self._closing.discard(key)
        if self.on_room is not None:
            self.on_room()

    def idle(self, key, transport) -> None:
        """Mark `key` idle (waiting on its client) from now: the newest idle one."""
        self._idle.pop(key, None)
        self._idle[key] = transport
        if self.on_room is not None:
            self.on_room()

    def busy(self, key) -> None:
        """Mark `key` busy (the server is working on its request): not closed to make room."""
        self._idle.pop(key, None)

    def close_oldest_idle(self) -> bool:
        """Close the connection idle the longest; False if none is idle."""
        while self._idle:
            key, transport = self._idle.popitem(last=False)
            if not transport.is_closing():
                # Its reader sees EOF, and its handler ends and calls closed(); the
                # descriptor is released in the loop's next iteration.
                transport.close()
                self._closing.add(key)
                self.evicted += 1
                return True
        return False


class Listener:
    """Accepts connections on `sock` within `connections`' cap; each goes to `on_socket`.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
        The running loop.
    sock : socket.socket
        The listening socket, non-blocking.
    on_socket : callable
        Called with each accepted (non-blocking) socket; must call
        ``connections.idle``/``busy`` as it waits for requests and answers them, and
        ``connections.closed`` when it is done with it.
    connections : Connections
        The count and cap.
    log : RateLimitedLog
        Where accept errors go.
    """

    def __init__(self, loop, sock: socket.socket, on_socket, connections: Connections,
                 log: RateLimitedLog):
        self.loop, self.sock, self.on_socket = loop, sock, on_socket
        self.connections, self.log = connections, log
        connections.on_room = self.room
        self.reading = False
        self.stopped = False
        self._resume_handle = None
        self._flush_handle = None

    def start(self) -> None:
        """Accept whenever the socket is readable."""
        if not self.reading:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.reading = True

    def stop(self) -> None:
        """Stop accepting for good (connections already open are not touched)."""
        self.stopped = True
        if self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False
        for handle in (self._resume_handle, self._flush_handle):
            if handle is not None:
                handle.cancel()

    def room(self) -> None:
        """A connection closed or went idle: resume accepting if the cap had paused it."""
        if not (self.reading or self.stopped) and self._resume_handle is None:
            self.start()

    def _pause(self, seconds: float | None = None) -> None:
        """Stop accepting, until `room` or for `seconds`."""
        if self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False
        if seconds is not None and self._resume_handle is None:
            self._resume_handle = self.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        """The pause after an accept error is over."""
        self._resume_handle = None
        self.room()

    def _accept(self) -> None:
        """Accept what is waiting (a bounded number, to let the loop answer meanwhile)."""
        connections = self.connections
        for _ in range(_ACCEPT_BURST):
            if connections.full and not connections.has_idle():
                # Every connection is busy: new clients wait in the backlog until one
                # finishes or goes idle (room() resumes), rather than be accepted and
                # dropped.
                self._pause()
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # that client gave up while queued: nothing to say
            except OSError as exc:
                self._error(exc)
                return
            conn.setblocking(False)
            connections.opened()
            if connections.over_cap:
                # Room for it: the connection idle the longest is closed (its descriptor
                # is released in the loop's next iteration, hence the small burst).
                connections.close_oldest_idle()
            self.on_socket(conn)

    def _error(self, exc: OSError) -> None:
        """Log an accept error (rate-limited) and make room, or pause briefly."""
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        self.log.note(f"cannot accept connections: {exc.strerror or exc} ({name}); "
                      f"{self.connections.open} open")
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_later(self.log.interval, self._flush)
        if exc.errno in _RESOURCE_ERRORS and not self.connections.close_oldest_idle():
            # Nothing to close: the socket stays readable, so accepting again at once
            # would spin; a short pause lets descriptors free up.
            self._pause(_ACCEPT_PAUSE)

    def _flush(self) -> None:
        """Say the count of accept errors held back, once their second is over."""
        self._flush_handle = None
        self.log.flush()
        if self.log.held:
            self._flush_handle = self.loop.call_later(self.log.interval, self._flush)
