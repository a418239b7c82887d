"""RFC 6455 §5 framing: parse client frames, build server frames.

Reading (server side, so every frame must be masked):

- ``parse_frame(buf, pos, max_size=...)`` is the pure-Python reference: one
  frame, ``(None, pos)`` while incomplete (nothing consumed), violations raise
  ``ProtocolError(close_code, reason)``. The payload is unmasked IN PLACE when
  ``buf`` is writable (the receive buffer is scratch space), else in a copy.
- ``scan_frames(buf, start, end, max_size=...)`` is the hot path: every complete
  frame of a window in ONE C call (ws/csrc/frames.c), returned as a flat list
  of descriptors ``[kind, payload_start, payload_end, ...]``; ``kind`` is the
  frame's first byte (FIN | RSV1 | opcode) or ``-error`` (see ``HEADER_ERRORS``) for a
  violation, which is always the last descriptor. Without the compiled module
  it runs ``parse_frame`` in a loop, and the tests hold both to the same output.

Checks, in this order, each as soon as the bytes proving it have arrived:
RSV bits (only those of a negotiated extension, ``rsv``: RSV1 for
permessage-deflate), reserved opcodes, FIN on control frames, RSV1 only on the
first frame of a data message (RFC 7692 §6), mask bit, control payload
<= 125, 64-bit length MSB, data frame length <= max_size (1009, before any
payload is buffered). Non-minimal length
encodings (a short length sent in the 16- or 64-bit form) are TOLERATED, as
Autobahn|Testsuite and most servers do: the length is unambiguous either way.

Writing: ``serialize_frame`` (server frames are never masked, §5.1),
``serialize_masked_frame`` for clients and tests, and close payload helpers.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import native
from . import unmask as _unmask

# Opcodes, RFC 6455 §5.2 / §11.8.
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_KNOWN_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})

FIN = 0x80  # §5.2: first header byte, final fragment flag
RSV1 = 0x40  # §5.2; RFC 7692 §6: "compressed message" with permessage-deflate
_RSV_BITS = 0x70  # §5.2: RSV1-3
_CONTROL_BIT = 0x08  # §5.5: opcodes 0x8-0xF are control frames
_MASK_BIT = 0x80  # §5.2: second header byte

MAX_CONTROL_PAYLOAD = 125  # §5.5: control frames carry at most 125 bytes
MAX_HEADER_SIZE = 14  # §5.2: 2 + 8 (64-bit length) + 4 (masking key)
MAX_CLOSE_REASON = 123  # §5.5.1: 125 minus the 2-byte status code
MAX_PAYLOAD_LENGTH = (1 << 63) - 1  # §5.2: the 64-bit length's MSB must be 0

# Close status codes, RFC 6455 §7.4.1.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # reported locally, never sent (§7.4.1)
CLOSE_ABNORMAL = 1006  # reported locally, never sent (§7.4.1)
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011


def is_valid_close_code(code: int) -> bool:
    """Codes an endpoint may put on the wire (§7.4.1, §7.4.2): the defined
    1000-1003 and 1007-1011, and 3000-4999 (registered / private use). 1004,
    1005, 1006, 1015 and the other unassigned codes are protocol errors."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999


