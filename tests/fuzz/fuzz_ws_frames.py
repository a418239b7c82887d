"""Fuzz target: the server-side WebSocket frame parser and protocol machine.

Input: byte 0 picks the configuration, the rest is what a client sent.
    bits 0-2  max_message_size: one of MAX_SIZES
    bit 3     the server sent its close first (CLOSING) before reading
    bits 4-6  with byte 1: the read size of the split feeds
    bit 7     permessage-deflate negotiated (RFC 7692; client context kept)
Every input runs through:
- an independent reference model written here from RFC 6455 (§5.2 header
  rules, §5.4 fragmentation, §5.5 control frames, §5.6 UTF-8, §7.4 close codes,
  fail-fast on the first invalid UTF-8 byte received) and RFC 7692 (RSV1 only
  on a data message's first frame, inflated with zlib, the limit on the
  inflated size, text checked up to the limit before a 1009), the oracle;
- ``ServerProtocol`` on the C path and on the Python path, each fed the whole
  input in one read and again in reads of 1..N bytes through one reused
  receive buffer (as the reactor does): events must equal the model's;
- the one-call scanner (C and Python) and ``parse_frame``: descriptors and
  payloads equal the model's, nothing past the window, errors last.
Invariants asserted on the way: ``receive`` never consumes more than given and
stops only when CLOSED; a payload is never longer than its declared length;
every failure is a close code of §7.4.1 and the close frame on the wire says it.
"""

from __future__ import annotations

import sys
import zlib

from _harness import instrumented, use_speedups_override

with instrumented(__name__ == "__main__"):
    from reactor.ws import deflate, frames, native, protocol
    from reactor.ws import unmask as unmask_module

use_speedups_override(unmask_module, frames)

NAME = "ws_frames"
MAX_SIZES = (16 * 1024 * 1024, 0, 1, 125, 126, 1000, 65536, 200)
CONTROL_LIMIT = 125  # RFC 6455 §5.5
KNOWN_OPCODES = {0x0, 0x1, 0x2, 0x8, 0x9, 0xA}  # §5.2
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009  # §7.4.1
FAILURE_CODES = {PROTOCOL_ERROR, INVALID_DATA, TOO_BIG}
SCAN_CAPACITY = frames.SCAN_CAPACITY
RSV1 = 0x40  # RFC 7692 §6
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.2
INFLATE_BUDGET = 53  # bytes one read may inflate before the connection stalls


