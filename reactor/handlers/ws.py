"""WebSocket over the reactor (``--proto ws``): the glue between reactor/loop.py,
the sans-I/O ``reactor.ws`` machine and the application API (reactor/app.py).

One connection's life (the C design's handshake -> transmission -> end states):

    accepted --head parsed (RequestParser: any split, --header-timeout)-->
        plain HTTP: 426 | malformed: 4xx | refused (version, Origin, app): 4xx -> lingering close
        valid: 101 + app.on_open -> OPEN --close frame either way--> CLOSED -> TCP close

``conn.ctx`` is None before the first byte, a ``Handshaking`` while a head is
incomplete, ANSWERED once an HTTP error answer is on its way (the handshake
path: reactor/handlers/ws_upgrade.py), then the ``WebSocketConnection``: a
``__slots__`` subclass of ``ServerProtocol`` that is also the object the
application gets as ``conn``. It adds four slots
(reactor slot, user data, subprotocol, ping mark), all pointing at shared
objects while idle: no buffer, timer, dict entry or request survives the
handshake (112 B, plus the reactor's 88 B event slot).

Hot path: ``on_data`` hands the reactor's receive buffer itself to
``receive()`` (frames are unmasked in place). Output is CORKED meanwhile:
frames the app sends to this connection, pongs and close frames collect in
one handler-wide list (no copies) and leave in ONE write after the read, so
16 pipelined echoes cost one syscall, not 16 (reactor/handlers/cork.py).

permessage-deflate (--compression, docs/compression.md): the handshake's
``validate`` negotiates it and hands over the connection's codec (ws/deflate.py,
shared by every connection that keeps no context), which ServerProtocol keeps
in its one slot; ``send`` compresses from --compression-threshold bytes on, on
the loop thread (the shared compressor is the worker's, not thread-safe), and
``broadcast`` compresses once per shared compressor.

Timers: ONE sweep every SWEEP_INTERVAL walks the reactor's slots for
keepalive and header timeouts, so nothing per connection is scheduled:
- a connection silent since its accept is closed after --header-timeout
  (its ``last_active`` is the accept tick); a started head has
  --header-timeout from its first byte (``Handshaking.since``), else 408;
- a ping is due after --ping-interval seconds without input (the reactor's
  ``last_active`` tick); the ping mark is the tick it was sent, and any input
  since (pong or data) clears it. No input for --ping-timeout after the ping:
  close 1011 and TCP close at once. Why 1011: "an unexpected condition
  prevented fulfilling the request" (§7.4.1), as the websockets library does;
  1001 means an endpoint going away, which is what our shutdown sends.
Only a closing connection owns a timer (--close-timeout): a bounded wait for
the peer's close after ours (§7.1.1: the server should not wait forever).

Backpressure (see docs/guide.md): the core stops reading from a
connection while its output is over --max-send-buffer, which bounds what it
gets in reply to its own messages. Output pushed to a connection from
elsewhere (broadcast, other connections, timers) when it is already over the
limit closes it with 1008 (policy violation) instead of buffering more.

Topics (reactor/handlers/topics.py): the handler owns this worker's topic
registry (``conn.subscribe``, ``server.publish``) and the broker that carries
publishes to the other workers or servers (reactor/brokers/). Publishes made
while a read is answered are held with the cork and leave after it, one write
per subscriber; any other output to another connection releases them first.

Application exceptions are caught around every callback: logged once with
the traceback, that connection closed with 1011. Catching inside the hooks
matters: an exception (above all a ProtocolError) escaping ``receive()``
would read as a peer violation and leave the frame stream mid-window.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from threading import get_ident
from typing import Any

from .. import brokers
from ..app import CLOSE_INTERNAL_ERROR, Router, callbacks, defines, load_app, make_app
from ..concurrency import DEFAULT_THREADS, ReactorFuture, ThreadPool
from ..handler import Handler
from ..loop import Connection, Reactor, Timer
from ..ws import deflate, native
from ..ws import unmask as _unmask
from ..ws.frames import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    close_payload,
    frame_header,
    serialize_frame,
)
from ..ws.protocol import CLOSED, DEFAULT_MAX_MESSAGE_SIZE, OPEN, ServerProtocol
from . import warn_if_head_scanner_missing
from .access import AccessLog
from .cork import WRITEV_MIN, Cork
from .static import DEFAULT_HEADER_TIMEOUT  # one request-head bound for both protocols
from .topics import EVERYONE, Topics, as_bytes, encode_message
from .ws_async import COROUTINE_CALLBACKS, AsyncCallbacks, coroutine_callbacks
from .ws_upgrade import ANSWERED, UpgradeHandling

log = logging.getLogger("reactor.ws")

DEFAULT_PING_INTERVAL = 20.0  # seconds of silence before a ping: below the 30-60 s that
#                               proxies and NAT tables commonly keep an idle flow
DEFAULT_PING_TIMEOUT = 20.0  # seconds for any answer: generous for mobile links
DEFAULT_CLOSE_TIMEOUT = 5.0  # seconds we wait for the peer's close after ours (§7.1.1)
SWEEP_INTERVAL = 1.0  # seconds: keepalive and silent-connection checks count whole seconds
#                        (the reactor tick); a pass over 20k connections costs ~5 ms
PING_TIMEOUT_CODE = CLOSE_INTERNAL_ERROR  # see the module docstring for 1011 vs 1001

_PING = serialize_frame(OP_PING)  # every keepalive ping is the same empty frame
# Headers of unfragmented server frames with a 7-bit length, built once (§5.2).
_TEXT_HEADERS = [frame_header(OP_TEXT, n) for n in range(126)]
_BINARY_HEADERS = [frame_header(OP_BINARY, n) for n in range(126)]


class WebSocketConnection(ServerProtocol):
    """One open WebSocket connection: the protocol machine, and the ``conn``
    object of the application API (see reactor/app.py ``Connection``).

    ``handler`` and the app callbacks are class attributes of a per-handler
    subclass, so they cost no slot per connection.
    """

    __slots__ = ("_conn", "data", "subprotocol", "_pinged_at")
    handler: WebSocketHandler
    _app_message: Any
    _app_close: Any

    def __init__(
        self,
        conn: Connection,
        subprotocol: str | None,
        max_message_size: int,
        extension: deflate.PerMessageDeflate | None = None,
    ) -> None:
        ServerProtocol.__init__(self, max_message_size, extension)
        self._conn = conn
        self.data: Any = None
        self.subprotocol = subprotocol
        self._pinged_at: int | None = None  # reactor tick of an unanswered ping

    def __repr__(self) -> str:
        return f"<WebSocketConnection fd={self._conn.fd} {self._state.name}>"

    # ---- the application API ----------------------------------------------

    def send(self, message: str | bytes | bytearray | memoryview) -> bool:
        """Queue a text (str) or binary message; see app.Connection.send."""
        if type(message) is bytes:  # the common types first: the check costs them nothing
            payload, headers, opcode = message, _BINARY_HEADERS, OP_BINARY
        elif isinstance(message, str):
            payload, headers, opcode = message.encode(), _TEXT_HEADERS, OP_TEXT
        else:  # a TypeError for anything else, whatever the state: the caller's bug shows
            payload, headers, opcode = as_bytes(message, "send"), _BINARY_HEADERS, OP_BINARY
        if self._state is not OPEN:
            return False
        codec = self._deflate  # permessage-deflate: the one check when it is off
        compress = codec is not None and len(payload) >= codec.threshold
        handler = self.handler
        if get_ident() != handler.reactor.loop_thread:  # never touch another read's cork
            if compress:  # the compressor belongs to the reactor thread: it frames it there
                handler._post(self, (self._send_compressed, (opcode, payload)))
                return True
            return self._send_from_thread(opcode, payload)
        if compress:
            return self._push(self.frame_message(opcode, payload))
        cork = handler.cork
        if cork.owner is self:  # answering its own input: one write after the read
            parts = cork.parts
            size = len(payload)
            if size < 126:
                parts.append(headers[size])
            else:
                parts.append(frame_header(opcode, size))
                if size >= WRITEV_MIN:
                    cork.gather = True
            parts.append(payload)
            return True
        return self._push(serialize_frame(opcode, payload))

    def _send_compressed(self, opcode: int, payload: bytes) -> None:
        if self._state is OPEN:  # it may have closed since the other thread sent
            self._push(self.frame_message(opcode, payload))

    def _send_from_thread(self, opcode: int, payload: bytes) -> bool:
        """The frame is built here, in the caller's thread; the reactor thread
        only writes it (see WebSocketHandler._flush_outbox)."""
        self.handler._post(self, serialize_frame(opcode, payload))
        return True

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake; TCP closes when the peer answers, or
        after --close-timeout. No-op once closing."""
        reactor = self.handler.reactor
        if get_ident() != reactor.loop_thread:
            close_payload(code, reason)  # the caller's mistake is raised to the caller
            self.handler._post(self, (self.close, (code, reason)))
            return
        frame = ServerProtocol.close(self, code, reason)  # validates code and reason
        if frame:
            self._emit(frame)
            self.handler._close_later(self._conn, self)

    def ping(self, payload: bytes = b"") -> bool:
        if self._state is not OPEN:
            return False
        reactor = self.handler.reactor
        if get_ident() != reactor.loop_thread:
            if len(payload) > 125:  # the caller's mistake is raised to the caller (§5.5)
                raise ValueError("a ping payload is at most 125 bytes")
            self.handler._post(self, (self.ping, (bytes(payload),)))
            return True
        self._emit(ServerProtocol.ping(self, payload))  # validates the 125-byte limit
        return True

    def subscribe(self, topic: str) -> bool:
        """Join ``topic`` (see app.Connection.subscribe)."""
        if self._state is not OPEN:
            return False
        return self.handler.topics.subscribe(self, topic)

    def unsubscribe(self, topic: str) -> bool:
        return self.handler.topics.unsubscribe(self, topic)

    @property
    def topics(self) -> frozenset[str]:
        return self.handler.topics.topics_of(self)

    @property
    def remote_address(self) -> Any:
        if self._state is CLOSED:
            return None  # the reactor slot may already belong to another connection
        forwarded = self.handler._forwarded
        if forwarded and self in forwarded:
            return forwarded[self]
        try:
            return self._conn.peer()
        except OSError:
            return None

    @property
    def buffered_amount(self) -> int:
        if self._state is CLOSED:
            return 0
        handler = self.handler
        corked = handler.cork.pending() if handler.cork.owner is self else 0
        return self._conn.pending() + corked

    @property
    def writable(self) -> bool:
        """False while buffered output is over the high-water mark: stop
        producing until ``on_drain``, which this arranges (reactor thread only)."""
        handler = self.handler
        if self in handler._draining:
            return False
        if self._state is not OPEN or self.buffered_amount < handler.high_water:
            return self._state is OPEN
        handler._await_drain(self)
        return False

    # ---- output ------------------------------------------------------------

    def _emit(self, frame: bytes) -> None:
        """Control frames: always sent (tiny), corked when answering input."""
        handler = self.handler
        if handler.cork.owner is self:
            handler.cork.parts.append(frame)
        else:
            if handler.topics.dirty:
                handler.topics.flush()  # held publishes first: they came before
            self._conn.write(frame)

    def _push(self, frame: bytes) -> bool:
        """A data frame built once (send, broadcast), under the 1008 policy."""
        handler = self.handler
        if handler.cork.owner is self:
            handler.cork.add(frame)
            return True
        if handler.topics.dirty:
            handler.topics.flush()  # held publishes first: they came before
        conn = self._conn
        if conn.pending() > handler.max_send_buffer:
            self._overflow()
            return False
        conn.write(frame)
        if conn.out is not None and len(conn.out) > handler.high_water:
            handler._await_drain(self)
        return True

    def _overflow(self) -> None:
        conn = self._conn
        log.info(
            "fd %d: %d bytes of output waiting, over --max-send-buffer: closing with 1008",
            conn.fd,
            conn.pending(),
        )
        conn.write(ServerProtocol.close(self, CLOSE_POLICY_VIOLATION, "send buffer full"))
        conn.close_after_flush()  # the close frame queues behind the backlog; reading stops
        self.handler._close_later(conn, self)  # a peer that never reads: bounded

    # ---- keepalive ---------------------------------------------------------

    def _ping_timed_out(self) -> None:
        conn = self._conn
        log.debug("fd %d: no answer to a ping: closing", conn.fd)
        conn.write(ServerProtocol.close(self, PING_TIMEOUT_CODE, "ping timeout"))
        conn.close()  # the peer is gone or stuck: no closing handshake to wait for

    # ---- ServerProtocol hooks ------------------------------------------------

    def on_message(self, data: str | bytes) -> None:
        try:
            self._app_message(self, data)
        except Exception as exc:
            self._app_failed("on_message", exc)

    def on_output(self, data: bytes) -> None:
        self._emit(data)  # pongs and close frames produced by receive()

    def on_stall(self) -> None:
        """Inflating spent this read's budget: stop reading and go on from the
        loop, so other connections are served in between."""
        conn = self._conn
        conn.pause_reading()
        self.handler.reactor.call_later(0, self.handler._drain, conn, self)

    def on_final_output(self, data: bytes) -> None:
        self._emit(data)  # always corked: it comes from receive()
        self.handler.cork.final = True  # _flush closes TCP with it

    def on_close(self, code: int, reason: str) -> None:
        handler = self.handler
        handler.open_count -= 1
        if handler.router is not None:
            type(self).open_count -= 1  # this routed app's count
        handler._draining.discard(self)
        try:
            self._app_close(self, code, reason)  # conn.topics still answers here
        except Exception:
            log.exception("application on_close failed on fd %d", self._conn.fd)
        finally:
            handler.topics.drop(self)
            if handler._forwarded:
                handler._forwarded.pop(self, None)

    def _app_failed(self, callback: str, exc: Exception) -> None:
        log.error(
            "application %s failed on fd %d; closing that connection with 1011",
            callback,
            self._conn.fd,
            exc_info=exc,
        )
        if self._state is OPEN:
            self.close(CLOSE_INTERNAL_ERROR, "internal error")


