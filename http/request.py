"""Incremental HTTP/1.x request-head parser (sans-I/O).

Bytes in, a `Request` out; no sockets, clocks or logging. Usage by the glue:

    parser = RequestParser()                      # one per connection (2 small ints)
    request, pos = parser.parse(buf, start, end)  # raises HttpError
    # request is None: keep buf[start:end] (e.g. in a bytearray), call again with more
    # else: the head is buf[start:pos]; pipelined bytes from pos on are untouched

The parser remembers how far it already searched for the blank line that ends
the head and whether the request line was already checked, so a head arriving
one byte at a time is scanned once, not once per byte.

Choices (RFC 9112 unless noted):
- Line endings: CRLF, and a bare LF is tolerated as a line terminator (§2.2
  "MAY recognize a single LF"); a bare CR anywhere else is rejected with 400.
- Up to MAX_LEADING_EMPTY bytes of empty lines before the request line are
  skipped (§2.2) and counted as part of the consumed head.
- Only GET and HEAD exist here; other well-formed methods -> 405 (with Allow);
  a method longer than any registered one -> 501 (§3).
- Request bodies are refused: a static server has no use for them. Any
  Content-Length > 0 or a Transfer-Encoding -> 413; Transfer-Encoding together
  with Content-Length, or on HTTP/1.0, -> 400 (§6.1, §6.3: a smuggling
  signature). Content-Length: 0 is accepted.
- ``BodyRequestParser`` (for an application's HTTP endpoints) also accepts
  POST, PUT, PATCH, DELETE and OPTIONS, and bodies framed by one
  Content-Length or by ``Transfer-Encoding: chunked`` (``body_framing``; the
  glue reads them with http/body.py). The smuggling signatures stay 400, and
  so does a repeated Content-Length; another transfer coding is 501 (§6.1).
- After ANY HttpError the byte stream can no longer be trusted to be framed:
  the glue answers with `Connection: close` and closes.
- Speed: the common head is read by one C call (http/csrc/head.c, cffi) that
  declines everything else; Python then parses it as if the scanner were
  absent, so the scanner never changes an answer (tests hold it to that).
- Fail fast: while the head is incomplete, the partial request line is
  checked, so a binary first byte (TLS ClientHello 0x16 0x03 ...) or garbage
  is a 400 at once and an over-long target is a 414 after 8 KiB, not 16 KiB.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import rfc9110
from ..native import Switch

try:  # the common-case scanner in C (http/csrc/head.c), built by pip install
    from ._speedups import ffi as _ffi
    from ._speedups import lib as _lib
except ImportError:  # no compiled module: the regex fast path below does it all
    _ffi = _lib = None

# Limits. Each is enforced while the head is still incomplete, so a client
# can never make the glue buffer more than about MAX_TARGET + MAX_FIELDS_SIZE.
MAX_TARGET = 8192  # RFC 9112 §3 recommends supporting >= 8000 octets; nginx's default is 8 KiB.
MAX_FIELDS_SIZE = 16384  # field section incl. its blank line; nginx/h11 use 8-16 KiB.
MAX_FIELDS = 100  # more fields than any browser sends (~20); bounds the per-request work.
MAX_METHOD = 24  # the longest registered method (UPDATEREDIRECTREF) is 17 octets.
MAX_LEADING_EMPTY = 64  # §2.2 asks to skip "at least one" stray CRLF; a flood is garbage.
# method SP target SP "HTTP/d.d" CR: the longest request line we might accept.
MAX_REQUEST_LINE = MAX_METHOD + 1 + MAX_TARGET + 1 + 8 + 1
# Copy windows for buffers without .find (memoryview): most heads fit in the first;
# the second holds the longest acceptable head plus one byte, so past it we raise.
_FIRST_COPY = 4096
_WHOLE_COPY = MAX_LEADING_EMPTY + MAX_REQUEST_LINE + MAX_FIELDS_SIZE + 1

ALLOWED_METHODS = ("GET", "HEAD")
ALLOW_HEADER = (("Allow", "GET, HEAD"),)  # RFC 9110 §15.5.6: 405 MUST carry Allow.
# What an application's on_request may be asked (BodyRequestParser).
ENDPOINT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ENDPOINT_ALLOW = (("Allow", ", ".join(ENDPOINT_METHODS)),)

_TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# bytes.translate(None, _TCHARS) leaves the bytes that are NOT token chars (RFC 9110 §5.6.2).
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# One field line (RFC 9110 §5.5, RFC 9112 §5): token ":" OWS value OWS, value without
# CTLs except HTAB (obs-text 0x80-0xFF allowed). Anchored at line starts, so a line that
# is not a valid field never matches and the match count exposes it.
# The value group excludes the trailing OWS (alternating runs of visible chars and
# blanks). Possessive quantifiers keep it linear: with plain ones a 16 KiB run of blanks
# followed by a bad byte backtracks quadratically (measured 5 s).
_FIELD_RE = re.compile(
    r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]++):[ \t]*+"
    r"((?:[^\x00-\x20\x7f]++(?:[ \t]++[^\x00-\x20\x7f]++)*+)?)[ \t]*+\r?\n",
    re.M,
)
# The usual request line; anything else (other methods, absolute-form, other versions,
# errors) goes through the slow path, which diagnoses precisely.
_FAST_LINE_RE = re.compile(
    r"(GET|HEAD) (/[\x21-\x7e]{0," + str(MAX_TARGET - 1) + r"}) HTTP/1\.([01])\r?\n"
)
_VERSION_RE = re.compile(r"HTTP/([0-9])\.([0-9])")
_FAST_VERSIONS = {"HTTP/1.1": (1, 1), "HTTP/1.0": (1, 0)}
_EMPTY_LINES_RE = re.compile(rb"(?:\r?\n)*")
_BLANK_LINE_SEARCH = re.compile(rb"\n\r?\n").search  # the end of a head (RFC 9112 §2.2)
_HOST_CHARS = r"[A-Za-z0-9\-._~!$&'()*+,;=%:\[\]]*"  # RFC 3986 §3.2.2 host [":" port]
_HOST_RE = re.compile(_HOST_CHARS)
_HOST_LINE_RE = re.compile(r"\n(?i:host):[ \t]*" + _HOST_CHARS + r"[ \t]*\r?\n")
_CR, _LF = 13, 10

# What reads the common head: the C scanner in front of the regex path while
# switch.active is "c" (built), the regex path alone while it is "python".
switch = Switch("reactor.http._speedups", lambda: _lib)
_scan_head: Any = None  # kept on the C scanner by the switch while C runs
switch.bind(globals(), "_scan_head", "http_scan_head")
use = switch.use  # tests and benchmarks compare the two
if _lib is not None:
    _SCAN_INFO = _ffi.new("int32_t[2]")  # method, minor version
    _SCAN_INFO_VIEW = memoryview(_ffi.buffer(_SCAN_INFO)).cast("i")
    # The pieces of an accepted head (target, names, values, a separator
    # each) never outgrow the head, which MAX_TARGET and MAX_FIELDS_SIZE bound.
    _SCAN_PIECES_SIZE = MAX_REQUEST_LINE + MAX_FIELDS_SIZE
    _SCAN_PIECES = _ffi.new("unsigned char[]", _SCAN_PIECES_SIZE)
    _SCAN_PIECES_VIEW = memoryview(_ffi.buffer(_SCAN_PIECES))


_SCANNED_METHODS = ("GET", "HEAD")
_SCANNED_VERSIONS = ((1, 0), (1, 1))
_SEARCHABLE = (bytes, bytearray)  # have .find(sub, start, end); others are copied


class HttpError(Exception):
    """A request answered with `status` (see error_response). `headers` are extra
    response headers the answer must carry (e.g. Allow on 405, Location on 301).
    Raised by the parser, the connection must close afterwards (framing is lost);
    raised by static.resolve, the request was well framed and may keep alive."""

    def __init__(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


@dataclass(slots=True, eq=False, repr=False)
class Request:
    """A parsed request head. Header names are lowercased, values are latin-1 str
    with surrounding whitespace removed; repeated fields are kept in order."""

    method: str
    target: str
    http_version: tuple[int, int]
    headers: list[tuple[str, str]]

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.target!r}, {self.http_version!r}, {self.headers!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's value; repeated lines are joined with ", " (RFC 9110 §5.3)."""
        name = name.lower()
        values = [v for n, v in self.headers if n == name]
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def tokens(self, name: str) -> list[str]:
        """Lowercased comma-list members of every `name` line (e.g. Connection)."""
        return [member.lower() for member in rfc9110.list_members(self.get_all(name))]

    @property
    def keep_alive(self) -> bool:
        """RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive"."""
        for name, _ in self.headers:
            if name == "connection":
                break
        else:  # the common case, answered without building token lists
            return self.http_version >= (1, 1)
        tokens = self.tokens("connection")
        if "close" in tokens:
            return False
        return self.http_version >= (1, 1) or "keep-alive" in tokens

    @property
    def wants_upgrade(self) -> bool:
        """The client asks for a WebSocket (Upgrade: websocket, RFC 6455 §4.1);
        the handshake validator checks the rest."""
        listed = False
        for name, value in self.headers:  # the usual single value, without token lists
            if name == "upgrade":
                if value.lower() == "websocket":
                    return True
                listed = True
        return listed and "websocket" in self.tokens("upgrade")


