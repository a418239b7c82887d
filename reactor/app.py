"""The WebSocket application API: what a user of ``--proto ws`` writes.

In the style of Swoole's WebSocket server (``$ws->on('open'|'message'|'close')``,
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

This module belongs with the glue (it describes what reactor/handlers/ws.py
implements), so it may name the WebSocket protocol's own close codes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .request import Accept, Headers, Request, Response  # noqa: F401 (the application API)
from .router import RouteError, Router  # noqa: F401 (the application API)

# RFC 6455 §7.4.1 codes an application typically sends, as the protocol defines them.
from .ws.frames import (  # noqa: E402,F401 (re-exported for applications)
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
)

Message = str | bytes | bytearray | memoryview


class Connection(Protocol):
    """One open WebSocket connection, as the application sees it."""

    data: Any  # free for the application (per-connection user data); None until set
    subprotocol: str | None  # the negotiated Sec-WebSocket-Protocol, or None

    def send(self, message: Message) -> bool:
        """Queue a text (str) or binary (bytes-like) message. False once the
        connection is closing or closed (the message is dropped), or when it was
        closed with 1008 because its buffered output was over --max-send-buffer.
        Anything else (a dict, an int) raises TypeError and queues nothing:
        send ``json.dumps(obj)`` for JSON."""

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the peer gets --close-timeout to answer."""

    def ping(self, payload: bytes = b"") -> bool:
        """Send a ping (at most 125 bytes); any data from the peer counts as its answer."""

    def subscribe(self, topic: str) -> bool:
        """Join ``topic``: from now on this connection gets what ``server.publish``
        sends there, from any worker (and any server sharing the broker). False if
        it was already in the topic or is closing. Left automatically on close."""

    def unsubscribe(self, topic: str) -> bool:
        """Leave ``topic``; False if this connection was not in it."""

    @property
    def topics(self) -> frozenset[str]:
        """The topics this connection is in (a snapshot)."""

    @property
    def remote_address(self) -> Any:
        """(host, port) of the peer, looked up on demand (a syscall); None once closed.
        Behind a proxy listed in --forwarded-allow-ips: (client IP, 0), the client
        its X-Forwarded-For names (docs/deployment.md)."""

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

    def publish(self, topic: str, message: Message) -> None:
        """Send one message to every subscriber of ``topic`` on every worker (and,
        with ``--broker redis://...``, every server attached to that Redis), text
        for str, binary for bytes-like. The frame is built once per worker; what
        one publisher publishes to one topic arrives in publish order. Never
        blocks: a subscriber whose buffered output is over --max-send-buffer is
        closed with 1008 instead of growing. See docs/topics.md."""

    def broadcast(self, message: Message, local: bool = False) -> int:
        """Send one message to every open connection of every worker (and every
        server attached to the broker); ``local=True``: this worker only. The
        frame is built once and the same bytes are written to each; a connection
        whose buffered output is already over --max-send-buffer is closed with
        1008 instead of growing. Returns how many connections of THIS worker got
        the message."""

    def subscriber_count(self, topic: str) -> int:
        """Subscribers of ``topic`` on this worker."""

    @property
    def broker_stats(self) -> dict[str, int]:
        """This worker's broker counters (published, received, dropped, and
        unreachable or reconnects); empty without a broker. See docs/topics.md."""

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

    def on_upgrade(self, request: Any) -> Any:
        """A valid upgrade request arrived (a ``reactor.app.Request``: ``path``,
        ``query``, ``headers``, ``cookies``, ``subprotocols``, ``path_params``...).
        Return None to accept; ``Accept(headers=[...], subprotocol=...)`` to
        accept with headers added to the 101 and a subprotocol chosen from
        ``request.subprotocols``; or ``(status, reason)`` / ``(status, reason,
        headers)`` to refuse with a 4xx/5xx (e.g. ``(401, "login first")``).
        Anything else is logged as a mistake and answered 500.

        An application may also define ``on_request(request)`` (not defined
        here: without it the HTTP handler serves static files only), returning
        a ``Response`` or None; see docs/http-endpoints.md."""
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


class AppError(TypeError):
    """What ``--app`` (or ``serve(app=...)``) names cannot serve as an application."""


def load_app(spec: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) and return the object.
    Used as argparse ``type=`` so a bad spec is a usage error before any fork.

    The current folder comes first on ``sys.path`` (as with ``python -m``), so
    the installed ``reactor`` command finds ``chat.py`` where it is started."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected module:attribute")
    _current_folder_first()
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


def _current_folder_first() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path[:1] and "" not in sys.path[:1]:
        sys.path.insert(0, cwd)


def check_app(target: Any) -> None:
    """Raise AppError unless ``target`` can be an application: an instance
    with ``on_message`` or ``on_request``, such a class, a factory (whose
    result make_app checks), or a ``Router`` of those. Run before any worker
    starts, so a mistake is a usage error."""
    if target is None:
        return
    if isinstance(target, Router):
        for app in target.apps():
            check_app(app)
        return
    if not isinstance(target, type) and not _is_app(target):
        if not callable(target):
            raise AppError(
                f"{target!r} is not an application: expected a WebSocketApp instance, "
                "a subclass, a factory returning one, or a Router"
            )
        return  # a factory: what it returns is checked when a worker calls it
    if not callable(getattr(target, "on_message", None)) and not callable(
        getattr(target, "on_request", None)
    ):
        raise AppError(f"{target!r} has neither on_message(conn, data) nor on_request(request)")
    if inspect.iscoroutinefunction(getattr(target, "on_start", None)):
        raise AppError(
            "on_start is a coroutine function (async def): it runs once on the reactor's "
            "thread before the worker accepts; define it with def (on_upgrade, on_open, "
            "on_message, on_close, on_drain and on_request may be async)"
        )


def _is_app(target: Any) -> bool:
    return hasattr(target, "on_message") or hasattr(target, "on_request")


def make_app(target: Any) -> Any:
    """An application instance from what ``--app`` (or ``serve(app=...)``)
    named: None (the echo app), an instance, a class, or a factory; for a
    Router, a Router of this worker's instances."""
    if target is None:
        return WebSocketApp()
    if isinstance(target, str):
        target = load_app(target)
    check_app(target)
    if isinstance(target, Router):
        return target.map(make_app)
    if isinstance(target, type) or not _is_app(target):
        target = target()  # a class or a factory: one instance per worker
        if isinstance(target, Router):
            return make_app(target)  # a factory may build the worker's Router
        if isinstance(target, type) or not _is_app(target):
            raise AppError(f"the --app factory returned {target!r}, not an application")
        check_app(target)
    return target


def defines(app: Any, name: str) -> bool:
    """Whether ``app`` has its own ``name`` callback (not WebSocketApp's default)."""
    callback = getattr(app, name, None)
    if callback is None:
        return False
    return getattr(callback, "__func__", callback) is not getattr(WebSocketApp, name, None)


def callbacks(app: Any) -> Iterator[Callable[..., Any]]:
    """The app's (on_upgrade, on_open, on_message, on_close, on_drain), defaults filling
    in for what a duck-typed application does not define."""
    default = WebSocketApp()
    for name in ("on_upgrade", "on_open", "on_message", "on_close", "on_drain"):
        yield getattr(app, name, getattr(default, name))