class ProtocolError(Exception):
    """A peer violated RFC 6455; ``close_code`` is the answer to send."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(close_code, reason)
        self.close_code = close_code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.close_code}: {self.reason}"


class FrameHeaderError(ProtocolError):
    """A header violation; ``number`` is its index in ``HEADER_ERRORS``."""

    def __init__(self, number: int) -> None:
        super().__init__(*HEADER_ERRORS[number])
        self.number = number


# Header violations. The scanner reports them as `enum ws_frame_error` numbers
# (ws/csrc/frames.h), read from the build; the Python scanner, which must work
# without it, numbers them 1..7 in the same order.
_ERROR_NAMES = (
    "RSV",
    "OPCODE",
    "CONTROL_FRAGMENTED",
    "UNMASKED",
    "CONTROL_TOO_LONG",
    "LENGTH_MSB",
    "TOO_BIG",
    "RSV1_MISPLACED",
)
_ERROR_NUMBERS = (
    tuple(getattr(native.lib, "WS_ERR_" + name) for name in _ERROR_NAMES)
    if native.BUILT
    else tuple(range(1, len(_ERROR_NAMES) + 1))
)
(
    _ERR_RSV,
    _ERR_OPCODE,
    _ERR_CONTROL_FRAGMENTED,
    _ERR_UNMASKED,
    _ERR_CONTROL_TOO_LONG,
    _ERR_LENGTH_MSB,
    _ERR_TOO_BIG,
    _ERR_RSV1_MISPLACED,
) = _ERROR_NUMBERS
HEADER_ERRORS: dict[int, tuple[int, str]] = {
    _ERR_RSV: (CLOSE_PROTOCOL_ERROR, "reserved bits set without a negotiated extension"),
    _ERR_OPCODE: (CLOSE_PROTOCOL_ERROR, "reserved opcode"),
    _ERR_CONTROL_FRAGMENTED: (CLOSE_PROTOCOL_ERROR, "fragmented control frame"),
    _ERR_UNMASKED: (CLOSE_PROTOCOL_ERROR, "unmasked client frame"),
    _ERR_CONTROL_TOO_LONG: (CLOSE_PROTOCOL_ERROR, "control frame payload over 125 bytes"),
    _ERR_LENGTH_MSB: (CLOSE_PROTOCOL_ERROR, "frame length with the most significant bit set"),
    _ERR_TOO_BIG: (CLOSE_TOO_BIG, "message too big"),
    _ERR_RSV1_MISPLACED: (CLOSE_PROTOCOL_ERROR, "RSV1 on a control or continuation frame"),
}


class Frame(NamedTuple):
    opcode: int
    fin: bool
    payload: memoryview  # unmasked
    rsv1: bool = False  # a compressed message's first frame (RFC 7692 §6)


class Header(NamedTuple):
    kind: int  # first byte: FIN | RSV1 | opcode
    size: int  # header length, masking key included
    length: int  # declared payload length
    key: int  # masking key, wire bytes read big-endian


def _check_first_byte(b0: int, rsv: int) -> None:
    if b0 & _RSV_BITS & ~rsv:
        raise FrameHeaderError(_ERR_RSV)
    if b0 & 0x0F not in _KNOWN_OPCODES:
        raise FrameHeaderError(_ERR_OPCODE)
    if b0 & _CONTROL_BIT and not b0 & FIN:
        raise FrameHeaderError(_ERR_CONTROL_FRAGMENTED)
    if b0 & RSV1 and (b0 & _CONTROL_BIT or b0 & 0x0F == OP_CONTINUATION):
        raise FrameHeaderError(_ERR_RSV1_MISPLACED)


def _check_second_byte(b0: int, b1: int) -> int:
    """Return the 7-bit length code."""
    if not b1 & _MASK_BIT:
        raise FrameHeaderError(_ERR_UNMASKED)
    len7 = b1 & 0x7F
    if b0 & _CONTROL_BIT and len7 > MAX_CONTROL_PAYLOAD:
        raise FrameHeaderError(_ERR_CONTROL_TOO_LONG)
    return len7


def read_header(buf: memoryview, pos: int, end: int, max_size: int, rsv: int = 0) -> Header | None:
    """Parse the frame header at ``buf[pos:end]``; None while incomplete.
    ``rsv``: the RSV bits a negotiated extension gives a meaning (RSV1 or 0)."""
    if pos >= end:
        return None
    b0 = buf[pos]
    _check_first_byte(b0, rsv)
    if end - pos < 2:
        return None
    len7 = _check_second_byte(b0, buf[pos + 1])
    ext = 2 if len7 == 126 else 8 if len7 == 127 else 0
    if end - pos < 2 + ext:
        return None
    length = int.from_bytes(buf[pos + 2 : pos + 2 + ext], "big") if ext else len7
    if length > MAX_PAYLOAD_LENGTH:
        raise FrameHeaderError(_ERR_LENGTH_MSB)
    if length > max_size and not b0 & _CONTROL_BIT:  # control frames: bounded by §5.5
        raise FrameHeaderError(_ERR_TOO_BIG)
    size = 2 + ext + _unmask.KEY_LENGTH
    if end - pos < size:
        return None
    return Header(b0, size, length, int.from_bytes(buf[pos + size - 4 : pos + size], "big"))


def parse_frame(
    buf: _unmask.Buffer, pos: int = 0, *, max_size: int = MAX_PAYLOAD_LENGTH, rsv: int = 0
) -> tuple[Frame | None, int]:
    """Parse one client frame at ``buf[pos:]``: ``(frame, next_pos)``, or
    ``(None, pos)`` when the frame is incomplete. Pure Python (reference and
    fallback); unmasks in place when ``buf`` is writable."""
    view = memoryview(buf).cast("B")
    if not 0 <= pos <= len(view):
        raise ValueError("position out of the buffer's bounds")
    header = read_header(view, pos, len(view), max_size, rsv)
    if header is None or header.length > len(view) - pos - header.size:
        return None, pos
    start = pos + header.size
    payload = view[start : start + header.length]
    if payload.readonly:
        payload = memoryview(bytearray(payload))
    _unmask.unmask_python(payload, header.key)
    kind = header.kind
    frame = Frame(kind & 0x0F, bool(kind & FIN), payload, bool(kind & RSV1))
    return frame, start + header.length


# ---- the one-call scanner -------------------------------------------------

# Descriptors per C call: 3 KiB of scratch per receive buffer (it lives on the
# buffer's Window, so threads with their own buffers never share it); a fuller
# window just takes another call.
SCAN_CAPACITY = 128
# Slots per descriptor: the C scanner's layout when built (WS_DESCRIPTOR_SLOTS),
# which the Python scanner then produces too.
_DESCRIPTOR_SLOTS = native.lib.WS_DESCRIPTOR_SLOTS if native.BUILT else 3


def _descriptor_array() -> tuple:
    array = native.ffi.new("int64_t[]", SCAN_CAPACITY * _DESCRIPTOR_SLOTS)
    return array, memoryview(native.ffi.buffer(array)).cast("q")


def scan_window_c(
    window: _unmask.Window, start: int, end: int, max_size: int, rsv: int = 0
) -> list[int]:
    """Descriptors for the complete frames of ``window[start:end]`` (C).
    The list is a copy: hooks may run other scans before it is consumed."""
    out = window.scan_out
    if out is None:
        out = window.scan_out = _descriptor_array()
    count = native.lib.ws_parse_frames(window.ptr, start, end, max_size, rsv, out[0], SCAN_CAPACITY)
    return out[1][: count * _DESCRIPTOR_SLOTS].tolist()


def scan_window_python(
    window: _unmask.Window, start: int, end: int, max_size: int, rsv: int = 0
) -> list[int]:
    """Same output as ``scan_window_c``, by repeated ``parse_frame``."""
    view = window.view[:end]
    out: list[int] = []
    pos = start
    while pos < end and len(out) < SCAN_CAPACITY * _DESCRIPTOR_SLOTS:
        try:
            frame, next_pos = parse_frame(view, pos, max_size=max_size, rsv=rsv)
        except FrameHeaderError as exc:
            out += (-exc.number, pos, pos)
            break
        if frame is None:
            break
        kind = frame.opcode | (FIN if frame.fin else 0) | (RSV1 if frame.rsv1 else 0)
        out += (kind, next_pos - len(frame.payload), next_pos)
        pos = next_pos
    return out


scan_window = scan_window_python  # rebound by native.use (the hot path calls it directly)


def _rebind(implementation: str) -> None:
    global scan_window
    scan_window = scan_window_c if implementation == "c" else scan_window_python


native.on_switch(_rebind)


def scan_frames(
    buf: _unmask.Buffer, start: int = 0, end: int | None = None, *, max_size: int, rsv: int = 0
) -> list[int]:
    """Validate, unmask and describe every complete frame of
    ``buf[start:end]``: ``[kind, payload_start, payload_end, ...]``. The
    unmasking is in place for a bytearray, in a private copy otherwise."""
    window = _unmask.window(buf)
    end = len(window.data) if end is None else end
    if not 0 <= start <= end <= len(window.data):
        raise ValueError("window out of the buffer's bounds")
    return scan_window(window, start, end, min(max_size, MAX_PAYLOAD_LENGTH), rsv)


# ---- writing ----------------------------------------------------------------

_U16 = struct.Struct("!BBH")
_U64 = struct.Struct("!BBQ")
# Every header of an unmasked frame with a 7-bit length, built once (12 first
# bytes x 126 lengths, ~60 KB): server output is dominated by small messages.
_SHORT_HEADERS: list[list[bytes] | None] = [None] * 256
for _b0 in (op | fin for op in _KNOWN_OPCODES for fin in (0, FIN)):
    _SHORT_HEADERS[_b0] = [bytes((_b0, n)) for n in range(126)]


def frame_header(opcode: int, length: int, fin: bool = True, mask: bool = False) -> bytes:
    """The header of a frame (without the masking key) for ``length`` bytes."""
    b0 = opcode | (FIN if fin else 0)
    mask_bit = _MASK_BIT if mask else 0
    if length < 126:
        return bytes((b0, length | mask_bit))
    if length < 0x10000:
        return _U16.pack(b0, 126 | mask_bit, length)
    if length > MAX_PAYLOAD_LENGTH:
        raise ValueError("payload too long for a frame")
    return _U64.pack(b0, 127 | mask_bit, length)


def serialize_frame(opcode: int, payload: _unmask.Buffer = b"", fin: bool = True) -> bytes:
    """An unmasked (server-to-client, §5.1) frame."""
    length = len(payload)
    headers = _SHORT_HEADERS[opcode | (FIN if fin else 0)]
    if length < 126 and headers is not None:
        return headers[length] + payload
    return frame_header(opcode, length, fin) + payload


def serialize_masked_frame(
    opcode: int, payload: _unmask.Buffer, key: int | bytes, fin: bool = True
) -> bytes:
    """A masked (client-to-server) frame: for clients, tools and tests."""
    key_bytes = _unmask.key_to_int(key).to_bytes(4, "big")
    masked = bytearray(payload)
    _unmask.unmask(masked, key_bytes)
    return frame_header(opcode, len(masked), fin, mask=True) + key_bytes + masked


def close_payload(code: int | None = CLOSE_NORMAL, reason: str = "") -> bytes:
    """Payload of a close frame (§5.5.1); ``None`` means no status code."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a status code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON:
        raise ValueError("close reason over 123 bytes")
    return code.to_bytes(2, "big") + encoded


def parse_close_payload(payload: _unmask.Buffer) -> tuple[int, str]:
    """Code and reason of a received close frame (§5.5.1, §7.1.5): an empty
    payload means ``CLOSE_NO_STATUS``; a 1-byte payload or an invalid code is
    a 1002, a reason that is not UTF-8 a 1007."""
    if len(payload) == 0:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return code, str(payload[2:], "utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