class RequestParser:
    """Per-connection parser state between calls for one head: how far the
    blank-line search got, and where the (already validated) request line ends.
    Both are offsets from `start`, so the glue may either keep `start` or drop
    consumed bytes from its buffer."""

    __slots__ = ("_scanned", "_line_end")
    bodies = False  # see BodyRequestParser

    def __init__(self) -> None:
        self._scanned = 0  # bytes after `start` known to hold no head terminator
        self._line_end = -1  # offset of the request line's LF once validated, else -1

    def parse(self, buf, start: int = 0, end: int | None = None) -> tuple[Request | None, int]:
        """Parse one request head from buf[start:end].

        Returns (request, next_pos) with next_pos just past the head, or
        (None, start) when more bytes are needed (nothing consumed: call again
        with the same `start` and a larger `end`). Raises HttpError.
        bytes/bytearray are searched in place; another buffer (memoryview) is
        first copied, bounded by the longest head we accept.
        """
        if end is None:
            end = len(buf)
        if not isinstance(buf, _SEARCHABLE):
            return self._parse_copy(buf, start, end)
        pos = start
        if pos < end and (buf[pos] == _CR or buf[pos] == _LF):
            pos = _skip_empty_lines(buf, pos, end)
        head_end = _find_head_end(buf, max(pos, start + self._scanned - 2), end)
        if head_end < 0:
            self._scanned = end - start
            self._check_incomplete(buf, start, pos, end)
            return None, start
        self._scanned, self._line_end = 0, -1
        return _build_request(buf, pos, head_end, self.bodies), head_end

    def _check_incomplete(self, buf, start: int, pos: int, end: int) -> None:
        """Raise as soon as the bytes so far cannot start an acceptable head."""
        if self._line_end < 0:
            line_end = buf.find(b"\n", pos, min(end, pos + MAX_REQUEST_LINE + 1))
            if line_end < 0:
                _check_partial_line(bytes(buf[pos : min(end, pos + MAX_REQUEST_LINE + 1)]))
                return
            _parse_request_line(_strip_cr(str(buf[pos:line_end], "latin-1")))
            self._line_end = line_end - start
        if end - (start + self._line_end + 1) > MAX_FIELDS_SIZE:
            raise HttpError(431, "header fields too large")

    def _parse_copy(self, buf, start: int, end: int) -> tuple[Request | None, int]:
        """Copy a small window first: with many pipelined requests in one read,
        copying the whole bounded window per request would be quadratic."""
        for window in (_FIRST_COPY, _WHOLE_COPY):
            stop = min(end, start + window)
            request, pos = self.parse(bytes(buf[start:stop]))
            if request is not None:
                return request, start + pos
            if stop == end:
                break
        return None, start  # (past _WHOLE_COPY the parse above has raised)


