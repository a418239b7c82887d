"""The Redis broker (``--broker redis://[:PASSWORD@]HOST[:PORT][/DB]``): servers
on several machines share publishes through Redis pub/sub.

Each worker keeps two connections to Redis on its own reactor (outbound
connections of the core, never a blocking client): one SUBSCRIBEd, one for
PUBLISH. Two, because a RESP2 connection in subscribe mode accepts no other
command. Replies are parsed by ``hiredis.Reader`` (the C parser).

Channels: ``reactor:<DB>:t:<topic>`` for a topic and ``reactor:<DB>:all`` for
broadcasts (pub/sub ignores Redis databases, so the DB number of the URL
separates deployments sharing one Redis). A worker subscribes to the channel of
a topic when its first connection joins it and unsubscribes when the last one
leaves, so Redis sends a worker only what its connections want (a pattern
subscription would send every publish to every worker). A message is the
WebSocket opcode (1 byte), the publishing worker's random id (8 bytes, so it
skips its own publishes: it delivered them already) and the payload.

Publishes are pipelined: those of one client read leave in one write.

Redis down or restarting: local delivery goes on; the loss is logged once;
the worker reconnects with back-off (RECONNECT_MIN doubling to
RECONNECT_MAX), subscribes again to every channel it needs, and logs how many
publishes it could not pass on meanwhile (counted in ``stats["dropped"]``).
Redis pub/sub is at-most-once: what is published while a server is away
from Redis never reaches it. Nothing is queued while Redis is away, and the
publish connection's unsent output is bounded by OUTBOX_LIMIT (past it,
publishes are dropped and counted).
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from ..handler import Handler
from ..loop import Connection, Reactor
from . import Sink

log = logging.getLogger("reactor.broker")

DEFAULT_PORT = 6379
RECONNECT_MIN = 0.1  # seconds before the first reconnect: a restart takes longer
RECONNECT_MAX = 5.0  # seconds between attempts at most, while Redis stays away
OUTBOX_LIMIT = 16 * 1024 * 1024  # unsent PUBLISH bytes: Redis this far behind is stuck
ORIGIN_SIZE = 8  # bytes of random worker id in every message
OP_TEXT, OP_BINARY = 1, 2  # RFC 6455 opcodes a message may carry (the core imports no ws/)


class BrokerUrlError(ValueError):
    """A --broker value that names no usable Redis."""


def parse_url(url: str) -> tuple[str, int, str | None, int]:
    """(host, port, password, db) of ``redis://[:PASSWORD@]HOST[:PORT][/DB]``."""
    parts = urlsplit(url)
    if parts.scheme == "rediss":
        raise BrokerUrlError("rediss:// (Redis over TLS) is not supported yet; use redis://")
    if parts.scheme != "redis" or not parts.hostname:
        raise BrokerUrlError(f"{url!r}: expected redis://[:PASSWORD@]HOST[:PORT][/DB]")
    try:
        port = parts.port or DEFAULT_PORT
        db = int(parts.path.strip("/") or 0)
    except ValueError:
        raise BrokerUrlError(f"{url!r}: the port and the database are numbers") from None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, password, db


