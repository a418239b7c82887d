"""Topics: which connections of this worker are in which topic, and publishing
to them (``conn.subscribe``, ``server.publish``; the user guide is docs/topics.md).

The registry lives with the WebSocket glue, not in the reactor core. It holds
two maps and nothing per connection outside them:

- ``topic -> {connection: None}`` (an insertion-ordered dict used as a set), so a
  publish walks the subscribers of that topic only, never the reactor's slots;
- ``connection -> its topic`` (the str itself for one topic, the common case:
  a set costs 216 B more), only for connections in at least one topic, so the
  close of a connection leaves every topic it was in, and a connection in no
  topic costs nothing here.

A publish builds its frame once and writes those bytes to every subscriber.
While the handler answers a read (its output is corked, see ws.py), publishes
are held back and leave when the read is done: consecutive frames for one topic
are joined once and written to each subscriber in ONE write, so sixteen
publishes from one read cost each subscriber one syscall, not sixteen. Held
frames go out before any other output to a subscriber (a direct ``send``, a
broadcast, a close) and before a subscription changes, so a subscriber sees
what was published in the order it was published and only what was published
while it was subscribed.

A broker (``reactor/brokers/``) carries publishes to the other workers and
servers; it sees ``(topic, opcode, payload)``, never a connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..ws.frames import OP_BINARY, OP_TEXT, serialize_frame
from ..ws.protocol import OPEN

if TYPE_CHECKING:
    from .ws import WebSocketConnection, WebSocketHandler

EVERYONE = None  # the "topic" of a broadcast when it travels through a broker


class Broker(Protocol):
    """What the registry needs from a broker (reactor/brokers/)."""

    def publish(self, topic: str | None, opcode: int, payload: bytes) -> None:
        """Queue for every other worker / server; ``topic`` None is a broadcast."""

    def flush(self) -> None:
        """Send what was queued (once per client read: one write per link)."""

    def topic_added(self, topic: str) -> None:
        """This worker's first subscriber of ``topic``."""

    def topic_removed(self, topic: str) -> None:
        """This worker's last subscriber of ``topic`` left."""


def encode_message(message: Any, caller: str = "publish") -> tuple[int, bytes]:
    """(opcode, payload) of a text (str) or binary (bytes-like) message."""
    if isinstance(message, str):
        return OP_TEXT, message.encode()
    return OP_BINARY, as_bytes(message, caller)


def as_bytes(message: Any, caller: str) -> bytes:
    """Immutable bytes: a frame may be written after the call returns, so a
    buffer the app reuses (bytearray, memoryview) is copied now. Anything but
    a bytes-like object is the application's mistake: a TypeError saying so,
    raised in the caller before anything is queued."""
    if type(message) is bytes:
        return message
    try:
        return memoryview(message).tobytes()
    except TypeError:
        raise TypeError(
            f"{caller}() takes str (text) or bytes (binary), not {type(message).__name__}; "
            "use json.dumps() for JSON"
        ) from None


MAX_TOPIC_LENGTH = 1024  # characters: room names, not payloads; keeps every broker record
#                          header small (the local broker's topic length is 16 bits)


def check_topic(topic: Any) -> str:
    if type(topic) is not str:
        raise TypeError(f"a topic is a str, not {type(topic).__name__}")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise ValueError(f"a topic is at most {MAX_TOPIC_LENGTH} characters, not {len(topic)}")
    return topic