class BodyRequestParser(RequestParser):
    """A parser for an application's endpoints: the ENDPOINT_METHODS, and
    bodies (``body_framing`` says how the one after the head is framed)."""

    __slots__ = ()
    bodies = True


def _skip_empty_lines(buf, pos: int, end: int) -> int:
    skipped = _EMPTY_LINES_RE.match(buf, pos, end).end()
    if skipped - pos > MAX_LEADING_EMPTY:
        raise HttpError(400, "too many empty lines before the request line")
    return skipped


def _find_head_end(buf, scan: int, end: int) -> int:
    """Index just past the first empty line (CRLF or bare LF), or -1.
    One regex search: measured 2-3x faster than two bytes.find calls."""
    match = _BLANK_LINE_SEARCH(buf, scan, end)
    return -1 if match is None else match.end()


# --- incomplete head: fail fast -------------------------------------------------------


def _check_partial_line(line: bytes) -> None:
    if line == b"\r":  # a CR whose LF has not arrived yet
        return
    method, sp, rest = line.partition(b" ")
    _check_partial_method(method, bool(sp))
    if not sp:
        return
    target, sp, version = rest.partition(b" ")
    if len(target) > MAX_TARGET:
        raise HttpError(414, "request target too long")
    if target.translate(None, _VISIBLE_ASCII):
        raise HttpError(400, "invalid character in request target")
    if sp and not _could_be_version(version):
        raise HttpError(400, "malformed HTTP version")
    if len(line) > MAX_REQUEST_LINE:
        raise HttpError(400, "request line too long")