def valid_close_code(code: int) -> bool:
    """§7.4.1-7.4.2, written out independently of frames.is_valid_close_code."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999


# ---- the reference model ---------------------------------------------------------

# RFC 3629 §4: the byte ranges that may follow each lead byte, as (first, last) pairs.
_CONT = (0x80, 0xBF)
_UTF8_TAILS: dict[int, tuple] = {b: () for b in range(0x80)}
_UTF8_TAILS.update({b: (_CONT,) for b in range(0xC2, 0xE0)})
_UTF8_TAILS[0xE0] = ((0xA0, 0xBF), _CONT)
_UTF8_TAILS.update({b: (_CONT, _CONT) for b in range(0xE1, 0xF0)})
_UTF8_TAILS[0xED] = ((0x80, 0x9F), _CONT)  # no UTF-16 surrogates
_UTF8_TAILS[0xF0] = ((0x90, 0xBF), _CONT, _CONT)
_UTF8_TAILS.update({b: (_CONT, _CONT, _CONT) for b in range(0xF1, 0xF4)})
_UTF8_TAILS[0xF4] = ((0x80, 0x8F), _CONT, _CONT)  # nothing above U+10FFFF


def utf8_status(data: bytes) -> str:
    """ "bad" at the first byte no valid text can contain, else "partial" when
    it ends inside a sequence, else "complete"."""
    i, n = 0, len(data)
    while i < n:
        tails = _UTF8_TAILS.get(data[i])
        if tails is None:
            return "bad"
        for k, (low, high) in enumerate(tails, 1):
            if i + k >= n:
                return "partial"
            if not low <= data[i + k] <= high:
                return "bad"
        i += 1 + len(tails)
    return "complete"


class Violation(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def reference_header(wire: bytes, pos: int, max_size: int, rsv: int = 0) -> tuple | None:
    """(b0, header_size, length, key) of the frame at ``pos``; None while the
    bytes so far are a valid but incomplete header; Violation as soon as the
    bytes that prove one have arrived. Also returns the §5.2 rule number
    (ws/csrc/frames.h numbering) through Violation.rule for the scanner."""
    n = len(wire)
    b0 = wire[pos]
    if b0 & 0x70 & ~rsv:
        raise _rule(1)  # RSV bits no negotiated extension gives a meaning
    if b0 & 0x0F not in KNOWN_OPCODES:
        raise _rule(2)
    control = bool(b0 & 0x08)
    if control and not b0 & 0x80:
        raise _rule(3)
    if b0 & RSV1 and (control or b0 & 0x0F == 0):
        raise _rule(8)  # RFC 7692 §6: only on the first frame of a data message
    if n - pos < 2:
        return None
    b1 = wire[pos + 1]
    if not b1 & 0x80:
        raise _rule(4)  # §5.1: clients mask every frame
    len7 = b1 & 0x7F
    if control and len7 > CONTROL_LIMIT:
        raise _rule(5)
    ext = {126: 2, 127: 8}.get(len7, 0)
    if n - pos < 2 + ext:
        return None
    length = int.from_bytes(wire[pos + 2 : pos + 2 + ext], "big") if ext else len7
    if length >> 63:
        raise _rule(6)
    if not control and length > max_size:
        raise _rule(7)
    size = 2 + ext + 4
    if n - pos < size:
        return None
    return b0, size, length, wire[pos + size - 4 : pos + size]


def _rule(number: int) -> Violation:
    violation = Violation(TOO_BIG if number == 7 else PROTOCOL_ERROR)
    violation.rule = number
    return violation


def unmasked(wire: bytes, start: int, stop: int, key: bytes) -> bytes:
    return bytes(b ^ key[i & 3] for i, b in enumerate(wire[start:stop]))


def reference_scan(wire: bytes, max_size: int, rsv: int = 0) -> list[int]:
    """What the one-call scanner must describe: complete frames (header rules
    only), at most SCAN_CAPACITY of them, a violation as the last entry."""
    out: list[int] = []
    pos = 0
    while pos < len(wire) and len(out) < 3 * SCAN_CAPACITY:
        try:
            header = reference_header(wire, pos, max_size, rsv)
        except Violation as exc:
            return out + [-exc.rule, pos, pos]
        if header is None or header[2] > len(wire) - pos - header[1]:
            break
        b0, size, length, _ = header
        out += [b0, pos + size, pos + size + length]
        pos += size + length
    return out


class Model:
    """The expected events of a server-side connection, from the RFC."""

    def __init__(self, max_size: int, closing: bool, compressed: bool = False) -> None:
        self.max_size = max_size
        self.open = not closing  # False: our close is out (CLOSING)
        self.events: list[tuple] = []
        self.message: tuple[int, bytearray] | None = None
        self.rsv = RSV1 if compressed else 0
        self.inflater = zlib.decompressobj(-15)  # context kept across messages
        self.inflating = False  # the message in progress is compressed

    def run(self, wire: bytes) -> list[tuple]:
        pos = 0
        try:
            while pos < len(wire):
                step = self.frame(wire, pos)
                if step is None:
                    break
                pos = step
        except Violation as exc:
            if self.open:
                self.events.append(("out", frames.OP_CLOSE, True, exc.code))
            self.events.append(("close", exc.code))
        return self.events

    def frame(self, wire: bytes, pos: int) -> int | None:
        """Process the frame at ``pos``; the next position, or None when the
        input ends inside it (after the fail-fast checks) or the peer closed."""
        header = reference_header(wire, pos, self.max_size, self.rsv)
        if header is None:
            return None
        b0, size, length, key = header
        opcode, fin = b0 & 0x0F, bool(b0 & 0x80)
        start = pos + size
        stop = min(start + length, len(wire))
        payload = unmasked(wire, start, stop, key)
        complete = stop - start == length
        if opcode & 0x08:
            return self.control(opcode, payload, stop) if complete else None
        if self.open:
            self.data(b0, fin, length, payload, complete)
        return stop if complete else None

    def data(self, b0: int, fin: bool, length: int, payload: bytes, complete: bool) -> None:
        opcode = b0 & 0x0F
        if opcode == frames.OP_CONTINUATION:
            if self.message is None:
                raise Violation(PROTOCOL_ERROR)
            if not self.inflating and len(self.message[1]) + length > self.max_size:
                raise Violation(TOO_BIG)
        elif self.message is not None:
            raise Violation(PROTOCOL_ERROR)
        else:
            self.message = (opcode, bytearray())
            self.inflating = bool(b0 & RSV1)
        kind, buffer = self.message
        if self.inflating:
            self.add_inflated(buffer, payload)
            if complete and fin:
                self.add_inflated(buffer, DEFLATE_TAIL)
                if self.inflater.eof:  # a final block ended the stream: the next starts anew
                    self.inflater = zlib.decompressobj(-15)
        else:
            buffer += payload
        self.check_text(kind, buffer, complete and fin)
        if complete and fin:
            self.message = None
            if kind == frames.OP_TEXT:
                self.events.append(("text", buffer.decode()))
            else:
                self.events.append(("binary", bytes(buffer)))

    @staticmethod
    def check_text(kind: int, buffer: bytearray, ended: bool) -> None:
        text_state = utf8_status(bytes(buffer)) if kind == frames.OP_TEXT else "complete"
        if text_state == "bad" or (ended and text_state == "partial"):
            raise Violation(INVALID_DATA)

    def add_inflated(self, buffer: bytearray, data: bytes) -> None:
        """RFC 7692 §7.2.2 with the limit on the inflated size: what fits is
        kept (and checked as text) before the 1009."""
        if self.inflater.eof:
            return  # after a final block only padding may follow
        room = self.max_size - len(buffer)
        try:
            out = self.inflater.decompress(data, room + 1)  # one byte over proves it
        except zlib.error:
            raise Violation(INVALID_DATA) from None
        buffer += out[:room]
        if len(out) > room:
            self.check_text(self.message[0], buffer, False)
            raise Violation(TOO_BIG)

    def control(self, opcode: int, payload: bytes, stop: int) -> int | None:
        if opcode == frames.OP_PING:
            if self.open:  # in CLOSING nothing but the close is owed (§5.5.1): not reported
                self.events.append(("out", frames.OP_PONG, True, payload))
                self.events.append(("ping", payload))
            return stop
        if opcode == frames.OP_PONG:
            self.events.append(("pong", payload))
            return stop
        code = self.close_code(payload)
        if self.open:
            self.events.append(("out", frames.OP_CLOSE, True, None if code == 1005 else code))
        self.events.append(("close", code))
        return None  # CLOSED: nothing after the close frame is read

    @staticmethod
    def close_code(payload: bytes) -> int:
        """§5.5.1, §7.1.5: the code of a close payload, or the violation."""
        if not payload:
            return 1005
        if len(payload) == 1:
            raise Violation(PROTOCOL_ERROR)
        code = int.from_bytes(payload[:2], "big")
        if not valid_close_code(code):
            raise Violation(PROTOCOL_ERROR)
        if utf8_status(payload[2:]) != "complete":
            raise Violation(INVALID_DATA)
        return code


# ---- the implementation under test ------------------------------------------------


def parse_server_frame(data: bytes) -> list[tuple]:
    """Split server output into normalized frames; asserts it is well formed
    (§5.1: never masked, lengths exact, close frames carry a valid code)."""
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "a server frame is masked"
        assert not b0 & 0x70, "a server frame has RSV bits (pongs and closes never do)"
        len7 = b1 & 0x7F
        ext = {126: 2, 127: 8}.get(len7, 0)
        length = int.from_bytes(data[pos + 2 : pos + 2 + ext], "big") if ext else len7
        start = pos + 2 + ext
        payload = data[start : start + length]
        assert len(payload) == length, "server frame shorter than its declared length"
        out.append(normalized_output(b0 & 0x0F, bool(b0 & 0x80), payload))
        pos = start + length
    return out


def normalized_output(opcode: int, fin: bool, payload: bytes) -> tuple:
    if opcode != frames.OP_CLOSE:
        return ("out", opcode, fin, payload)
    if not payload:
        return ("out", opcode, fin, None)
    code = int.from_bytes(payload[:2], "big")
    assert len(payload) >= 2 and valid_close_code(code), "invalid close frame from the server"
    assert len(payload) <= CONTROL_LIMIT, "close frame over 125 bytes"
    payload[2:].decode()  # the reason is UTF-8
    return ("out", opcode, fin, code)


class Recorder(protocol.ServerProtocol):
    __slots__ = ("events",)

    def on_message(self, data) -> None:
        size = len(data.encode()) if isinstance(data, str) else len(data)
        assert size <= self.max_message_size, "a message over max_message_size was delivered"
        self.events.append(("text", data) if isinstance(data, str) else ("binary", data))

    def on_ping(self, payload: bytes) -> None:
        self.events.append(("ping", payload))

    def on_pong(self, payload: bytes) -> None:
        self.events.append(("pong", payload))

    def on_close(self, code: int, reason: str) -> None:
        assert code in (1005, 1006) or valid_close_code(code), f"close code {code}"
        self.events.append(("close", code))

    def on_output(self, data: bytes) -> None:
        self.events.extend(parse_server_frame(data))

    def on_stall(self) -> None:
        """Drained by run_protocol after each read, as the glue does from the loop."""


def codec(compressed: bool) -> deflate.PerMessageDeflate | None:
    """The connection's codec when permessage-deflate was negotiated (client
    keeps its context, window 15: the model's inflater)."""
    if not compressed:
        return None
    # A small inflate budget per read, so inputs stall and resume (on_stall / drain).
    compression = deflate.Compression("full", read_budget=INFLATE_BUDGET)
    return compression.negotiate(["permessage-deflate"])[1]


