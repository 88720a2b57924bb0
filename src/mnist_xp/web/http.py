"""HTTP/1.1 framing for ``mnist-xp serve``: request heads in, response bytes out.

Everything here is about bytes on the wire and nothing about digits: parsing a request
head (`parse_head`), finding how long its body is (`body_length`, RFC 9112 §6), reading
that body (`read_body`) or draining one that was refused (`discard`), and building
responses (`response`, `error`). A request the client must change raises `ApiError`,
which the server turns into a JSON error answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass, field

from .. import __version__

__all__ = ["MAX_BODY", "MAX_HEAD", "ApiError", "Request", "body_length", "discard", "error",
           "parse_head", "read_body", "read_head", "response"]

#: Largest request body accepted, in bytes (a drawn digit's PNG is a few kB).
MAX_BODY = 5 * 1024 * 1024

#: Longest request line plus headers accepted, in bytes (then 431).
MAX_HEAD = 64 * 1024

#: Seconds a connection may sit idle, or dribble its head or body, before it is closed;
#: bounds what a slow or stalled client can hold.
TIMEOUT = 30

# After refusing a body, read and drop at most this much of it, for at most this many
# seconds, before closing (see `discard`).
_LINGER_BYTES, _LINGER_S = 4 * MAX_BODY, 5.0

# RFC 9110 §5.6.2: a field name (and a method) is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/1\.[0-9]")
# RFC 9110 §5.5: a field value is visible characters, obs-text, spaces and tabs; any
# other control character (a bare CR, a NUL) is refused, not passed on or stripped.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A request target is visible ASCII (RFC 9112 §3.2): no controls, no spaces.
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
# Content-Length is ASCII digits (RFC 9110 §8.6); str.isdigit() would also take "²".
_DIGITS = re.compile(r"[0-9]+")

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            415: "Unsupported Media Type", 422: "Unprocessable Content",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}


class ApiError(Exception):
    """A request the client must change: becomes ``{"error": message}`` with `status`.

    `body_unread`: the body (or part of it) may still be on the wire, so the connection
    is closed after the answer. `retry_after`: seconds for a ``Retry-After`` header (503).
    """

    def __init__(self, status: int, message: str, *, body_unread: bool = False,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.body_unread = body_unread
        self.retry_after = retry_after

    def __reduce__(self):
        # Raised in a picture process, it must arrive whole in the server's.
        return _api_error, (self.status, self.message, self.body_unread, self.retry_after)


def _api_error(status, message, body_unread, retry_after=None) -> ApiError:
    """`ApiError` from its pickled fields."""
    return ApiError(status, message, body_unread=body_unread, retry_after=retry_after)


@dataclass
class Request:
    """A parsed request head: method, target, version and headers (lower-case names)."""

    method: str
    target: str
    version: str
    headers: dict = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.split("?", 1)[0]

    @property
    def close(self) -> bool:
        """Whether the client asked to close the connection after this request."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" not in tokens
        return "close" in tokens


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and header fields from `reader`, up to and including the blank line.

    Read line by line, so that a line ending in a bare LF is seen (and refused) where it
    ends rather than waited past: a client sending LF-only lines gets a 400, not 30 s of
    silence. Lines must end in CRLF (RFC 9112 §2.2 allows a bare LF to be refused; taking
    it here, while a proxy in front splits differently, is how requests get smuggled).

    Raises
    ------
    ApiError
        400 for a line ending in a bare LF; 431 when the head passes `MAX_HEAD` bytes.
    asyncio.IncompleteReadError
        If the client hangs up first.
    """
    lines = []
    size = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ApiError(431, "request headers too large", body_unread=True) from None
        size += len(line)
        if size > MAX_HEAD:
            raise ApiError(431, "request headers too large", body_unread=True)
        if not line.endswith(b"\r\n"):
            raise ApiError(400, "lines must end in CRLF (a bare LF was sent)",
                           body_unread=True)
        lines.append(line)
        if line == b"\r\n":
            return b"".join(lines)


def parse_head(head: bytes) -> Request:
    """The `Request` in `head` (request line and header fields, ending in a blank line).

    Parameters
    ----------
    head : bytes
        The bytes up to and including the first ``\\r\\n\\r\\n``.

    Returns
    -------
    Request

    Raises
    ------
    ApiError
        400 for anything RFC 9112 says to refuse: a request line that is not three
        parts, a version other than HTTP/1.x, a field without a colon, whitespace in or
        after a field name, an obsolete folded line, a control character (bare CR, LF,
        NUL) in the target or a field value, an HTTP/1.1 request without exactly one
        ``Host`` (RFC 9112 §3.2), or conflicting ``Content-Length`` values. The
        connection must then be closed: its framing is unknown.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise ApiError(400, "malformed request line", body_unread=True)
    method, target, version = parts
    if _BAD_TARGET.search(target):
        raise ApiError(400, "malformed request target", body_unread=True)
    if not _VERSION.fullmatch(version):
        raise ApiError(400, "only HTTP/1.x is spoken here (a malformed request for this "
                            "server)", body_unread=True)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        # No whitespace in or before the colon (RFC 9112 §5.1), no folded lines (§5.2):
        # servers that read such fields differently are how requests get smuggled.
        if not sep or not _TOKEN.fullmatch(name):
            raise ApiError(400, "malformed header field", body_unread=True)
        name, value = name.lower(), value.strip(" \t")
        # A CR or LF inside a value would end the field for another parser (a
        # smuggled Transfer-Encoding); a NUL ends C strings.
        if _BAD_VALUE.search(value):
            raise ApiError(400, "control character in a header field", body_unread=True)
        if name == "host" and name in headers:
            raise ApiError(400, "more than one Host header", body_unread=True)
        if name in headers:
            if name == "content-length":
                if value != headers[name]:
                    raise ApiError(400, "conflicting Content-Length headers",
                                   body_unread=True)
                continue
            headers[name] += ", " + value  # RFC 9110 §5.3: one list
        else:
            headers[name] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise ApiError(400, "HTTP/1.1 requests need a Host header", body_unread=True)
    return Request(method, target, version, headers)


