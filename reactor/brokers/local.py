"""The local broker: the workers of one server pass publishes to each other.

Every worker listens on a Unix stream socket with an abstract name,
``\\0reactor-<supervisor pid>-<worker index>``, and keeps one outbound link to
each other worker, opened on its first publish. A publish is one record sent
on every outbound link; a worker reads records from its inbound links and
hands them to the topic registry. There is no relay process: a record costs
one hop, the sender's write and the receiver's read.

Why this shape (docs/DESIGN.md has the figures): the links are ordinary
reactor connections, so the reactor's write-first buffering, EPOLLOUT and
close order carry them; a stream keeps one sender's records in order and
never loses or repeats one while both processes live; abstract names need no
files and vanish with their process, so a worker restarted by the supervisor
re-joins by binding its name again, and the others reconnect on their next
publish (their old link saw the dead worker's EOF and closed).

Record (network byte order): u32 length of the rest, u8 kind (bit 7: a
broadcast, bits 0-3: the WebSocket opcode), u16 topic length, the topic in
UTF-8, the payload. Records published while the registry held its output
(one client read) leave in one write per link.

Bounds: a link's unsent output is bounded by OUTBOX_LIMIT; a publish that
finds a link over it is not queued for that worker: it is dropped, counted
in ``dropped`` and logged (at the 1st, 2nd, 4th, 8th... drop). A worker that
is not running (between its death and its restart) gets nothing; that is
counted in ``unreachable`` (its connections died with it).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from typing import Any

from ..handler import Handler
from ..loop import Connection, Reactor
from . import Sink

log = logging.getLogger("reactor.broker")

HEADER = struct.Struct("!IBH")  # length of what follows the u32, kind, topic length
LENGTH = struct.Struct("!I")
BROADCAST = 0x80  # kind bit: every connection, no topic
OPCODE_MASK = 0x0F
OUTBOX_LIMIT = 16 * 1024 * 1024  # bytes unsent per link: a worker stuck this long is
#                                  behind by thousands of messages; the bound caps memory
#                                  at (workers - 1) x this per worker
MAX_RECORD = 1 << 30  # a length past this is not from one of our workers: drop the link
RECONNECT_INTERVAL = 0.2  # seconds between connects to a worker found not running


def address(group: str, index: int) -> bytes:
    return f"\0reactor-{group}-{index}".encode()


def encode(topic: str | None, opcode: int, payload: bytes) -> bytes:
    name = b"" if topic is None else topic.encode()
    kind = opcode | (BROADCAST if topic is None else 0)
    return HEADER.pack(3 + len(name) + len(payload), kind, len(name)) + name + payload


class LocalBroker:
    """One worker's end of the local broker."""

    def __init__(self, reactor: Reactor, sink: Sink, group: str, index: int, workers: int):
        self.reactor = reactor
        self.sink = sink
        self.group = group
        self.index = index
        self.peers = [i for i in range(workers) if i != index]
        self._links: dict[int, Connection] = {}
        self._retry_at: dict[int, float] = {}  # peer -> when to try connecting again
        self._queued: list[bytes] = []
        self._sender = _LinkSender(self)
        self.stats = {"published": 0, "received": 0, "dropped": 0, "unreachable": 0}
        self._listen()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(address(self.group, self.index))
            sock.listen(len(self.peers) + 8)
        except OSError:
            sock.close()
            raise
        self.reactor.add_listener(sock, _LinkReceiver(self.sink, self.stats))

    # ---- sending ----------------------------------------------------------------

    def publish(self, topic: str | None, opcode: int, payload: bytes) -> None:
        self._queued.append(encode(topic, opcode, payload))

    def topic_added(self, topic: str) -> None:
        """Every worker gets every publish: no subscription to keep."""

    def topic_removed(self, topic: str) -> None:
        """See topic_added."""

    def flush(self) -> None:
        queued = self._queued
        if not queued:
            return
        self._queued = []
        data = queued[0] if len(queued) == 1 else b"".join(queued)
        self.stats["published"] += len(queued)
        for peer in self.peers:
            self._send(peer, data, len(queued))

    def _send(self, peer: int, data: bytes, count: int) -> None:
        link = self._link(peer)
        if link is not None and link.pending() > OUTBOX_LIMIT:
            self._count("dropped", count, f"worker {peer} is {link.pending()} bytes behind")
            return
        if link is not None:
            link.write(data)
            if not link.closed:
                return
            link = self._link(peer)  # it had died: the restarted worker may be there
            if link is not None:
                link.write(data)
                return
        self._count("unreachable", count, f"worker {peer} is not running")

    def _link(self, peer: int) -> Connection | None:
        link = self._links.get(peer)
        if link is not None and not link.closed:
            return link
        if self.reactor.stopping:
            return None  # shutting down: no new links
        now = self.reactor.now
        if self._retry_at.get(peer, 0.0) > now:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            sock.connect(address(self.group, peer))  # Unix stream: done at once or refused
        except OSError as exc:
            sock.close()
            self._retry_at[peer] = now + RECONNECT_INTERVAL
            if exc.errno not in (errno.ECONNREFUSED, errno.EAGAIN, errno.ENOENT):
                log.warning("broker: cannot reach worker %d: %s", peer, exc)
            return None
        self._retry_at.pop(peer, None)
        link = self.reactor.add_connection(sock.detach(), self._sender, peer)
        self._links[peer] = link
        return link

    def _count(self, what: str, count: int, why: str) -> None:
        before = self.stats[what]
        self.stats[what] = total = before + count
        if total.bit_length() > before.bit_length():  # logs at 1, 2, 4, 8...: never floods
            log.warning("broker: %s; %d publishes %s so far", why, total, what)

    def forget(self, link: Connection) -> None:
        for peer, known in list(self._links.items()):
            if known is link:
                del self._links[peer]