class _Routed:
    """Never a connection's class: behind a Router every connection takes the
    routed branch of on_data."""


def _write_frames(frames: dict[WebSocketConnection, list[bytes]]) -> None:
    for ws, parts in frames.items():
        if ws._state is OPEN:  # it may have closed since the other thread sent
            ws._push(parts[0] if len(parts) == 1 else b"".join(parts))


class WebSocketServer:
    """``app.server``: this worker's connections, topics, broadcast and timers."""

    def __init__(self, handler: WebSocketHandler, kinds: frozenset[type]) -> None:
        self._handler = handler
        self.connections = LiveConnections(handler, kinds)

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview) -> None:
        """Every subscriber of ``topic``, on every worker (see app.Server.publish)."""
        handler = self._handler
        if get_ident() != handler.reactor.loop_thread:
            if not isinstance(message, str):
                message = as_bytes(message, "publish")  # a copy, made in the caller's thread
            handler._post(None, (handler.topics.publish, (topic, message)))
            return
        handler.topics.publish(topic, message)

    def broadcast(self, message: str | bytes | bytearray | memoryview, local: bool = False) -> int:
        """Every open connection, on every worker unless ``local``; returns how
        many connections of this worker got it (0 when called from another thread:
        the count is known only on the reactor thread)."""
        opcode, payload = encode_message(message, "broadcast")
        handler = self._handler
        if get_ident() != handler.reactor.loop_thread:
            handler._post(None, (self._broadcast, (opcode, payload, local)))
            return 0
        return self._broadcast(opcode, payload, local)

    def _broadcast(self, opcode: int, payload: bytes, local: bool) -> int:
        sent = self._handler.broadcast_frame(serialize_frame(opcode, payload), opcode, payload)
        if not local:
            self._handler.topics.forward(EVERYONE, opcode, payload)
        return sent

    def subscriber_count(self, topic: str) -> int:
        """Subscribers of ``topic`` on this worker."""
        return self._handler.topics.subscriber_count(topic)

    @property
    def broker_stats(self) -> dict[str, int]:
        """This worker's broker counters (a copy; empty without a broker)."""
        broker = self._handler.topics.broker
        return dict(getattr(broker, "stats", {}))

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        return self._handler.reactor.call_later(delay, callback, *args)

    def call_every(self, interval: float, callback: Any, *args: Any) -> Timer:
        return self._handler.reactor.call_every(interval, callback, *args)

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        self._handler._post(None, (callback, args))  # in order with this thread's sends

    def run_in_thread(self, fn: Any, *args: Any) -> ReactorFuture:
        return self._handler.pool.submit(fn, *args)

    @property
    def high_water(self) -> int:
        return self._handler.high_water

    @property
    def low_water(self) -> int:
        return self._handler.reactor.low_water


