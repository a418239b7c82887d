"""The server side of one RFC 6455 connection, as a sans-I/O state machine.

States (the C design's handshake, transmission and end states, plus CLOSING),
and the only transitions (``_TRANSITIONS``):

    CONNECTING --accept()-----------------> OPEN      the glue sent the 101
    OPEN       --close() (local)----------> CLOSING   close frame returned
    OPEN       --peer close frame---------> CLOSED    reply close sent to on_output
    OPEN       --protocol violation-------> CLOSED    close frame with the code sent
    CLOSING    --peer close frame---------> CLOSED    handshake complete
    CLOSING    --protocol violation-------> CLOSED    (our close is already out)
    any        --connection_lost()--------> CLOSED

Once CLOSED after a close frame or a violation, the glue flushes the output
and closes TCP at once (§7.1.1: the server closes first; after a fatal error we
choose not to wait for the peer's close). In CLOSING the glue bounds the wait
for the peer's close with a timer; data frames arriving meanwhile are dropped
unread and pings are not answered (§5.5.1: nothing but the close is owed).

Using it: subclass ``ServerProtocol`` (add ``__slots__`` for the glue's own
fields) and implement the hooks, which ``receive`` calls as events happen:

    on_message(data)      a complete message: str for text, bytes for binary
    on_ping(payload)      a ping arrived; the pong was already given to on_output
    on_pong(payload)      a pong arrived (unsolicited ones too: clear a ping timer)
    on_close(code, reason)  the connection is CLOSED: peer close (code 1005 if it
                          sent none), violation (our code), or connection_lost (1006)
    on_output(data)       bytes to send: pong and close frames produced by receive
    on_final_output(data) the reply to the peer's close: the connection's last bytes,
                          after which the peer owes nothing. Default: on_output

``receive(buf, start, end)`` consumes the window ``buf[start:end]``: it
validates, unmasks IN PLACE, and dispatches. Pass the reactor's long-lived
receive bytearray itself (``data.obj``) for the fast path (its C pointer is
cached, see ws/unmask.py); any other buffer works but is first copied whole
into a private bytearray. Complete frames are
parsed by one C call per window and dispatched from a descriptor list (no
per-frame objects); a frame cut by the end of the window is streamed: its
payload is unmasked with the key phase and, for text, UTF-8-validated as each
piece arrives, so an invalid byte fails the connection (1007) as soon as it
is received, not at the end of the frame or message.

``send / ping / close`` return frame bytes for
the glue to write, and refuse data once the connection is not OPEN.

permessage-deflate (RFC 7692), when the handshake negotiated it: the codec
(ws/deflate.py) is given to the constructor. The scanner then lets RSV1
through on the first frame of a data message only (elsewhere: 1002); such a
message is inflated as its payload arrives, into the same message buffer, with
``max_message_size`` checked on the INFLATED size while inflating (1009 after
at most limit + 1 bytes of output) and corrupt deflate data failing with 1007.
A whole compressed message in one complete frame (the usual case) is
inflated in one go on the hot path, with the same limits and answers.
Without the extension nothing changes: RSV1 is a 1002, as before.

Memory: an idle connection is one object of 6 slots (80 bytes with the GC
header, measured with sys.getsizeof) referencing only shared objects (None,
State members, the server-wide limit int, a codec shared by the connections
that keep no compression context): no buffer, no decoder. A partial
header (< 14 bytes), a partial frame and a message in progress each allocate
a small object only while they exist and drop it when done. A message in
progress is one bytearray of its raw bytes, whatever its fragmentation.
"""

from __future__ import annotations

from codecs import utf_8_decode
from enum import IntEnum

from . import deflate as _deflate
from . import frames as _frames
from . import unmask as _unmask
from .frames import (
    CLOSE_ABNORMAL,
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    FIN,
    HEADER_ERRORS,
    MAX_CONTROL_PAYLOAD,
    MAX_HEADER_SIZE,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    ProtocolError,
)

# 16 MiB: large enough for any chat/game/RPC payload and Autobahn's 9.x cases
# (a message of exactly 16 MiB is allowed), small enough that one peer cannot
# make the server buffer unbounded memory.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

_TEXT_FINAL = FIN | OP_TEXT
_BINARY_FINAL = FIN | OP_BINARY
_DEFLATED_FINAL = (FIN | RSV1 | OP_TEXT, FIN | RSV1 | OP_BINARY)  # a whole compressed message