class Topics:
    """The per-worker topic registry and publisher of one WebSocket handler."""

    __slots__ = ("_handler", "_subscribers", "_topics_of", "_held", "_holding", "dirty", "broker")

    def __init__(self, handler: WebSocketHandler) -> None:
        self._handler = handler
        self._subscribers: dict[str, dict[WebSocketConnection, None]] = {}
        self._topics_of: dict[WebSocketConnection, str | set[str]] = {}
        # Publishes held while a read is answered: (topic, frame, connection that
        # already has it corked, or None), in publish order.
        self._held: list[tuple[str, bytes, WebSocketConnection | None]] = []
        self._holding = False  # a broker batch is being delivered (see hold())
        self.dirty = False  # held frames or queued broker records: flush() has work
        self.broker: Broker | None = None

    # ---- membership ------------------------------------------------------------

    def _change(self, ws: WebSocketConnection, topic: str, joining: bool) -> Any:
        """``ws``'s topics as stored (None, one str, or a set) when joining or
        leaving ``topic`` changes something, else False. Publishes held so far
        go out first: they were made before the change, for the old members."""
        check_topic(topic)
        mine = self._topics_of.get(ws)
        member = mine is not None and (mine == topic if type(mine) is str else topic in mine)
        if member is joining:
            return False
        if self.dirty:
            self.flush()
        return mine

    def subscribe(self, ws: WebSocketConnection, topic: str) -> bool:
        """Add ``ws`` to ``topic``; False if it was already in it."""
        mine = self._change(ws, topic, joining=True)
        if mine is False:
            return False
        if mine is None:
            self._topics_of[ws] = topic
        elif type(mine) is str:
            self._topics_of[ws] = {mine, topic}
        else:
            mine.add(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            self._subscribers[topic] = subscribers = {}
            if self.broker is not None:
                self.broker.topic_added(topic)
        subscribers[ws] = None
        return True

    def unsubscribe(self, ws: WebSocketConnection, topic: str) -> bool:
        """Remove ``ws`` from ``topic``; False if it was not in it."""
        mine = self._change(ws, topic, joining=False)
        if mine is False:
            return False
        if type(mine) is str:
            del self._topics_of[ws]
        else:
            mine.discard(topic)
            if len(mine) == 1:
                self._topics_of[ws] = next(iter(mine))
        self._leave(ws, topic)
        return True

    def topics_of(self, ws: WebSocketConnection) -> frozenset[str]:
        mine = self._topics_of.get(ws)
        if mine is None:
            return frozenset()
        return frozenset((mine,)) if type(mine) is str else frozenset(mine)

    def drop(self, ws: WebSocketConnection) -> None:
        """``ws`` closed: it leaves every topic it was in."""
        mine = self._topics_of.pop(ws, None)
        if mine is None:
            return
        for topic in (mine,) if type(mine) is str else mine:
            self._leave(ws, topic)

    def _leave(self, ws: WebSocketConnection, topic: str) -> None:
        subscribers = self._subscribers[topic]
        del subscribers[ws]
        if not subscribers:
            del self._subscribers[topic]  # no empty topic outlives its last subscriber
            if self.broker is not None:
                self.broker.topic_removed(topic)

    def subscriber_count(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))

    @property
    def topic_count(self) -> int:
        return len(self._subscribers)

    # ---- publishing ----------------------------------------------------------------

    def publish(self, topic: str, message: Any) -> None:
        """Every subscriber of ``topic`` here and, through the broker, elsewhere."""
        check_topic(topic)
        opcode, payload = encode_message(message)
        self.deliver(topic, serialize_frame(opcode, payload))
        self.forward(topic, opcode, payload)

    def forward(self, topic: str | None, opcode: int, payload: bytes) -> None:
        """Hand a publish (``topic`` None: a broadcast) to the broker, if any:
        sent at once, or with the others of this read when output is held."""
        broker = self.broker
        if broker is not None:
            broker.publish(topic, opcode, payload)
            if self._handler.cork.owner is None and not self._holding:
                broker.flush()
            else:
                self.dirty = True

    def deliver(self, topic: str, frame: bytes) -> None:
        """Write ``frame`` to this worker's subscribers of ``topic`` (held while
        a read is answered; see the module docstring)."""
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return
        corked = self._handler.cork.owner
        if corked is None and not self._holding:
            for ws in subscribers:
                if ws._state is OPEN:
                    ws._push(frame)
            return
        if corked is not None and corked in subscribers and corked._state is OPEN:
            corked._push(frame)  # into the corked output, in order with its replies
        else:
            corked = None
        self._held.append((topic, frame, corked))
        self.dirty = True

    # ---- what other workers published (the broker's Sink) ---------------------------

    def hold(self) -> None:
        self._holding = True

    def receive(self, topic: str | None, opcode: int, payload: bytes) -> None:
        frame = serialize_frame(opcode, payload)
        if topic is None:
            self._handler.broadcast_frame(frame, opcode, payload)
        else:
            self.deliver(topic, frame)

    def release(self) -> None:
        """The broker's batch is delivered: write it."""
        self._holding = False
        self.flush()

    def flush(self) -> None:
        """Write the held publishes: per run of one topic, one joined write to
        each subscriber. Then the broker sends what this read published."""
        self.dirty = False
        if self.broker is not None:
            self.broker.flush()
        held, self._held = self._held, []
        start, end = 0, len(held)
        while start < end:
            topic, frame, skip = held[start]
            stop = start + 1
            while stop < end and held[stop][0] == topic and held[stop][2] is skip:
                stop += 1
            if stop - start > 1:
                frame = b"".join([item[1] for item in held[start:stop]])
            for ws in self._subscribers.get(topic, ()):
                if ws is not skip and ws._state is OPEN:
                    ws._push(frame)
            start = stop