def run_protocol(
    wire: bytes, max_size: int, closing: bool, read_size: int, compressed: bool = False
) -> list[tuple]:
    """Feed ``wire`` in reads of ``read_size`` bytes (0: one read) through
    one reused receive buffer, as the reactor does."""
    proto = Recorder(max_size, codec(compressed))
    proto.events = []
    proto.accept()
    if closing:
        proto.close(1000)
    step = read_size or max(1, len(wire))
    buffer = bytearray(step)
    for start in range(0, len(wire), step):
        chunk = wire[start : start + step]
        buffer[: len(chunk)] = chunk
        consumed = proto.receive(buffer, 0, len(chunk))
        assert 0 <= consumed <= len(chunk), "receive consumed more than it was given"
        while proto.stalled:  # what the glue does from the loop, one budget at a time
            proto.drain()
        if consumed < len(chunk):
            assert proto.state is protocol.CLOSED, "receive stopped early while not CLOSED"
    if proto.state is protocol.CLOSED:
        assert proto.receive(bytearray(b"\x81"), 0, 1) == 0, "consumed input after CLOSED"
    return proto.events


def check_scanners(wire: bytes, max_size: int, rsv: int = 0) -> None:
    expected = reference_scan(wire, max_size, rsv)
    results = []
    for scan in (frames.scan_window_c, frames.scan_window_python):
        data = bytearray(wire)
        window = unmask_module.Window(data, cached=False)
        descriptors = scan(window, 0, len(data), max_size, rsv)
        results.append((descriptors, bytes(data)))
    (c_out, c_data), (py_out, py_data) = results
    assert c_out == py_out == expected, f"scanners disagree: {c_out} {py_out} {expected}"
    assert c_data == py_data, "C and Python unmasked differently"
    for kind, start, stop in zip(*[iter(c_out)] * 3, strict=True):
        assert 0 <= start <= stop <= len(wire)
        if kind >= 0:
            key = wire[start - 4 : start]
            assert c_data[start:stop] == unmasked(wire, start, stop, key)