class _Stalled(Exception):
    """Inflating spent the read's budget (``Compression.read_budget``): the
    rest of the window waits for ``drain()``. ``pos``: where the window stops;
    ``scanned``: the descriptors of the complete frames after it, whose
    payloads the scanner already unmasked in place."""

    def __init__(self, pos: int = 0, scanned: list[int] | None = None) -> None:
        super().__init__(pos)
        self.pos = pos
        self.scanned = scanned or []


_FULL_SCAN = _frames.SCAN_CAPACITY * 3  # descriptor slots of a scan that hit its capacity


class State(IntEnum):
    CONNECTING = 0  # the C design's handshake state
    OPEN = 1  # its transmission state
    CLOSING = 2  # we sent a close, waiting for the peer's
    CLOSED = 3  # its end state


CONNECTING, OPEN, CLOSING, CLOSED = State

_TRANSITIONS: dict[tuple[State, str], State] = {
    (CONNECTING, "accept"): OPEN,
    (OPEN, "local_close"): CLOSING,
    (OPEN, "peer_close"): CLOSED,
    (OPEN, "fail"): CLOSED,
    (CLOSING, "peer_close"): CLOSED,
    (CLOSING, "fail"): CLOSED,
    **{(state, "lost"): CLOSED for state in State},
}


class InvalidStateError(RuntimeError):
    """An operation the current state does not allow (e.g. send after close)."""


class _PartialFrame:
    """A frame whose header is parsed but whose payload is still arriving."""

    __slots__ = ("kind", "key", "remaining", "phase", "control")

    def __init__(self, kind: int, key: int, remaining: int) -> None:
        self.kind = kind
        self.key = key
        self.remaining = remaining
        self.phase = 0
        # Control payloads (<= 125 bytes) are kept whole; data goes to _Message.
        self.control = bytearray() if kind & 0x08 else None


class _Message:
    """A data message in progress (fragmented, or one frame cut by a read).

    The raw bytes accumulate in ONE bytearray, text included: memory stays
    about the message size whatever the fragmentation (decoded str pieces
    would cost ~50 bytes of overhead each, 800 MB for 16 MiB sent in 1-byte
    fragments). Text is validated as it arrives and decoded once at the end.
    """

    __slots__ = ("opcode", "buffer", "unchecked")
    compressed = False

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode
        self.buffer = bytearray()
        self.unchecked = 0  # trailing bytes of an incomplete UTF-8 sequence (0..3)

    @property
    def size(self) -> int:
        return len(self.buffer)

    def add(self, chunk: memoryview) -> None:
        self.buffer += chunk
        if self.opcode == OP_TEXT:
            self._validate(len(chunk))

    def _validate(self, added: int) -> None:
        """Fail fast (1007) on the first invalid byte of the last ``added``."""
        start = len(self.buffer) - added - self.unchecked
        # Views, not a slice copy; released before the bytearray grows again.
        with memoryview(self.buffer) as whole, whole[start:] as fresh:
            try:
                _, used = utf_8_decode(fresh, "strict", False)
            except UnicodeDecodeError:
                raise ProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None
        self.unchecked = len(self.buffer) - start - used
        # CPython waits for a 3rd byte after ED A0..BF, a prefix that can only
        # become a UTF-16 surrogate (RFC 3629 §4): reject it now (fail fast).
        if self.unchecked == 2 and self.buffer[-2] == 0xED and self.buffer[-1] >= 0xA0:
            raise ProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")

    def result(self) -> str | bytes:
        if self.opcode == OP_BINARY:
            return bytes(self.buffer)
        if self.unchecked:
            raise ProtocolError(CLOSE_INVALID_DATA, "text message ends inside a UTF-8 sequence")
        return self.buffer.decode()


