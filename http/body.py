"""Request bodies (RFC 9112 §6, §7.1), sans-I/O: Content-Length or chunked.

``BodyReader`` takes the bytes that follow a request head, in whatever pieces
they arrive, and says when the body is complete: ``feed(buf, pos, end)``
consumes what belongs to the body and returns the position after it (the
next pipelined request starts there once ``done``). Limits are enforced as
the bytes arrive, before anything past them is buffered:

- the body (de-chunked) may not exceed ``max_size``: 413, raised by the
  constructor already when Content-Length announces more;
- a chunk-size line (size, extensions) may not exceed MAX_CHUNK_LINE: 400;
- the trailer section may not exceed MAX_TRAILERS bytes: 431; trailers are
  read and discarded (§7.1.2: a recipient may ignore them);
- a size that is not hex, a chunk not followed by CRLF, a bare CR: 400.
Line ends are CRLF, or a bare LF (§2.2, as for the head).

After any HttpError the stream has lost its framing: the glue answers and
closes. Every buffer and position stays inside ``buf[pos:end]``: a line is
searched in place (bytes and bytearray have ``find``), never copied whole.
"""

from __future__ import annotations

from .. import rfc9110
from .request import MAX_FIELDS_SIZE, HttpError

# A chunk-size line: up to 16 hex digits plus extensions (§7.1.1), which are
# skipped. 4 KiB is far more than any client sends (nginx allows a 1 KiB line).
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = MAX_FIELDS_SIZE  # the same bound as the head's field section
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_HEX_DIGITS = 16  # past 16 significant hex digits a size is beyond 2**63 anyway

# States of the chunked decoder.
_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)


class BodyReader:
    """One request body; ``body`` holds it (bytes) once ``done``."""

    __slots__ = ("max_size", "chunked", "remaining", "parts", "size", "state", "line", "done")

    def __init__(self, length: int | None, chunked: bool, max_size: int) -> None:
        if length is not None and length > max_size:
            raise HttpError(413, f"request body over {max_size} bytes")  # before reading it
        self.max_size = max_size
        self.chunked = chunked
        self.remaining = 0 if chunked else (length or 0)  # of the body, or of this chunk
        self.parts: list[bytes] = []
        self.size = 0  # de-chunked bytes announced so far
        self.state = _SIZE if chunked else _DATA
        self.line = bytearray()  # a chunk-size line or the trailers, while incomplete
        self.done = not chunked and not length

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)

    def feed(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        """Consume body bytes from ``buf[pos:end]``; return where the body's
        bytes end in it (``end`` while more is needed)."""
        while pos < end and not self.done:
            state = self.state
            if state == _DATA:
                pos = self._data(buf, pos, end)
            elif state == _SIZE:
                pos = self._size_line(buf, pos, end)
            elif state == _DATA_END:
                pos = self._data_end(buf, pos, end)
            else:
                pos = self._trailers(buf, pos, end)
        return pos

    def _data(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        take = min(self.remaining, end - pos)
        self.parts.append(bytes(buf[pos : pos + take]))
        self.remaining -= take
        if not self.remaining:
            if self.chunked:
                self.state = _DATA_END
            else:
                self.done = True
        return pos + take

    def _line(self, buf: bytes | bytearray, pos: int, end: int, limit: int, status: int) -> int:
        """Gather up to a LF into ``line``; -1 while it is still incomplete.
        The search never looks further than the limit allows."""
        window = min(end, pos + limit - len(self.line) + 1)
        newline = buf.find(b"\n", pos, window)
        stop = window if newline < 0 else newline + 1
        self.line += buf[pos:stop]
        if len(self.line) > limit:
            raise HttpError(status, "chunk line too long" if status == 400 else "trailers too long")
        return stop if newline >= 0 else -1

    def _size_line(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        stop = self._line(buf, pos, end, MAX_CHUNK_LINE, 400)
        if stop < 0:
            return end
        line = _without_line_end(self.line)
        self.line.clear()
        size = _chunk_size(line)
        if self.size + size > self.max_size:
            raise HttpError(413, f"request body over {self.max_size} bytes")
        self.size += size
        if size:
            self.remaining, self.state = size, _DATA
        else:
            self.state = _TRAILERS  # the last chunk: trailers (or none) and a blank line
        return stop

    def _data_end(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        """The CRLF after a chunk's data (a bare LF is tolerated, as for lines)."""
        byte = buf[pos]
        if byte == 10 or (byte == 13 and not self.line):  # LF, or the CR of CRLF
            if byte == 10:
                self.line.clear()
                self.state = _SIZE
            else:
                self.line.append(13)
            return pos + 1
        raise HttpError(400, "chunk data not followed by CRLF")

    def _trailers(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        """Trailer fields, discarded, up to the blank line that ends the message."""
        stop = self._line(buf, pos, end, MAX_TRAILERS, 431)
        if stop < 0:
            return end
        lines = self.line  # every trailer line so far: the bound counts them all
        if lines in (b"\n", b"\r\n") or lines.endswith((b"\n\n", b"\n\r\n")):
            lines.clear()  # the empty line that ends the message
            self.done = True
        return stop


def _without_line_end(line: bytearray) -> bytes:
    """The line without its CRLF or LF; a CR anywhere else is an error."""
    text = bytes(line[:-2] if line.endswith(b"\r\n") else line[:-1])
    if b"\r" in text:
        raise HttpError(400, "bare CR in chunk line")
    return text


def _chunk_size(line: bytes) -> int:
    """chunk-size [ chunk-ext ] (§7.1.1): hex digits, then extensions (skipped)."""
    digits = line.split(b";", 1)[0].rstrip(b" \t")  # BWS before ";" (§7.1.1)
    if not digits or not set(digits) <= _HEX:
        raise HttpError(400, "invalid chunk size")
    significant = digits.lstrip(b"0")
    if len(significant) > _MAX_HEX_DIGITS:
        return rfc9110.BEYOND_ANY_LENGTH  # past any max_size: 413
    return int(significant or b"0", 16)