def _compressed_frame(
    ws: WebSocketConnection, opcode: int, payload: bytes, plain: bytes, built: dict[int, bytes]
) -> bytes:
    """The frame of a broadcast for a connection with permessage-deflate:
    compressed once per shared compressor (``built``), or for it alone when
    it keeps a compression context."""
    codec = ws._deflate
    if len(payload) < codec.threshold:
        return plain
    key = codec.broadcast_key
    if key is None:
        return ws.frame_message(opcode, payload)
    frame = built.get(key)
    if frame is None:
        frame = built[key] = ws.frame_message(opcode, payload)
    return frame


class LiveConnections:
    """Iterable and sized view of the open connections. It scans the reactor's
    event slots instead of keeping a set: zero bytes per connection."""

    __slots__ = ("_handler", "_kinds")

    def __init__(self, handler: WebSocketHandler, kinds: frozenset[type]) -> None:
        self._handler = handler
        self._kinds = kinds  # the connection classes of one app, or of every routed app

    def __len__(self) -> int:
        if self._kinds == self._handler.connection_kinds:
            return self._handler.open_count
        return sum(kind.open_count for kind in self._kinds)

    def __iter__(self):
        kinds = self._kinds
        for conn in self._handler.reactor.connections():
            ws = conn.ctx
            if type(ws) in kinds and ws._state is not CLOSED:
                yield ws


