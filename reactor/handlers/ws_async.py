"""Coroutine callbacks (``async def on_open/on_message/on_close/on_drain/
on_upgrade``) for the WebSocket glue: they run on the asyncio loop of a
companion thread (reactor/concurrency.py ``AsyncioThread``), never on the
reactor thread.

Per connection, every coroutine callback waits for the previous one: an
``Inbox`` holds the calls not yet run, and at most one task per connection
(``_drain_inbox``) awaits them in arrival order. Different connections have
different tasks, so they run concurrently. Reading from a connection pauses
while MAX_PENDING calls wait in its inbox, and resumes once its task has
caught up: a slow coroutine slows its own peer, it does not grow a queue.

Threads: the inbox deque is appended on the reactor thread and popped on the
asyncio thread (deque operations are atomic). ``running`` and ``paused`` are
only written on the reactor thread: the task reports its end there
(``_task_ended``), which restarts it if calls arrived meanwhile.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from ..concurrency import AsyncioThread
from ..loop import Reactor
from ..ws.protocol import CLOSED, OPEN

log = logging.getLogger("reactor.ws")

# Calls queued per connection before reading from it pauses: enough to keep a
# pipelining client's next messages ready for its task, few enough that a
# stuck coroutine holds at most MAX_PENDING messages (each <= --max-message-size).
MAX_PENDING = 64
COROUTINE_CALLBACKS = ("on_upgrade", "on_open", "on_message", "on_close", "on_drain")


def coroutine_callbacks(app: Any) -> set[str]:
    """The names of the app's callbacks that are coroutine functions."""
    return {
        name
        for name in COROUTINE_CALLBACKS
        if inspect.iscoroutinefunction(getattr(app, name, None))
    }


class Inbox:
    """The coroutine calls owed to one connection, in arrival order."""

    __slots__ = ("calls", "running", "paused", "failed")

    def __init__(self) -> None:
        self.calls: deque[tuple[Callable[..., Any], tuple]] = deque()
        self.running = False  # a task is draining it (reactor thread's view)
        self.paused = False  # reading from the connection is paused for it
        self.failed = False  # a callback raised: only on_close still runs


class AsyncCallbacks:
    """Turns coroutine callbacks into the synchronous ones the glue calls."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.companion = AsyncioThread()
        self.inboxes: dict[Any, Inbox] = {}  # connection -> its inbox, while calls are owed
        reactor.add_finisher(self.companion.join)
        log.info("coroutine callbacks run on %s in a companion thread", self.companion.flavour)

    def wrap(self, name: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """A synchronous stand-in for ``callback`` (args start with the connection).
        A partial, not a function: the glue stores it as a class attribute,
        where a function would bind as a method."""
        return partial(self.enqueue, callback, name == "on_close")

    def enqueue(self, callback: Callable[..., Any], final: bool, ws: Any, *args: Any) -> None:
        """Reactor thread: queue one call for the connection's task."""
        inbox = self.inboxes.get(ws)
        if inbox is None:
            inbox = self.inboxes[ws] = Inbox()
        inbox.calls.append((callback, (ws, *args, _FINAL) if final else (ws, *args)))
        if not inbox.running:
            inbox.running = True
            self.companion.post(self._drain_inbox, ws, inbox)
        elif len(inbox.calls) >= MAX_PENDING and not inbox.paused and ws._state is OPEN:
            inbox.paused = True
            ws._conn.pause_reading()

    async def _drain_inbox(self, ws: Any, inbox: Inbox) -> None:
        """Asyncio thread: await the connection's calls one after the other."""
        calls = inbox.calls
        while calls:
            callback, args = calls.popleft()
            final = args[-1] is _FINAL
            if final:
                args = args[:-1]
            elif inbox.failed:
                continue
            try:
                await callback(*args)
            except Exception as exc:  # CancelledError (shutdown) is not caught
                if final:
                    log.error("application on_close failed", exc_info=exc)
                else:
                    inbox.failed = True
                    ws._app_failed(callback.__name__, exc)  # logs, closes with 1011
        self.reactor.call_soon_threadsafe(self._task_ended, ws, inbox)

    def _task_ended(self, ws: Any, inbox: Inbox) -> None:
        """Reactor thread: restart the task for calls that came meanwhile, or
        let the connection read again."""
        if inbox.calls:
            self.companion.post(self._drain_inbox, ws, inbox)
            return
        inbox.running = False
        if inbox.paused:
            inbox.paused = False
            if ws._state is not CLOSED and ws._conn.ctx is ws:  # the slot is still its own
                ws._conn.resume_reading()
        if ws._state is CLOSED:
            self.inboxes.pop(ws, None)

    def run_upgrade(self, on_upgrade: Callable[..., Any], request: Any, then: Callable) -> None:
        """Await ``on_upgrade(request)`` on the companion loop; ``then(verdict,
        error)`` runs on the reactor thread with its result."""
        self.companion.post(self._upgrade, on_upgrade, request, then)

    async def _upgrade(self, on_upgrade: Callable[..., Any], request: Any, then: Callable):
        try:
            verdict, error = await on_upgrade(request), None
        except Exception as exc:
            verdict, error = None, exc
        self.reactor.call_soon_threadsafe(then, verdict, error)


_FINAL = object()  # marks on_close's call: it runs even after a callback failed