class _CompressedMessage(_Message):
    """A message sent with RSV1 (RFC 7692 §7.2.2): each piece of payload is
    inflated as it arrives, never to more than the limit allows."""

    __slots__ = ("codec", "inflater", "limit", "fin", "pending", "leftover")
    compressed = True

    def __init__(self, opcode: int, codec: _deflate.PerMessageDeflate, limit: int) -> None:
        _Message.__init__(self, opcode)
        self.codec = codec
        self.inflater = codec.inflater()
        self.limit = limit
        self.fin = False  # the message's last frame has been received
        self.pending: bytes | None = None  # compressed input held back by a stall
        self.leftover: bytes | None = None  # the rest of the stalled window, still masked

    def add(self, chunk: memoryview | bytes) -> None:
        """Inflate ``chunk`` within the limit and the read's budget; _Stalled
        (the unread input kept in ``pending``) when the budget runs out first."""
        owner = self.codec.owner
        room = self.limit - len(self.buffer)
        if owner.budget <= room:  # the budget, not the limit, bounds this step
            inflated = _deflate.inflate(self.inflater, chunk, max(owner.budget, 1) - 1)
        else:
            inflated = _deflate.inflate(self.inflater, chunk, room)
        owner.budget -= len(inflated)
        self._take(inflated)
        inflater = self.inflater
        if inflater.unconsumed_tail and not inflater.eof:  # after a final block: padding
            self.pending = inflater.unconsumed_tail
            raise _Stalled

    def result(self) -> str | bytes:
        self._take(_deflate.finish(self.inflater, self.limit - len(self.buffer)))
        self.codec.message_done(self.inflater)
        return _Message.result(self)

    def _take(self, inflated: bytes) -> None:
        room = self.limit - len(self.buffer)
        if len(inflated) > room:
            # Text is validated up to the limit first, so a message gets the same
            # close code (1007 before 1009) however its bytes were split by reads.
            _Message.add(self, memoryview(inflated)[:room])
            raise ProtocolError(CLOSE_TOO_BIG, "message too big once inflated")
        if inflated:
            _Message.add(self, memoryview(inflated))


def _masked_again(window: _unmask.Window, stall: _Stalled, end: int) -> bytes | None:
    """A copy of ``window[stall.pos:end]`` as it came off the wire: the payloads
    the scanner unmasked in place are masked again (XOR is its own inverse), so
    the copy is scanned afresh by ``drain()``."""
    pos = stall.pos
    if pos >= end:
        return None
    rest = bytearray(window.view[pos:end])
    it = iter(stall.scanned)
    for kind, start, stop in zip(it, it, it):  # noqa: B905
        if kind >= 0 and stop > start:
            key = bytes(rest[start - pos - 4 : start - pos])
            _unmask.unmask(memoryview(rest)[start - pos : stop - pos], key)
    return bytes(rest)