def body_length(request: Request) -> int:
    """The length of `request`'s body (0 for none), as RFC 9112 §6.3 decides it.

    Raises
    ------
    ApiError
        411 for a chunked body or a POST without ``Content-Length``, 400 for a length
        that is not ASCII digits (or a list of differing ones), 413 above `MAX_BODY`.
    """
    headers = request.headers
    if "transfer-encoding" in headers:
        raise ApiError(411, "send the body with a Content-Length, not chunked",
                       body_unread=True)
    length = headers.get("content-length")
    if length is None:
        if request.method == "POST":
            raise ApiError(411, "a Content-Length header is required")
        return 0
    # "5, 5" (one field repeated by a proxy) may be taken as 5 (RFC 9112 §6.3 item 5).
    values = {v.strip(" \t") for v in length.split(",")}
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise ApiError(400, "Content-Length is not a whole number", body_unread=True)
    n = int(values.pop())
    if n > MAX_BODY:
        raise ApiError(413, f"body of {n} bytes is too large; the limit is "
                            f"{MAX_BODY // (1024 * 1024)} MB", body_unread=True)
    return n


async def read_body(request: Request, reader: asyncio.StreamReader) -> bytes:
    """`request`'s body from `reader` (raises `ApiError` as `body_length` does).

    Raises ``asyncio.IncompleteReadError`` if the client hangs up first, and
    ``asyncio.TimeoutError`` if it sends too slowly (`TIMEOUT` for the whole body).
    """
    n = body_length(request)
    return await asyncio.wait_for(reader.readexactly(n), TIMEOUT) if n else b""


async def discard(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client still sends, for a while, before closing.

    Closing a socket with unread data in it makes the kernel send a reset, which can
    destroy the answer before a client that is still uploading reads it (an oversized
    body sent whole, say). The refusal has been sent; this lets it arrive.
    """
    loop = asyncio.get_running_loop()
    left, deadline = _LINGER_BYTES, loop.time() + _LINGER_S
    with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
        while left > 0:
            wait = deadline - loop.time()
            if wait <= 0:
                break
            chunk = await asyncio.wait_for(reader.read(1 << 16), wait)
            if not chunk:
                break
            left -= len(chunk)


def response(status: int, body: bytes, content_type: str = "application/json", *,
             close: bool = False, head_only: bool = False, extra: str = "") -> bytes:
    """The bytes of one HTTP/1.1 response.

    Parameters
    ----------
    status : int
        The status code.
    body : bytes
        The body; its length is sent even for HEAD (`head_only`), which omits it.
    content_type : str
        The ``Content-Type``.
    close : bool
        Add ``Connection: close``.
    head_only : bool
        Leave the body out (an answer to HEAD).
    extra : str
        More header lines, each ending in ``\\r\\n``.
    """
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Server: mnist-xp/{__version__}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n"
            f"Cache-Control: no-store\r\n{extra}"
            f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
            ).encode("latin-1") + (b"" if head_only else body)


def error(status: int, message: str, *, retry_after: int | None = None, **kw) -> bytes:
    """A JSON error response ``{"error": message}`` (keywords as `response`'s)."""
    if retry_after is not None:
        kw["extra"] = kw.get("extra", "") + f"Retry-After: {retry_after}\r\n"
    return response(status, json.dumps({"error": message}).encode(), **kw)
