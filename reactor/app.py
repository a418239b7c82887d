"""The WebSocket application API: what a user of ``--proto ws`` writes.

In the style the seed shows for Swoole (``$ws->on('open'|'message'|'close')``,
``$ws->push($fd, ...)``): subclass ``WebSocketApp`` and override callbacks.

    from reactor.app import WebSocketApp

    class Chat(WebSocketApp):
        def on_open(self, conn, request):
            conn.data = request.get("x-user", "anonymous")  # keep what you need: the
                                                             # request is not retained
        def on_message(self, conn, data):   # str for text, bytes for binary
            self.server.broadcast(f"{conn.data}: {data}")

    app = Chat()        # python -m reactor --proto ws --app mymodule:app

Every callback runs on the reactor's thread, between reads: never block in
one (no sleep, no blocking I/O). Blocking work goes to ``server.run_in_thread``;
``conn.send``/``close``/``ping`` and ``server.broadcast`` may be called from any
thread (see docs/threads-and-asyncio.md). An exception raised by a callback is logged
once with its traceback and closes that connection with 1011; other
connections are unaffected. ``conn`` and ``server`` are implemented by
``reactor/handlers/ws.py``; the protocols below document what they offer.

This module is part of the reactor package's core layer for the layering
test, so it imports no protocol code: close codes are plain RFC 6455 numbers.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

# RFC 6455 §7.4.1 codes an application typically sends.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011

Message = str | bytes | bytearray | memoryview


class Connection(Protocol):
    """One open WebSocket connection, as the application sees it."""

    data: Any  # free for the application (per-connection user data); None until set
    subprotocol: str | None  # the negotiated Sec-WebSocket-Protocol, or None

    def send(self, message: Message) -> bool:
        """Queue a text (str) or binary (bytes-like) message. False once the
        connection is closing or closed (the message is dropped), or when it was
        closed with 1008 because its buffered output was over --max-send-buffer."""

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the peer gets --close-timeout to answer."""

    def ping(self, payload: bytes = b"") -> bool:
        """Send a ping (at most 125 bytes); any data from the peer counts as its answer."""

    @property
    def remote_address(self) -> Any:
        """(host, port) of the peer, looked up on demand (a syscall); None once closed."""

    @property
    def buffered_amount(self) -> int:
        """Bytes written to this connection and not yet taken by the kernel."""

    @property
    def is_open(self) -> bool:
        """True until a close frame was sent or received."""

    @property
    def writable(self) -> bool:
        """False while buffered output is over ``server.high_water`` (then
        ``on_drain`` follows once it is down to ``server.low_water``), or once
        closing. Reactor thread only."""


class Server(Protocol):
    """This worker's view of the WebSocket server (``app.server``)."""

    @property
    def connections(self) -> Any:
        """Live connections of this worker (opened, on_close not yet called):
        iterable and sized. With --workers N each worker sees only its own."""

    def broadcast(self, message: Message) -> int:
        """Send one message to every open connection: the frame is built once and
        the same bytes are written to each. A connection whose buffered output is
        already over --max-send-buffer is closed with 1008 instead of growing.
        Returns how many connections got the message."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any:
        """Run ``callback(*args)`` once after ``delay`` seconds (returns a timer
        with ``cancel()``)."""

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> Any:
        """Run ``callback(*args)`` every ``interval`` seconds (``cancel()`` stops it)."""

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``callback(*args)`` on the reactor thread soon
        (calls from one thread run in the order they were made)."""

    def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in this worker's thread pool (--threads); returns a
        ``concurrent.futures.Future`` whose done-callbacks run on the reactor
        thread. Raises ``reactor.concurrency.ThreadPoolFull`` when 64 jobs per
        thread already wait."""

    @property
    def high_water(self) -> int:
        """Buffered bytes above which a connection is not ``writable``
        (--max-send-buffer / 2)."""

    @property
    def low_water(self) -> int:
        """Buffered bytes at or below which ``on_drain`` is called
        (--max-send-buffer / 8)."""


class WebSocketApp:
    """Base class of an application; every callback has a working default.

    The default application echoes every message (what Autobahn|Testsuite
    expects of a server under test).
    """

    server: Server | None = None  # set by the server before on_start

    def on_start(self, server: Server) -> None:
        """The worker is about to accept connections (once per worker): start
        timers here with ``server.call_every``."""

    def on_upgrade(self, request: Any) -> tuple[int, str] | tuple[int, str, Any] | None:
        """A valid upgrade request arrived (``request.get(name)``,
        ``request.target``, ``request.headers``). Return None to accept, or
        ``(status, reason)`` / ``(status, reason, headers)`` to refuse with a
        4xx/5xx (e.g. ``(401, "login first")``, ``(403, "banned")``)."""
        return None

    def on_open(self, conn: Connection, request: Any) -> None:
        """The 101 is on its way; ``conn.send`` may be used at once. The request
        is dropped when this returns: copy what you need into ``conn.data``."""

    def on_message(self, conn: Connection, data: str | bytes) -> None:
        """A complete message: ``str`` for text, ``bytes`` for binary. Default: echo."""
        conn.send(data)

    def on_close(self, conn: Connection, code: int, reason: str) -> None:
        """The connection is closed: ``code`` is the peer's close code (1005 if
        it sent none), ours after a protocol violation, or 1006 when TCP closed
        without a completed closing handshake (ping timeout, --close-timeout,
        1008 send-buffer overflow, a peer that vanished)."""

    def on_drain(self, conn: Connection) -> None:
        """The connection's buffered output went over ``server.high_water``
        and is now down to ``server.low_water``: a streaming producer resumes
        here (it paused when ``conn.writable`` turned False)."""


# ---- loading an application (--app module:attr) ---------------------------------


def load_app(spec: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) and return the object.
    Used as argparse ``type=`` so a bad spec is a usage error before any fork."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected module:attribute")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise argparse.ArgumentTypeError(f"cannot import {module_name!r}: {exc}") from None
    for name in attr_path.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise argparse.ArgumentTypeError(f"{module_name!r} has no {attr_path!r}") from None
    return target


def make_app(target: Any) -> Any:
    """An application instance from what ``--app`` (or ``serve(app=...)``)
    named: None (the echo app), an instance, a class, or a factory."""
    if target is None:
        return WebSocketApp()
    if isinstance(target, str):
        target = load_app(target)
    if isinstance(target, type) or not hasattr(target, "on_message"):
        if not callable(target):
            raise TypeError(f"{target!r} is neither an application nor a factory")
        target = target()  # a class or a factory: one instance per worker
    if not callable(getattr(target, "on_message", None)):
        raise TypeError(f"{target!r} has no on_message(conn, data)")
    return target


def callbacks(app: Any) -> Iterator[Callable[..., Any]]:
    """The app's (on_upgrade, on_open, on_message, on_close, on_drain), defaults filling
    in for what a duck-typed application does not define."""
    default = WebSocketApp()
    for name in ("on_upgrade", "on_open", "on_message", "on_close", "on_drain"):
        yield getattr(app, name, getattr(default, name))