def check_parse_frame(wire: bytes, max_size: int, rsv: int = 0) -> None:
    """The pure-Python ``parse_frame``: frame by frame, against the model."""
    expected = reference_scan(wire, max_size, rsv)
    pos, seen = 0, []
    while pos < len(wire) and len(seen) < len(expected):
        try:
            frame, next_pos = frames.parse_frame(wire, pos, max_size=max_size, rsv=rsv)
        except frames.FrameHeaderError as exc:
            seen += [-exc.number, pos, pos]
            break
        if frame is None:
            assert next_pos == pos, "an incomplete frame consumed bytes"
            break
        assert pos < next_pos <= len(wire), "parse_frame went past the buffer"
        start = next_pos - len(frame.payload)
        seen += [frame.opcode | (0x80 if frame.fin else 0) | (RSV1 if frame.rsv1 else 0)]
        seen += [start, next_pos]
        assert bytes(frame.payload) == unmasked(wire, start, next_pos, wire[start - 4 : start])
        pos = next_pos
    assert seen == expected[: len(seen)] and len(seen) == len(expected), (seen, expected)


def config(data: bytes) -> tuple[int, bool, int, bool, bytes]:
    if not data:
        return MAX_SIZES[0], False, 0, False, b""
    options = data[0]
    wire = data[1:]
    read_size = 1 + ((options >> 4 & 7) * 7 + (wire[0] if wire else 0)) % 61
    return MAX_SIZES[options & 7], bool(options & 8), read_size, bool(options & 0x80), wire


def check(data: bytes) -> str:
    max_size, closing, read_size, compressed, wire = config(data)
    expected = Model(max_size, closing, compressed).run(wire)
    if not expected or expected[-1][0] != "close":
        expected = expected + [("close", 1006)]  # the glue reports the lost TCP
    for impl in ("c", "python"):
        with native.using(impl):  # back to C even when a check fails
            for size in (0, read_size, 1 if len(wire) <= 64 else 0):
                events = run_protocol(wire, max_size, closing, size, compressed)
                if not events or events[-1][0] != "close":
                    events.append(("close", 1006))
                assert events == expected, f"{impl} read={size}:\n{events}\n!=\n{expected}"
    rsv = RSV1 if compressed else 0
    check_scanners(wire, max_size, rsv)
    check_parse_frame(wire, max_size, rsv)
    return outcome(expected[-1][1])


def outcome(code: int) -> str:
    """The stats label of an input: how the connection ended."""
    if code in FAILURE_CODES:
        return f"violation, close {code}"
    return "peer closed" if code != 1006 else "no close (input ended)"


if __name__ == "__main__":
    from _harness import fuzz

    if frames.scan_window is not frames.scan_window_c:
        sys.exit("the compiled reactor.ws._speedups module is required (C vs Python checks)")
    fuzz(NAME, check)