def _check_partial_method(method: bytes, complete: bool) -> None:
    if method.translate(None, _TCHARS) or (complete and not method):
        raise HttpError(400, "not an HTTP request")  # binary, TLS, garbage
    if len(method) > MAX_METHOD:
        raise HttpError(501, "method too long")  # RFC 9112 §3: longer than any we implement


def _could_be_version(partial: bytes) -> bool:
    """Whether `partial` can still grow into HTTP/d.d (optionally + CR)."""
    if len(partial) <= 5:
        return b"HTTP/".startswith(partial)
    padded = partial + b"1.1\r"[len(partial) - 5 :]
    return len(partial) <= 9 and bool(_VERSION_RE.fullmatch(_strip_cr(padded.decode("latin-1"))))


_VISIBLE_ASCII = bytes(range(0x21, 0x7F))


# --- complete head ---------------------------------------------------------------------


def _build_request(buf, pos: int, head_end: int, bodies: bool = False) -> Request:
    """The common case in one C call (``_scanned_request``) or, without the
    build or for anything it declines, a few regex calls; anything unusual
    takes the slow path, which accepts exactly the same heads and explains
    what is wrong."""
    head = buf[pos:head_end]  # bytes or bytearray, like buf
    if _scan_head is not None:
        request = _scanned_request(head if type(head) is bytes else bytes(head))
        if request is not None:
            return request
    text = head.decode("latin-1")
    line = _FAST_LINE_RE.match(text)
    if line is None:
        return _build_request_slow(text, bodies)
    fields = text[line.end() :]
    pairs = _FIELD_RE.findall(fields)
    if len(pairs) != fields.count("\n") - 1 or len(pairs) > MAX_FIELDS:
        return _build_request_slow(text, bodies)
    if len(fields) > MAX_FIELDS_SIZE:
        raise HttpError(431, "header fields too large")
    request = Request(line[1], line[2], (1, 1) if line[3] == "1" else (1, 0), None)
    request.headers = [(name.lower(), value) for name, value in pairs]
    # Every line is a valid field here, so "\nhost:" counts Host fields exactly.
    lowered = text[line.end() - 1 :].lower()
    if "content-length" in lowered or "transfer-encoding" in lowered:
        _check_semantics(request, bodies)
    elif lowered.count("\nhost:") != 1 or not _HOST_LINE_RE.search(text):
        _check_semantics(request, bodies)
    return request


def _scanned_request(head: bytes) -> Request | None:
    """The C scanner's reading of the common case: the Request the regex path
    below would build, in about half the time; None for anything else."""
    size = _scan_head(
        head, len(head), MAX_TARGET, MAX_FIELDS, MAX_FIELDS_SIZE,
        _SCAN_INFO, _SCAN_PIECES, _SCAN_PIECES_SIZE,
    )  # fmt: skip
    if size < 0:
        return None
    info = _SCAN_INFO_VIEW
    pieces = str(_SCAN_PIECES_VIEW[: size - 1], "latin-1").split("\0")
    request = Request(_SCANNED_METHODS[info[0]], pieces[0], _SCANNED_VERSIONS[info[1]], None)
    it = iter(pieces)
    next(it)
    request.headers = list(zip(it, it))  # noqa: B905 (name, value) pairs
    return request


def _build_request_slow(text: str, bodies: bool = False) -> Request:
    line_end = text.find("\n")
    method, target, version = _parse_request_line(_strip_cr(text[:line_end]))
    request = Request(method, target, version, _parse_fields(text[line_end + 1 :]))
    _check_semantics(request, bodies)
    return request


def _strip_cr(line: str) -> str:
    return line[:-1] if line[-1:] == "\r" else line


def _parse_request_line(line: str) -> tuple[str, str, tuple[int, int]]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version_text = parts
    if method == "PRI" and target == "*" and version_text == "HTTP/2.0":
        raise HttpError(400, "HTTP/2 connection preface on an HTTP/1.1 port")
    if not _TOKEN_RE.fullmatch(method):
        raise HttpError(400, "invalid method")
    if len(method) > MAX_METHOD:
        raise HttpError(501, "method too long")
    _check_target(target)
    return method, target, _parse_version(version_text)


def _check_target(target: str) -> None:
    if len(target) > MAX_TARGET:
        raise HttpError(414, "request target too long")
    # RFC 9112 §3.2: the target is visible ASCII; the SP split already removed spaces.
    if not target or not (target.isascii() and target.isprintable()):
        raise HttpError(400, "invalid request target")