def command(*args: bytes) -> bytes:
    """One RESP request (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


class RedisBroker:
    """One worker's two Redis connections and its topic channels."""

    def __init__(self, reactor: Reactor, sink: Sink, url: str) -> None:
        import hiredis  # the optional extra: pip install 'reactor[redis]'

        self._reader_class = hiredis.Reader
        self.reactor = reactor
        self.sink = sink
        self.host, self.port, self.password, db = parse_url(url)
        self.prefix = b"reactor:%d:" % db
        self.everyone = self.prefix + b"all"
        self.origin = os.urandom(ORIGIN_SIZE)
        self.topics: set[str] = set()  # topics with subscribers in this worker
        self.stats = {"published": 0, "received": 0, "dropped": 0, "reconnects": 0, "foreign": 0}
        self._queued: list[bytes] = []
        self._outage_dropped = 0  # dropped since Redis went away (logged on return)
        self._down_logged = False
        self.subscriber = _RedisLink(self, "subscriber")
        self.publisher = _RedisLink(self, "publisher")
        self.subscriber.open()
        self.publisher.open()

    # ---- topics this worker needs ------------------------------------------------

    def topic_added(self, topic: str) -> None:
        self.topics.add(topic)
        self.subscriber.send(command(b"SUBSCRIBE", self.channel(topic)))

    def topic_removed(self, topic: str) -> None:
        self.topics.discard(topic)
        self.subscriber.send(command(b"UNSUBSCRIBE", self.channel(topic)))

    def channel(self, topic: str) -> bytes:
        return self.prefix + b"t:" + topic.encode()

    # ---- publishing --------------------------------------------------------------

    def publish(self, topic: str | None, opcode: int, payload: bytes) -> None:
        channel = self.everyone if topic is None else self.channel(topic)
        message = bytes((opcode,)) + self.origin + payload
        self._queued.append(command(b"PUBLISH", channel, message))

    def flush(self) -> None:
        queued = self._queued
        if not queued:
            return
        self._queued = []
        link = self.publisher
        if not link.ready or link.conn.pending() > OUTBOX_LIMIT:
            self.stats["dropped"] += len(queued)
            self._outage_dropped += len(queued)
            return
        self.stats["published"] += len(queued)
        link.conn.write(queued[0] if len(queued) == 1 else b"".join(queued))

    # ---- what Redis sends --------------------------------------------------------------

    def on_reply(self, link: _RedisLink, reply: Any) -> None:
        if isinstance(reply, Exception):  # e.g. a wrong password: say it, then retry later
            log.error("redis %s:%d: %s", self.host, self.port, reply)
            link.conn.close()
            return
        if link is self.publisher:
            return  # PUBLISH answers how many subscribers got it: nothing to do
        if type(reply) is list and reply and reply[0] == b"message":
            self._message(reply[1], reply[2])
        elif type(reply) is list and reply and reply[0] == b"subscribe" and link.greeting:
            link.greeting = False
            self._up(link)

    def _message(self, channel: bytes, message: bytes) -> None:
        if message[1 : 1 + ORIGIN_SIZE] == self.origin:
            return  # our own publish: delivered locally already
        if len(message) < 1 + ORIGIN_SIZE or message[0] not in (OP_TEXT, OP_BINARY):
            self.stats["foreign"] += 1  # not from one of our servers: another Redis user
            return
        opcode, payload = message[0], message[1 + ORIGIN_SIZE :]
        self.stats["received"] += 1
        if channel == self.everyone:
            self.sink.receive(None, opcode, payload)
        else:
            topic = channel[len(self.prefix) + 2 :].decode()
            self.sink.receive(topic, opcode, payload)

    # ---- connection state --------------------------------------------------------------

    def greeting(self, link: _RedisLink) -> bytes:
        """What a fresh connection sends first: AUTH, and the subscriptions."""
        first = command(b"AUTH", self.password.encode()) if self.password is not None else b""
        if link is self.subscriber:
            channels = [self.everyone, *map(self.channel, sorted(self.topics))]
            return first + command(b"SUBSCRIBE", *channels)
        return first + command(b"PING")

    def _up(self, link: _RedisLink) -> None:
        link.ready = True
        if not (self.subscriber.ready and self.publisher.ready):
            return
        if self._down_logged:
            log.warning(
                "redis %s:%d: connected again, subscribed to %d topics; %d publishes to "
                "other servers were dropped while it was away",
                self.host,
                self.port,
                len(self.topics),
                self._outage_dropped,
            )
        else:
            log.info("redis %s:%d: connected (%d topics)", self.host, self.port, len(self.topics))
        self._down_logged = False
        self._outage_dropped = 0

    def down(self, link: _RedisLink, error: BaseException | None) -> None:
        if not self._down_logged:
            self._down_logged = True
            log.warning(
                "redis %s:%d: %s; serving local traffic, publishes to other servers are "
                "dropped until it is back",
                self.host,
                self.port,
                error or "connection closed",
            )


class _RedisLink(Handler):
    """One connection to Redis: connect, greet, parse replies, reconnect."""

    def __init__(self, broker: RedisBroker, role: str) -> None:
        self.broker = broker
        self.role = role
        self.conn: Connection | None = None
        self.reader: Any = None
        self.ready = False  # greeted and answered: publishes and subscriptions flow
        self.greeting = False  # waiting for the greeting's answer
        self.delay = RECONNECT_MIN

    def open(self) -> None:
        broker = self.broker
        try:
            self.conn = broker.reactor.connect(broker.host, broker.port, self)
        except OSError as exc:
            self.conn = None
            self._retry(exc)

    def send(self, data: bytes) -> None:
        if self.ready or self.greeting:  # else the greeting will carry the subscription
            self.conn.write(data)

    def on_open(self, conn: Connection, peer: Any) -> None:
        conn.exempt_from_idle_timeout()
        self.reader = self.broker._reader_class()
        self.greeting = True
        conn.write(self.broker.greeting(self))

    def on_data(self, conn: Connection, data: memoryview) -> None:
        reader, broker = self.reader, self.broker
        reader.feed(data)
        sink = broker.sink
        sink.hold()  # what one read brings leaves in one write per subscriber
        try:
            while (reply := reader.gets()) is not False:
                if self.greeting and self is broker.publisher:
                    self._greeted(reply)
                else:
                    broker.on_reply(self, reply)
                if conn.closed:
                    return
        finally:
            sink.release()

    def _greeted(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            self.broker.on_reply(self, reply)
        elif reply == b"PONG":
            self.greeting = False
            self.delay = RECONNECT_MIN
            self.broker._up(self)

    def on_shutdown(self, conn: Connection) -> None:
        conn.close()

    def on_close(self, conn: Connection, error: BaseException | None) -> None:
        was_ready = self.ready
        self.ready = self.greeting = False
        self.conn = None
        if self.broker.reactor.stopping:
            return
        if was_ready:
            self.delay = RECONNECT_MIN  # it was up: try again soon
        self._retry(error)

    def _retry(self, error: BaseException | None) -> None:
        self.broker.down(self, error)
        self.broker.stats["reconnects"] += 1
        self.broker.reactor.call_later(self.delay, self._reopen)
        self.delay = min(self.delay * 2, RECONNECT_MAX)

    def _reopen(self) -> None:
        if self.conn is None and not self.broker.reactor.stopping:
            self.open()