class _LinkSender(Handler):
    """Our end of an outbound link: written to, read only for the peer's EOF."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker

    def on_open(self, conn: Connection, peer: Any) -> None:
        conn.exempt_from_idle_timeout()

    def on_data(self, conn: Connection, data: memoryview) -> None:
        """A worker never writes on a link it accepted."""

    def on_close(self, conn: Connection, error: BaseException | None) -> None:
        self.broker.forget(conn)


class _LinkReceiver(Handler):
    """An inbound link: records from one other worker, in its order."""

    def __init__(self, sink: Sink, stats: dict[str, int]) -> None:
        self.sink = sink
        self.stats = stats

    def on_open(self, conn: Connection, peer: Any) -> None:
        conn.exempt_from_idle_timeout()
        conn.ctx = None  # a bytearray while a record is cut by the end of a read

    def on_data(self, conn: Connection, data: memoryview) -> None:
        rest = conn.ctx
        if rest is not None:
            rest += data
            data = memoryview(rest)
        sink = self.sink
        sink.hold()
        try:
            end = self._records(conn, data)
        finally:
            sink.release()
        if end < 0:
            return  # malformed: the link is closed
        if end == len(data):
            conn.ctx = None
        elif rest is None:
            conn.ctx = bytearray(data[end:])
        else:
            data.release()
            del rest[:end]

    def _records(self, conn: Connection, data: memoryview) -> int:
        """Deliver every complete record of ``data``; returns where the rest
        starts (-1: malformed, the link is closed)."""
        pos, size, receive = 0, len(data), self.sink.receive
        while size - pos >= HEADER.size:
            length, kind, topic_size = HEADER.unpack_from(data, pos)
            if length > MAX_RECORD or length < 3 + topic_size:
                log.error("broker: malformed record from a worker; dropping that link")
                conn.close()
                return -1
            end = pos + 4 + length
            if end > size:
                break
            start = pos + HEADER.size
            topic = None if kind & BROADCAST else str(data[start : start + topic_size], "utf-8")
            receive(topic, kind & OPCODE_MASK, bytes(data[start + topic_size : end]))
            self.stats["received"] += 1
            pos = end
        return pos

    def on_shutdown(self, conn: Connection) -> None:
        conn.close()