def _parse_version(text: str) -> tuple[int, int]:
    version = _FAST_VERSIONS.get(text)
    if version is not None:
        return version
    match = _VERSION_RE.fullmatch(text)  # RFC 9112 §2.3: HTTP/DIGIT.DIGIT, case-sensitive
    if match is None:
        raise HttpError(400, "malformed HTTP version")
    major, minor = int(match[1]), int(match[2])
    if major != 1:
        raise HttpError(505, f"HTTP/{major}.{minor} not supported")
    return (1, minor)  # a higher 1.x minor speaks at least 1.1 (RFC 9110 §2.5)


def _parse_fields(fields: str) -> list[tuple[str, str]]:
    """`fields` runs from the line after the request line through the blank line."""
    if len(fields) > MAX_FIELDS_SIZE:
        raise HttpError(431, "header fields too large")
    pairs = _FIELD_RE.findall(fields)
    if len(pairs) != fields.count("\n") - 1:
        raise HttpError(400, _diagnose_fields(fields))
    if len(pairs) > MAX_FIELDS:
        raise HttpError(431, "too many header fields")
    return [(name.lower(), value) for name, value in pairs]


def _diagnose_fields(fields: str) -> str:
    """A precise reason for the first invalid field line (error path only)."""
    for line in fields.split("\n")[:-2]:
        if not _FIELD_RE.fullmatch(line + "\n"):
            return _field_line_problem(_strip_cr(line))
    return "malformed header field"


def _field_line_problem(line: str) -> str:
    name, colon, _ = line.partition(":")
    if line[:1] in (" ", "\t"):
        return "obsolete line folding in header field"  # RFC 9112 §5.2
    if not colon:
        return "header field without a colon"
    if name[-1:] in (" ", "\t"):
        return "whitespace before colon in header field"  # RFC 9112 §5.1
    if not _TOKEN_RE.fullmatch(name):
        return "invalid character in header field name"
    return "invalid character in header field value"  # CTL, NUL, bare CR


def _check_semantics(request: Request, bodies: bool = False) -> None:
    """Host, method and framing rules that need the whole head."""
    hosts = request.get_all("host")
    if len(hosts) > 1 or (not hosts and request.http_version >= (1, 1)):
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host")  # RFC 9112 §3.2
    if hosts and not _HOST_RE.fullmatch(hosts[0]):
        raise HttpError(400, "invalid Host")
    if bodies:
        if request.method not in ENDPOINT_METHODS:
            raise HttpError(405, f"method {request.method} not allowed", ENDPOINT_ALLOW)
        body_framing(request)
        return
    if request.method not in ALLOWED_METHODS:
        raise HttpError(405, f"method {request.method} not allowed", ALLOW_HEADER)
    _check_no_body(request)


def body_framing(request: Request) -> tuple[int | None, bool]:
    """(Content-Length or None, chunked) of the body after this head (RFC 9112
    §6.3); raises HttpError for framing that cannot be trusted: both fields,
    chunked on HTTP/1.0, a repeated Content-Length (400), another transfer
    coding (501)."""
    for name, _ in request.headers:
        if name == "content-length" or name == "transfer-encoding":
            break
    else:  # the common case, answered without building lists
        return None, False
    transfer_encoding = request.get_all("transfer-encoding")
    lengths = request.get_all("content-length")
    if transfer_encoding and (lengths or request.http_version < (1, 1)):
        raise HttpError(400, "ambiguous message framing")  # RFC 9112 §6.1, §6.3
    if transfer_encoding:
        codings = [coding.lower() for coding in rfc9110.list_members(transfer_encoding)]
        if codings[-1:] != ["chunked"]:
            raise HttpError(400, "chunked is not the final transfer coding")  # §6.3
        if len(codings) > 1:
            raise HttpError(501, f"transfer coding {codings[0]} not implemented")
        return None, True
    if len(lengths) > 1 or (lengths and "," in lengths[0]):
        raise HttpError(400, "duplicate Content-Length")
    return _content_length(lengths), False


def _check_no_body(request: Request) -> None:
    transfer_encoding = request.get_all("transfer-encoding")
    length = _content_length(request.get_all("content-length"))
    if transfer_encoding and (length is not None or request.http_version < (1, 1)):
        raise HttpError(400, "ambiguous message framing")  # RFC 9112 §6.1, §6.3
    if transfer_encoding or length:
        raise HttpError(413, "request content is not accepted")


def _content_length(values: list[str]) -> int | None:
    """RFC 9110 §8.6: 1*DIGIT; repeated identical values may be merged."""
    if not values:
        return None
    members = set(rfc9110.list_members(values))
    if len(members) != 1:
        raise HttpError(400, "conflicting Content-Length")
    length = rfc9110.digits(members.pop())
    if length is None:
        raise HttpError(400, "invalid Content-Length")
    return length