class WebSocketHandler(UpgradeHandling, Handler):
    """Serves WebSocket connections for one reactor; see the module docstring."""

    def __init__(
        self,
        reactor: Reactor,
        app: Any = None,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        subprotocols: tuple[str, ...] = (),
        origins: list[str | None] | None = None,
        forwarded_allow_ips: tuple[str, ...] = (),
        broker: Callable[[Topics], Any] | None = None,
        threads: int = DEFAULT_THREADS,
        compression: deflate.Compression | None = None,
        access_log_enabled: bool = False,
    ) -> None:
        self.reactor = reactor
        # --proto ws logs its handshakes; with auto the HTTP handler does.
        self.access = AccessLog() if AccessLog.enabled(access_log_enabled) else None
        # permessage-deflate: this worker's mode and shared compressors
        self.compression = deflate.Compression("off") if compression is None else compression
        # The receive buffer prepared once for the C routines (every on_data
        # view starts at its offset 0).
        self._window = _unmask.window(reactor.recv_buffer)
        self.max_message_size = max_message_size
        self.max_send_buffer = reactor.max_send_buffer
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.header_timeout = header_timeout
        self.subprotocols = tuple(subprotocols)
        self.origins = origins
        self.open_count = 0  # connections opened and not yet reported closed
        self.cork = Cork()  # the output of the connection whose read is answered
        self.topics = Topics(self)
        if broker is not None:  # before on_start, which may already publish
            self.topics.broker = broker(self.topics)
        # --forwarded-allow-ips: proxies whose X-Forwarded-For names the client ("*": any).
        self.forwarded_allow_ips = frozenset(forwarded_allow_ips)
        self._forwarded: dict[WebSocketConnection, tuple[str, int]] = {}  # proxied ones only
        self.high_water = reactor.high_water  # flow control: see _await_drain
        self._draining: set[WebSocketConnection] = set()  # over high water, owed on_drain
        self.pool = ThreadPool(reactor, threads)  # starts no thread until run_in_thread
        # What other threads asked, in order: frames, and calls (close, ping,
        # broadcast, call_soon_threadsafe); run by one reactor-thread call per batch.
        self._outbox: deque[tuple[WebSocketConnection | None, Any]] = deque()
        self._outbox_armed = False
        reactor.add_finisher(self.pool.join)  # a graceful stop waits for running jobs
        self.app = make_app(app)
        self._bind_app()
        reactor.call_every(SWEEP_INTERVAL, self._sweep)
        for app in self.router.apps() if self.router is not None else (self.app,):
            start = getattr(app, "on_start", None)
            if start is not None:
                start(self.app_kinds[id(app)].server)

    def _bind_app(self) -> None:
        """One connection class per application (a Router has several): the
        app's callbacks are its class attributes, so they cost no slot."""
        router = self.app if isinstance(self.app, Router) else None
        apps = list(router.apps()) if router is not None else [self.app]
        coroutines = set().union(*(coroutine_callbacks(app) for app in apps))
        self.async_callbacks = AsyncCallbacks(self.reactor) if coroutines else None
        self.router = router
        kinds = {id(app): self._bind(app) for app in apps}
        self.app_kinds = kinds  # id(app) -> its connection class
        self.connection_kinds = frozenset(kinds.values())
        if router is None:
            self.connection_class = kinds[id(self.app)]
            self.server = self.connection_class.server
        else:  # no class is "the" one: on_data takes its routed branch
            self.connection_class = _Routed
            self.server = WebSocketServer(self, self.connection_kinds)

    def shared_async_callbacks(self) -> AsyncCallbacks:
        """The companion asyncio thread, for coroutine on_request too (one per worker)."""
        if self.async_callbacks is None:
            self.async_callbacks = AsyncCallbacks(self.reactor)
        return self.async_callbacks

    def _bind(self, app: Any) -> type[WebSocketConnection]:
        chosen = dict(zip(COROUTINE_CALLBACKS, callbacks(app), strict=True))
        coroutines = coroutine_callbacks(app)
        for name in coroutines - {"on_upgrade"}:
            chosen[name] = self.async_callbacks.wrap(name, chosen[name])
        kind = type(
            "WebSocketConnection",
            (WebSocketConnection,),
            {
                "__slots__": (),
                "handler": self,
                "_app_message": chosen["on_message"],
                "_app_close": chosen["on_close"],
                "_app_upgrade": chosen["on_upgrade"],
                "_app_open": chosen["on_open"],
                "_app_drain": chosen["on_drain"],
                "_async_upgrade": "on_upgrade" in coroutines,
                "open_count": 0,  # behind a Router: this app's open connections
                "speaks_websocket": callable(getattr(app, "on_message", None)),
                # Without its own on_upgrade or on_open the app never sees the
                # request: the handshake builds none.
                "wants_request": defines(app, "on_upgrade") or defines(app, "on_open"),
            },
        )
        kind.server = WebSocketServer(self, frozenset((kind,)))
        try:
            app.server = kind.server
        except AttributeError:
            pass  # a duck-typed app with __slots__ simply has no .server
        return kind

    # ---- reactor callbacks ----------------------------------------------------

    def on_open(self, conn: Connection, peer: Any) -> None:
        """Nothing to allocate: ctx stays None until the first byte."""

    def on_data(self, conn: Connection, data: memoryview) -> None:
        ws = conn.ctx
        if type(ws) is self.connection_class:  # the hot path: _feed, inlined
            self.cork.owner = ws
            try:  # frames are unmasked in place in the reactor's receive buffer
                ws.receive_window(self._window, 0, len(data))
            except BaseException:
                self._uncork()
                raise
            self.cork.owner = None
            self._flush(conn, ws)
        elif type(ws) in self.connection_kinds:  # behind a Router
            self._feed_routed(conn, ws, len(data))
        elif ws is not ANSWERED:
            self._handshake_input(conn, ws, data)

    def on_eof(self, conn: Connection) -> None:
        ws = conn.ctx
        if type(ws) not in self.connection_kinds:
            conn.close()  # a head that can never complete: nothing to answer
            return
        conn.close_after_flush()  # no close frame: what we owe still goes out, then TCP
        if conn.pending():
            self._close_later(conn, ws)

    def on_shutdown(self, conn: Connection) -> None:
        ws = conn.ctx
        if type(ws) not in self.connection_kinds:
            conn.close_after_flush()
        elif ws._state is OPEN:
            ws.close(CLOSE_GOING_AWAY, "server shutting down")

    def on_close(self, conn: Connection, error: BaseException | None) -> None:
        ws = conn.ctx
        if type(ws) in self.connection_kinds:
            ws.connection_lost()  # reports 1006 to the app unless the handshake completed

    # ---- frames sent from other threads --------------------------------------

    def _post(self, ws: WebSocketConnection | None, item: Any) -> None:
        """Any thread: a frame (bytes) for ``ws``, or a call ``(fn, args)``
        about ``ws`` (None: about every connection). One FIFO for all of them,
        so one thread's sends, closes and calls take effect in its order. One
        drain is scheduled per batch; the drain clears ``_outbox_armed`` before
        it starts (as the reactor's wake-up does), so an item is either in the
        running drain or schedules the next."""
        self._outbox.append((ws, item))
        if not self._outbox_armed:
            self._outbox_armed = True
            self.reactor.call_soon_threadsafe(self._drain_outbox)

    def _drain_outbox(self) -> None:
        """Reactor thread: consecutive frames for one connection leave in one
        write (a coroutine answering 16 pipelined messages: one syscall); a
        call first writes the frames it came after."""
        self._outbox_armed = False
        outbox, frames = self._outbox, {}
        for _ in range(len(outbox)):
            ws, item = outbox.popleft()
            if type(item) is bytes:
                frames.setdefault(ws, []).append(item)
                continue
            if ws is None:
                _write_frames(frames)
                frames.clear()
            elif ws in frames:
                _write_frames({ws: frames.pop(ws)})
            callback, args = item
            try:
                callback(*args)
            except Exception:
                log.exception("call %r from another thread failed", callback)
        _write_frames(frames)

    # ---- flow control: on_drain ------------------------------------------------

    def _await_drain(self, ws: WebSocketConnection) -> None:
        """Output went over high water: on_drain is owed once it is down to
        the reactor's low water (on_writable below)."""
        if ws not in self._draining:
            self._draining.add(ws)
            if self.cork.owner is not ws:  # else _flush arranges it once the parts are written
                ws._conn.want_low_water()

    def on_writable(self, conn: Connection) -> None:
        ws = conn.ctx
        if ws not in self._draining or type(ws) not in self.connection_kinds:
            return
        self._draining.discard(ws)
        if ws._state is not OPEN:
            return
        try:
            type(ws)._app_drain(ws)
        except Exception as exc:
            ws._app_failed("on_drain", exc)

    # ---- frames ------------------------------------------------------------

    def _feed(self, conn: Connection, ws: WebSocketConnection, buf: Any, start: int, end: int):
        """Run the frames of buf[start:end] with this connection's output corked."""
        self.cork.owner = ws
        try:
            ws.receive(buf, start, end)
        except BaseException:
            self._uncork()
            raise
        self.cork.owner = None
        self._flush(conn, ws)

    def _feed_routed(self, conn: Connection, ws: WebSocketConnection, size: int) -> None:
        """on_data's hot path for a connection of a routed app."""
        self.cork.owner = ws
        try:
            ws.receive_window(self._window, 0, size)
        except BaseException:
            self._uncork()
            raise
        self.cork.owner = None
        self._flush(conn, ws)

    def _drain(self, conn: Connection, ws: WebSocketConnection) -> None:
        """One more budget of a stalled connection's input (see on_stall)."""
        if conn.ctx is not ws or conn.handler is not self or not ws.stalled:
            return  # closed meanwhile (the slot may hold another connection)
        self.cork.owner = ws
        try:
            ws.drain()
        except BaseException:
            self._uncork()
            raise
        self.cork.owner = None
        self._flush(conn, ws)
        if not ws.stalled and ws._state is not CLOSED:
            conn.resume_reading()

    def _uncork(self) -> None:
        self.cork.reset()  # nothing of a failed connection may leak into the next
        if self.topics.dirty:
            self.topics.flush()  # publishes made before the failure are the others'

    def broadcast_frame(self, frame: bytes, opcode: int, payload: bytes) -> int:
        """Write ``frame`` to every open connection of this worker (a walk of
        the reactor's slots: zero bytes per connection for a set of them); a
        connection with permessage-deflate gets it compressed, once per shared
        compressor."""
        if self.topics.dirty:
            self.topics.flush()
        compressed: dict[int, bytes] = {}
        sent = 0
        for ws in self.server.connections:
            if ws._state is OPEN:
                if ws._deflate is not None:
                    ws_frame = _compressed_frame(ws, opcode, payload, frame, compressed)
                else:
                    ws_frame = frame
                if ws._push(ws_frame):
                    sent += 1
        return sent

    def _flush(self, conn: Connection, ws: WebSocketConnection) -> None:
        self.cork.write(conn)
        if self.topics.dirty:
            self.topics.flush()  # this read's publishes, one write per subscriber
        if self._draining and ws in self._draining:
            conn.want_low_water()
        if ws._state is CLOSED:  # close answered or a violation: TCP goes once flushed
            conn.close_after_flush()
            if conn.pending():
                self._close_later(conn, ws)

    def _close_later(self, conn: Connection, ws: WebSocketConnection) -> None:
        self.reactor.call_later(self.close_timeout, self._close_expired, conn, ws)

    def _close_expired(self, conn: Connection, ws: WebSocketConnection) -> None:
        if conn.ctx is ws and conn.handler is self:  # the same connection, still open
            log.debug("fd %d: no close from the peer in %.1fs", conn.fd, self.close_timeout)
            conn.close()

    # ---- the sweep: header timeouts and keepalive pings --------------------------

    def _sweep(self) -> None:
        """One pass over the reactor's slots: keepalive and header timeouts."""
        if self.ping_interval <= 0 and self.header_timeout <= 0:
            return
        tick, kinds = self.reactor.tick, self.connection_kinds
        for conn in self.reactor.connections():
            if conn.handler is not self:
                continue  # --proto auto: the HTTP handler's connections
            ctx = conn.ctx
            if type(ctx) in kinds:
                if ctx._state is OPEN and self.ping_interval > 0:
                    self._keepalive(conn, ctx, tick)
            elif ctx is not ANSWERED and self.header_timeout > 0:
                self._check_head(conn, ctx, tick)

    def _keepalive(self, conn: Connection, ws: WebSocketConnection, tick: int) -> None:
        pinged = ws._pinged_at
        if pinged is None:
            if tick - conn.last_active >= self.ping_interval:
                ws._pinged_at = tick
                conn.write(_PING)
        elif conn.last_active >= pinged:  # input since the ping: alive
            ws._pinged_at = None
        elif tick - pinged >= self.ping_timeout:
            ws._ping_timed_out()


