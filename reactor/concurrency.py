"""Work outside the reactor thread: a bounded thread pool whose futures report
back on the reactor thread.

Built on the reactor's one cross-thread entry (``Reactor.call_soon_threadsafe``):
the pool never touches a connection; a job's result reaches the application
through a done-callback that the reactor thread runs, so that callback may use
every connection method directly.

Bounds: at most ``threads`` threads (started one by one as jobs arrive, so an
application that never calls ``run_in_thread`` costs no thread), and at most
``backlog`` jobs waiting for a thread; one more raises ``ThreadPoolFull``
instead of queueing without limit. Threads are daemons: a graceful stop waits
for running jobs up to its deadline (``join``), then the process may exit
with jobs still running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("reactor")

# Threads per worker by default: as the stdlib's ThreadPoolExecutor, enough for
# blocking I/O (database, HTTP, files) waiting in parallel, capped for memory
# (each thread reserves a stack).
DEFAULT_THREADS = min(32, (os.cpu_count() or 1) + 4)
BACKLOG_PER_THREAD = 64  # jobs waiting per thread before run_in_thread refuses more


class ThreadPoolFull(RuntimeError):
    """run_in_thread found ``backlog`` jobs already waiting for a thread."""


class ReactorFuture(Future):
    """A ``concurrent.futures.Future`` whose done-callbacks run on the reactor
    thread (also when added after completion), in the order they were added."""

    def __init__(self, post: Callable[..., None]) -> None:
        super().__init__()
        self._post = post

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        super().add_done_callback(lambda future: self._post(fn, future))


class ThreadPool:
    """At most ``threads`` threads running jobs for one reactor."""

    def __init__(self, reactor: Any, threads: int = DEFAULT_THREADS, backlog: int | None = None):
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._post = reactor.call_soon_threadsafe
        self.max_threads = threads
        self.backlog = threads * BACKLOG_PER_THREAD if backlog is None else backlog
        self._jobs: deque[tuple[ReactorFuture, Callable[..., Any], tuple]] = deque()
        lock = threading.Lock()
        self._ready = threading.Condition(lock)  # a job or the close: for idle threads
        self._finished = threading.Condition(lock)  # a job ended: for join()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job
        self._running = 0  # jobs being run
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> ReactorFuture:
        """Run ``fn(*args)`` in a pool thread; see the module docstring."""
        future = ReactorFuture(self._post)
        with self._ready:
            if self._closed:
                raise RuntimeError("the server is stopping: no new thread work")
            if len(self._jobs) >= self.backlog:
                raise ThreadPoolFull(f"{self.backlog} jobs already wait for a thread")
            self._jobs.append((future, fn, args))
            if self._idle >= len(self._jobs):
                self._ready.notify()
            elif len(self._threads) < self.max_threads:
                self._start_thread()
            else:
                self._ready.notify()
        return future

    @property
    def busy(self) -> int:
        """Jobs running or waiting."""
        return self._running + len(self._jobs)

    def _start_thread(self) -> None:
        name = f"reactor-pool-{len(self._threads)}"
        thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closed:
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                if not self._jobs:
                    return  # closed and nothing left
                future, fn, args = self._jobs.popleft()
                self._running += 1
            try:
                self._run(future, fn, args)
            finally:
                with self._ready:
                    self._running -= 1
                    self._finished.notify_all()

    @staticmethod
    def _run(future: ReactorFuture, fn: Callable[..., Any], args: tuple) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def join(self, timeout: float) -> bool:
        """Stop taking jobs, cancel those still waiting, wait up to ``timeout``
        seconds for the running ones. True when none is left running."""
        deadline = time.monotonic() + timeout
        with self._ready:
            self._closed = True
            cancelled = list(self._jobs)
            self._jobs.clear()
            self._ready.notify_all()
        for future, _, _ in cancelled:
            future.cancel()
        with self._ready:
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%d thread jobs still running at the deadline", self._running)
                    return False
                self._finished.wait(left)
        return True


class AsyncioThread:
    """An asyncio event loop in a companion thread (uvloop's when installed),
    for coroutine callbacks. Started by the composition only when the
    application has one: a synchronous application pays nothing."""

    def __init__(self) -> None:
        self.loop, self.flavour = _new_event_loop()
        self._tasks: set[asyncio.Task] = set()  # strong references: asyncio keeps weak ones
        self._thread = threading.Thread(target=self._run, name="reactor-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def post(self, coroutine_function: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``coroutine_function(*args)`` as a task."""
        self.loop.call_soon_threadsafe(self._start, coroutine_function, args)

    def _start(self, coroutine_function: Callable[..., Any], args: tuple) -> None:
        task = self.loop.create_task(coroutine_function(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def join(self, timeout: float) -> bool:
        """Await the running tasks up to ``timeout`` seconds, cancel the rest,
        stop the loop. True when every task had finished by itself."""
        if not self._thread.is_alive():
            return True
        finished = asyncio.run_coroutine_threadsafe(self._finish(timeout), self.loop)
        try:
            clean = finished.result(timeout + CANCEL_GRACE + 1.0)
        except Exception:  # the loop is stuck in a blocking call: leave it (a daemon)
            log.warning("the asyncio thread did not stop in time")
            return False
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CANCEL_GRACE)
        if not self._thread.is_alive():
            self.loop.close()
        return clean

    async def _finish(self, timeout: float) -> bool:
        tasks = set(self._tasks)
        if tasks:
            _, tasks = await asyncio.wait(tasks, timeout=timeout)
        if not tasks:
            return True
        log.warning("cancelling %d coroutines still running at the deadline", len(tasks))
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=CANCEL_GRACE)
        return False


CANCEL_GRACE = 1.0  # seconds cancelled coroutines get to run their cleanup (finally blocks)


def _new_event_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop  # optional: a faster event loop, used when installed
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"