class ServerProtocol:
    """One server-side WebSocket connection; see the module docstring."""

    __slots__ = ("_state", "_head", "_frame", "_message", "max_message_size", "_deflate")

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        extension: _deflate.PerMessageDeflate | None = None,
    ) -> None:
        if not 0 <= max_message_size <= _frames.MAX_PAYLOAD_LENGTH:
            raise ValueError("max_message_size out of range")
        self._deflate = extension  # permessage-deflate when negotiated
        self._state = CONNECTING
        self._head: bytes | None = None  # a frame header cut by the end of a read
        self._frame: _PartialFrame | None = None
        self._message: _Message | None = None
        self.max_message_size = max_message_size

    # ---- hooks (override in the glue) -----------------------------------

    def on_message(self, data: str | bytes) -> None:
        raise NotImplementedError("subclass ServerProtocol and implement on_message")

    def on_ping(self, payload: bytes) -> None:
        """A ping arrived; its pong is already queued. Default: nothing to do."""

    def on_pong(self, payload: bytes) -> None:
        """A pong arrived. Default: ignored (§5.5.3 allows unsolicited pongs)."""

    def on_close(self, code: int, reason: str) -> None:
        raise NotImplementedError("subclass ServerProtocol and implement on_close")

    def on_output(self, data: bytes) -> None:
        raise NotImplementedError("subclass ServerProtocol and implement on_output")

    def on_final_output(self, data: bytes) -> None:
        """The close frame answering the peer's: nothing follows it either way,
        so the glue may close TCP with it (the FIN in the same segment)."""
        self.on_output(data)

    # ---- state ----------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state is OPEN

    def _transition(self, event: str) -> None:
        try:
            self._state = _TRANSITIONS[self._state, event]
        except KeyError:
            raise InvalidStateError(f"{event!r} not allowed in state {self._state.name}") from None

    def accept(self) -> None:
        """The glue answered the handshake with 101: frames may flow."""
        self._transition("accept")

    def connection_lost(self) -> None:
        """TCP is gone. Reports ``on_close(1006, ...)`` unless already CLOSED."""
        if self._state is CLOSED:
            return
        self._transition("lost")
        self._drop_buffers()
        self.on_close(CLOSE_ABNORMAL, "connection lost")

    def _drop_buffers(self) -> None:
        self._head = self._frame = self._message = None

    # ---- sending ----------------------------------------------------------

    def _require_open(self) -> None:
        if self._state is not OPEN:
            raise InvalidStateError(f"cannot send in state {self._state.name}")

    def send(self, message: str | _unmask.Buffer) -> bytes:
        """A text frame for ``str``, a binary frame for bytes-like objects."""
        self._require_open()
        if isinstance(message, str):
            return self.frame_message(OP_TEXT, message.encode("utf-8"))
        return self.frame_message(OP_BINARY, message)

    def frame_message(self, opcode: int, payload: _unmask.Buffer) -> bytes:
        """One frame carrying a whole message: compressed (RSV1) when the
        extension is on and the payload reaches its threshold."""
        codec = self._deflate
        if codec is not None and len(payload) >= codec.threshold:
            return _frames.serialize_frame(opcode | RSV1, codec.compress(payload))
        return _frames.serialize_frame(opcode, payload)

    @property
    def extension(self) -> _deflate.PerMessageDeflate | None:
        """The negotiated permessage-deflate codec, or None."""
        return self._deflate

    def ping(self, payload: _unmask.Buffer = b"") -> bytes:
        self._require_open()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError("ping payload over 125 bytes")
        return _frames.serialize_frame(OP_PING, payload)

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = "") -> bytes:
        """Start the closing handshake: returns the close frame (OPEN -> CLOSING).
        Returns b"" when a close is already under way or done."""
        if self._state is CLOSING or self._state is CLOSED:
            return b""
        payload = _frames.close_payload(code, reason)  # validates before the transition
        self._transition("local_close")
        if not self.stalled:  # a stalled one is dropped by drain(), which still owes its input
            self._message = None  # an unfinished incoming message will never be delivered
        return _frames.serialize_frame(OP_CLOSE, payload)

    # ---- receiving ----------------------------------------------------------

    def receive(self, buf: _unmask.Buffer, start: int = 0, end: int | None = None) -> int:
        """Process ``buf[start:end]`` (unmasked in place) and fire the hooks.
        Returns ``end``, or the offset just past the frame after which the
        connection became CLOSED (a close frame, or a hook that called
        ``connection_lost``): what follows it is never looked at. After a
        protocol violation the connection is dead and ``end`` is returned.
        Nothing is consumed once CLOSED (``start`` is returned)."""
        window = _unmask.window(buf)
        if end is None:
            end = len(window.data)
        if not 0 <= start <= end <= len(window.data):
            raise ValueError("window out of the buffer's bounds")
        pos = self.receive_window(window, start, end)
        if type(self).on_stall is ServerProtocol.on_stall:  # no loop to come back from
            while self.stalled:
                self.drain()
        return pos

    def receive_window(self, window: _unmask.Window, pos: int, end: int) -> int:
        """``receive`` for a caller that holds a ``Window`` (``unmask.window``)
        over its long-lived buffer and passes valid bounds: the per-read hot
        path of the glue, without the lookup and the bounds check. With
        permessage-deflate it may stall (see ``on_stall``)."""
        if self._deflate is not None:
            self._deflate.owner.budget = self._deflate.owner.read_budget
        return self._receive(window, pos, end)

    # ---- inflating in bounded steps ------------------------------------------

    def on_stall(self) -> None:
        """Inflating spent this read's budget: the rest of the window was kept
        (at most one read) and waits. Override to call ``drain()`` later from the
        loop (and stop reading meanwhile); without an override ``receive``
        drains at once, which leaves the work of one read unbounded."""

    @property
    def stalled(self) -> bool:
        """Whether input waits for ``drain()``."""
        message = self._message
        return message is not None and message.compressed and message.pending is not None

    def drain(self) -> None:
        """Go on with a stalled connection for one more budget: the held-back
        compressed input, then the rest of the window. Calls ``on_stall`` again
        if the budget runs out first."""
        message = self._message
        if not self.stalled:
            return
        self._deflate.owner.budget = self._deflate.owner.read_budget
        pending, leftover = message.pending, message.leftover
        message.pending = message.leftover = None
        try:
            if self._state is OPEN:
                message.add(pending)
                if message.fin:
                    self._message_end()
            else:
                self._message = None  # closing: the message will never be delivered
        except _Stalled:
            message.leftover = leftover
            self.on_stall()
            return
        except ProtocolError as exc:
            self._fail(exc.close_code, exc.reason)
            return
        if leftover and self._state is not CLOSED:
            self._receive(_unmask.window(bytearray(leftover)), 0, len(leftover))

    def _receive(self, window: _unmask.Window, pos: int, end: int) -> int:
        state = self._state
        if state is not OPEN and state is not CLOSING:
            if state is CONNECTING:
                raise InvalidStateError("receive() before accept()")
            return pos
        try:
            if self._head is not None or self._frame is not None:
                pos = self._resume(window, pos, end)
            while pos < end and self._frame is None and self._state is not CLOSED:
                pos = self._dispatch_window(window, pos, end)
        except ProtocolError as exc:
            self._fail(exc.close_code, exc.reason)
            return end
        except _Stalled as stall:  # the rest of the window waits for drain()
            self._message.leftover = _masked_again(window, stall, end)
            self.on_stall()
            return end
        return pos

    def _dispatch_window(self, window: _unmask.Window, pos: int, end: int) -> int:
        """The hot path: one scan call, then one branch per frame."""
        rsv = 0 if self._deflate is None else RSV1
        descriptors = _frames.scan_window(window, pos, end, self.max_message_size, rsv)
        data, view = window.data, window.view
        on_message = self.on_message
        fast = self._message is None and self._state is OPEN
        it = iter(descriptors)  # flat triples; zip(strict=True) costs ~140 ns a window
        for kind, start, stop in zip(it, it, it):  # noqa: B905
            if fast and kind == _TEXT_FINAL:
                try:
                    text = data[start:stop].decode()
                except UnicodeDecodeError:
                    raise ProtocolError(
                        CLOSE_INVALID_DATA, "invalid UTF-8 in a text message"
                    ) from None
                on_message(text)
                fast = self._state is OPEN  # the application may have closed
            elif fast and kind == _BINARY_FINAL:
                on_message(view[start:stop].tobytes())
                fast = self._state is OPEN
            elif (
                fast
                and kind in _DEFLATED_FINAL
                and (stop - start) * _deflate.MAX_RATIO < self._deflate.owner.budget
            ):  # within the read's budget whatever it inflates to
                on_message(self._inflate_whole(kind & 0x0F, view[start:stop]))
                fast = self._state is OPEN
            else:
                if self._state is CLOSED:  # closed by a hook during this window
                    return pos
                try:
                    self._complete_frame(kind, view[start:stop])
                except _Stalled:
                    raise _Stalled(stop, list(it)) from None
                fast = self._message is None and self._state is OPEN
            pos = stop
        if len(descriptors) < _FULL_SCAN and pos < end and self._state is not CLOSED:
            pos = self._begin_partial(window, pos, end)
        return pos

    def _inflate_whole(self, opcode: int, payload: memoryview) -> str | bytes:
        """A compressed message in one frame (the usual case): inflated in one
        go, with the same limits and answers as ``_CompressedMessage``."""
        codec = self._deflate
        inflater = codec.inflater()
        limit = self.max_message_size
        data = _deflate.inflate(inflater, payload, limit)
        if len(data) <= limit:
            data += _deflate.finish(inflater, limit - len(data))
        if len(data) > limit:  # text up to the limit is checked first, as in pieces
            _Message(opcode).add(memoryview(data)[:limit])
            raise ProtocolError(CLOSE_TOO_BIG, "message too big once inflated")
        codec.message_done(inflater)
        codec.owner.budget -= len(data)
        if opcode == OP_BINARY:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None

    def _complete_frame(self, kind: int, payload: memoryview) -> None:
        if kind < 0:
            raise ProtocolError(*HEADER_ERRORS[-kind])
        opcode = kind & 0x0F
        if opcode & 0x08:
            self._control(opcode, payload)
        elif self._state is OPEN:
            self._data_frame_start(kind, len(payload))
            message = self._message
            if message.compressed:
                message.fin = bool(kind & FIN)  # for drain() if this frame stalls
            message.add(payload)
            if kind & FIN:
                self._message_end()

    def _data_frame_start(self, kind: int, length: int) -> None:
        """Sequencing (§5.4) and size checks, from the header alone (the
        inflated size of a compressed message is checked while inflating)."""
        message = self._message
        if kind & 0x0F == OP_CONTINUATION:
            if message is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            if message.size + length > self.max_message_size and not message.compressed:
                raise ProtocolError(CLOSE_TOO_BIG, "message too big")
        elif message is not None:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new data frame inside a fragmented message")
        elif kind & RSV1:  # the scanner let it through: the extension is on
            self._message = _CompressedMessage(kind & 0x0F, self._deflate, self.max_message_size)
        else:
            self._message = _Message(kind & 0x0F)

    def _message_end(self) -> None:
        data = self._message.result()
        self._message = None
        self.on_message(data)

    def _control(self, opcode: int, payload: memoryview) -> None:
        if opcode == OP_CLOSE:
            self._peer_close(payload)
        elif opcode == OP_PING:
            if self._state is OPEN:
                data = payload.tobytes()
                self.on_output(_frames.serialize_frame(OP_PONG, data))
                self.on_ping(data)
        else:
            self.on_pong(payload.tobytes())

    def _peer_close(self, payload: memoryview) -> None:
        code, reason = _frames.parse_close_payload(payload)
        was_open = self._state is OPEN
        self._transition("peer_close")
        self._drop_buffers()
        if was_open:  # §5.5.1: echo the code; an empty close gets an empty close
            reply = b"" if code == CLOSE_NO_STATUS else code.to_bytes(2, "big")
            self.on_final_output(_frames.serialize_frame(OP_CLOSE, reply))
        self.on_close(code, reason)

    def _fail(self, code: int, reason: str) -> None:
        """A violation: send our close frame if none went out, then CLOSED."""
        was_open = self._state is OPEN
        self._transition("fail")
        self._drop_buffers()
        if was_open:
            payload = _frames.close_payload(code, reason[: _frames.MAX_CLOSE_REASON])
            self.on_output(_frames.serialize_frame(OP_CLOSE, payload))
        self.on_close(code, reason)

    # ---- frames cut by the end of a read -----------------------------------

    def _begin_partial(self, window: _unmask.Window, pos: int, end: int) -> int:
        """``window[pos:end]`` starts a frame that is not complete yet."""
        header = _frames.read_header(window.view, pos, end, self.max_message_size, self._rsv())
        if header is None:
            self._head = window.view[pos:end].tobytes()
            return end
        self._start_frame(header)
        return self._feed_frame(window, pos + header.size, end)

    def _resume(self, window: _unmask.Window, pos: int, end: int) -> int:
        if self._head is not None:
            pos = self._complete_head(window, pos, end)
            if self._head is not None:
                return pos
        return self._feed_frame(window, pos, end)

    def _complete_head(self, window: _unmask.Window, pos: int, end: int) -> int:
        head = self._head
        take = min(MAX_HEADER_SIZE - len(head), end - pos)
        joined = head + window.view[pos : pos + take]
        header = _frames.read_header(
            memoryview(joined), 0, len(joined), self.max_message_size, self._rsv()
        )
        if header is None:  # 14 bytes always suffice, so the whole window was taken
            self._head = joined
            return pos + take
        self._head = None
        self._start_frame(header)
        return pos + header.size - len(head)

    def _rsv(self) -> int:
        """The RSV bits a negotiated extension gives a meaning."""
        return 0 if self._deflate is None else RSV1

    def _start_frame(self, header: _frames.Header) -> None:
        if not header.kind & 0x08 and self._state is OPEN:
            self._data_frame_start(header.kind, header.length)
        self._frame = _PartialFrame(header.kind, header.key, header.length)

    def _feed_frame(self, window: _unmask.Window, pos: int, end: int) -> int:
        """Unmask and consume the next piece of the partial frame's payload."""
        frame = self._frame
        stop = pos + min(frame.remaining, end - pos)
        frame.phase = window.unmask(pos, stop, frame.key, frame.phase)
        frame.remaining -= stop - pos
        chunk = window.view[pos:stop]
        if frame.remaining == 0:
            self._frame = None
        if frame.control is not None:
            frame.control += chunk
        elif self._state is OPEN:  # in CLOSING, data is dropped unread
            message = self._message
            if message.compressed:
                message.fin = frame.remaining == 0 and bool(frame.kind & FIN)
            try:
                message.add(chunk)
            except _Stalled:
                raise _Stalled(stop) from None
        if frame.remaining == 0:
            self._end_partial(frame)
        return stop

    def _end_partial(self, frame: _PartialFrame) -> None:
        if frame.control is not None:
            self._control(frame.kind & 0x0F, memoryview(frame.control))
        elif self._state is OPEN and frame.kind & FIN:
            self._message_end()