# ---- composition ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("WebSocket (--proto ws and auto)")
    add = group.add_argument
    add(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help="largest message in bytes (inflated size when compressed), checked from each frame "
        "header and while inflating; larger: close 1009",
    )
    add(
        "--ping-interval",
        type=float,
        default=DEFAULT_PING_INTERVAL,
        help="ping a connection silent for this many seconds (0: never; whole seconds)",
    )
    add(
        "--ping-timeout",
        type=float,
        default=DEFAULT_PING_TIMEOUT,
        help="seconds a pinged connection has to send anything; then close 1011",
    )
    add(
        "--close-timeout",
        type=float,
        default=DEFAULT_CLOSE_TIMEOUT,
        help="seconds we wait for the peer's close frame after sending ours",
    )
    add(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="a subprotocol the server speaks (repeatable; the first listed that the "
        "client offers is chosen)",
    )
    add(
        "--origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allowed Origin (repeatable; others get 403; '' admits requests without "
        "Origin; default: any)",
    )
    add(
        "--forwarded-allow-ips",
        type=ip_list,
        default=(),
        metavar="IP[,IP...]",
        help="proxies (e.g. nginx) trusted to name the client in X-Forwarded-For: "
        "conn.remote_address then gives (client IP, 0); '*': any peer (default: none)",
    )
    add(
        "--broker",
        type=broker_url,
        default="local",
        metavar="local|redis://[:PASSWORD@]HOST[:PORT][/DB]",
        help="how publishes and broadcasts reach the other workers: local: Unix sockets "
        "between the workers of this server, no external service; redis://...: every "
        "server attached to that Redis (pub/sub; needs hiredis) (docs/topics.md)",
    )
    add(
        "--threads",
        type=_whole_number(1),
        default=DEFAULT_THREADS,
        metavar="N",
        help="threads per worker for server.run_in_thread (started as needed; "
        "see docs/threads-and-asyncio.md)",
    )
    add(
        "--compression",
        choices=deflate.MODES,
        default=deflate.DEFAULT_MODE,
        help="permessage-deflate: 'shared' (one compressor per worker, no context kept by "
        "the server), 'full' (contexts per connection both ways), 'off'",
    )
    add(
        "--compression-threshold",
        type=_whole_number(0),
        default=deflate.DEFAULT_THRESHOLD,
        metavar="BYTES",
        help="messages shorter than this are sent uncompressed",
    )
    add(
        "--app",
        type=load_app,
        default=None,
        metavar="MODULE:ATTR",
        help="the application: a WebSocketApp instance, subclass or factory "
        "(default: echo every message)",
    )


def ip_list(value: str) -> tuple[str, ...]:
    entries = tuple(entry.strip() for entry in value.split(",") if entry.strip())
    for entry in entries:
        if entry != "*":
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{entry!r} is not an IP address") from None
    return entries


def broker_url(value: str) -> str:
    try:
        return brokers.check_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int of at least ``minimum``."""

    def number(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return number


def make_handler(options: argparse.Namespace, reactor: Reactor) -> WebSocketHandler:
    if native.active != "c":
        log.warning(
            "reactor.ws._speedups is not built: unmasking in pure Python (30-100x slower); "
            "reinstall with a C compiler (pip install -e .)"
        )
    warn_if_head_scanner_missing(log)
    origins = options.origin
    handler = WebSocketHandler(
        reactor,
        options.app,
        max_message_size=options.max_message_size,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        close_timeout=options.close_timeout,
        header_timeout=getattr(options, "header_timeout", DEFAULT_HEADER_TIMEOUT),
        subprotocols=tuple(options.subprotocol),
        origins=None if origins is None else [o or None for o in origins],
        forwarded_allow_ips=options.forwarded_allow_ips,
        broker=lambda sink: brokers.create(options, reactor, sink),
        threads=options.threads,
        compression=deflate.Compression(
            getattr(options, "compression", deflate.DEFAULT_MODE),
            getattr(options, "compression_threshold", deflate.DEFAULT_THRESHOLD),
        ),
        access_log_enabled=getattr(options, "proto", None) == "ws"
        and not getattr(options, "quiet", False),
    )
    log.info(
        "websocket: app=%s max-message-size=%d ping-interval=%gs compression=%s",
        type(handler.app).__qualname__,
        options.max_message_size,
        options.ping_interval,
        handler.compression.mode,
    )
    return handler
