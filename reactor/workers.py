"""Running reactors: one in this process, or N worker processes supervised.

With ``--workers N`` the parent forks N workers. Each worker opens its own
listening socket on the same port with SO_REUSEPORT, so the kernel spreads
new connections across them (one accept queue per worker, no thundering
herd). With ``--port-per-worker`` worker i listens on port + i instead, for
clients that pick their worker (the C1000K benchmark: SO_REUSEPORT's hash
spreads unevenly, and a worker is capped by its open-file limit).

The parent only supervises: it restarts a worker that dies and forwards
SIGTERM/SIGINT so every worker stops gracefully, then reaps them.

Start-up failures (the port is taken, the application or --root is wrong)
are one line and exit status 1, never a traceback nor a restart loop. Each
worker reports through its own pipe: "ready" once it listens, or the error
line. The parent reads the pipe when it reaps the worker: a worker that died
without saying "ready" failed to start, and the whole server stops with its
line; one that said it is restarted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from .allocator import tune_malloc
from .app import AppError
from .loop import Reactor

log = logging.getLogger("reactor")

RESPAWN_BACKOFF = 1.0  # seconds before restarting a worker that died young
DEFAULT_BUSY_POLL_USEC = 50  # spins of 10-20 us bridge a loopback peer's turnaround; 50 covers
#                              a slower peer, and the spin backs off (reactor/loop.py docstring)
YOUNG_WORKER = 2.0  # a worker dying sooner than this after start is "young"
KILL_GRACE = 2.0  # seconds past --shutdown-timeout before stragglers get SIGKILL
SUPERVISOR_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
READY = b"ready\n"  # what a worker's start-up pipe carries once it listens
REPORT_MAX = 512  # bytes of a start-up report: one line, below PIPE_BUF (one atomic write)


class StartupError(Exception):
    """The server cannot start; the message is the one line the user sees."""


def default_busy_poll(workers: int) -> int:
    """--busy-poll auto: on, unless the workers outnumber the CPUs (spinning
    workers would then take turns on a core that another one needs, the case
    Seastar's --overprovisioned switch covers)."""
    return DEFAULT_BUSY_POLL_USEC if workers <= len(os.sched_getaffinity(0)) else 0


def serve(options: argparse.Namespace, module: ModuleType) -> int:
    if options.busy_poll in (None, "auto"):  # None from the parser, "auto" from serve()
        options.busy_poll = default_busy_poll(options.workers)
    if options.workers == 1 and not options.port_per_worker:
        try:
            return run_worker(options, module, options.port, reuse_port=False)
        except StartupError as exc:
            log.error("%s", exc)
            return 1
    return Supervisor(options, module).run()


def run_worker(
    options: argparse.Namespace,
    module: ModuleType,
    port: int,
    *,
    reuse_port: bool,
    ready: Callable[[], None] | None = None,
) -> int:
    """Build one reactor with the chosen handler and run it until stopped.
    Raises StartupError when it cannot start; calls ``ready`` once listening."""
    tune_malloc()
    reactor = Reactor(
        max_connections=options.max_connections,
        idle_timeout=options.idle_timeout or None,
        max_send_buffer=options.max_send_buffer,
        busy_poll=options.busy_poll / 1e6,
    )
    try:
        handler = make_handler(options, module, reactor)
        try:
            sock = reactor.listen(
                options.host, port, handler, backlog=options.backlog, reuse_port=reuse_port
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {options.host}:{port}: {reason(exc)}") from None
        reactor.install_signal_handlers(options.shutdown_timeout)
    except BaseException:
        reactor.dispose()
        raise
    if ready is not None:
        ready()
    host, bound_port = sock.getsockname()[:2]
    soft, hard = options.fd_limit
    log.info(
        "listening on %s:%d proto=%s workers=%d max_connections=%d busy_poll=%dus "
        "open-file limit %d (hard %d)",
        host,
        bound_port,
        options.proto,
        options.workers,
        reactor.max_connections,
        options.busy_poll,
        soft,
        hard,
    )
    try:
        reactor.run()
        reactor.finish(options.shutdown_timeout)  # thread work still running
    finally:
        reactor.dispose()
    log.info("stopped")
    return 0


def make_handler(options: argparse.Namespace, module: ModuleType, reactor: Reactor) -> Any:
    """The handler for --proto, its failures turned into one-line StartupErrors."""
    try:
        return module.make_handler(options, reactor)
    except AppError as exc:
        raise StartupError(f"--app: {exc}") from None
    except SystemExit as exc:  # a handler's own one-line refusal (e.g. --root)
        if isinstance(exc.code, int | None):
            raise
        raise StartupError(str(exc.code)) from None
    except Exception as exc:  # e.g. the application's factory or on_start raised
        log.debug("start-up failed", exc_info=exc)
        raise StartupError(
            f"start-up failed: {type(exc).__name__}: {exc} (--log-level debug shows where)"
        ) from None


def reason(exc: OSError) -> str:
    """'address already in use' from EADDRINUSE's 'Address already in use'."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


class StartupReport:
    """One worker's start-up pipe: "ready", or the line that stopped it."""

    def __init__(self) -> None:
        self.reader, self.writer = os.pipe2(os.O_CLOEXEC)

    def in_parent(self) -> None:
        os.close(self.writer)
        os.set_blocking(self.reader, False)

    def in_child(self) -> None:
        os.close(self.reader)

    def send(self, message: bytes) -> None:
        if self.writer < 0:
            return  # said already: only the first report counts
        try:
            os.write(self.writer, message[:REPORT_MAX])
        except OSError:
            pass  # the parent is gone; nobody to tell
        os.close(self.writer)
        self.writer = -1

    def ready(self) -> None:
        self.send(READY)

    def failed(self, line: str) -> None:
        self.send(line.replace("\n", " ").encode("utf-8", "replace")[: REPORT_MAX - 1] + b"\n")

    def collect(self) -> str | None:
        """In the parent, once the worker is gone: None if it started, else
        its line ('' if it died before saying anything)."""
        try:
            said = os.read(self.reader, REPORT_MAX)
        except BlockingIOError:
            said = b""
        finally:
            os.close(self.reader)
        if said == READY:
            return None
        return said.decode("utf-8", "replace").strip()


class Supervisor:
    """Forks and watches the worker processes."""

    def __init__(self, options: argparse.Namespace, module: ModuleType) -> None:
        self.options = options
        self.module = module
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> start time
        self.respawn_at: dict[int, float] = {}  # worker index -> when to restart it
        self.reports: dict[int, StartupReport] = {}  # pid -> its start-up pipe
        self.failure: str | None = None  # the line that stopped the server at start-up
        self.stopping = False

    def run(self) -> int:
        options = self.options
        reserve = self._reserve_port()
        log.info(
            "supervisor %d: %d workers on %s:%d%s",
            os.getpid(),
            options.workers,
            options.host,
            options.port,
            " (one port each)" if options.port_per_worker else " (SO_REUSEPORT)",
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        options.worker_group = f"{os.getpid()}"  # names this server's workers (the broker)
        try:
            for index in range(options.workers):
                self._spawn(index)
            self._supervise()
        finally:
            if reserve is not None:
                reserve.close()
        if self.failure is not None:
            log.error("%s", self.failure)
            return 1
        return 0

    def _reserve_port(self) -> socket.socket | None:
        """With --port 0, pick the port once: a bound (not listening) socket in
        the SO_REUSEPORT group holds it, and every worker binds that port.

        The port comes from a probe bound WITHOUT SO_REUSEPORT: asked for port
        0 with SO_REUSEPORT set, the kernel may hand out a port that another
        process's SO_REUSEPORT listener already uses (same uid), and the two
        servers would then split each other's connections. The probe gets an
        unused port; the reserve takes it over at once."""
        if self.options.port != 0 or self.options.port_per_worker:
            return None
        family = socket.AF_INET6 if ":" in self.options.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((self.options.host, 0))
            port = probe.getsockname()[1]
        reserve = socket.socket(family, socket.SOCK_STREAM)
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserve.bind((self.options.host, port))
        self.options.port = port
        return reserve

    def _spawn(self, index: int) -> None:
        report = StartupReport()
        pid = os.fork()
        if pid == 0:
            self._become_worker(index, report)  # never returns
        report.in_parent()
        self.reports[pid] = report
        self.pids[pid] = index
        self.started[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, pid)

    def _become_worker(self, index: int, report: StartupReport) -> None:
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)
            report.in_child()
            for other in self.reports.values():  # the siblings' pipes are the parent's
                os.close(other.reader)
            options = self.options
            options.worker_index = index  # this process's copy: the broker's address
            port = options.port + index if options.port_per_worker else options.port
            code = run_worker(
                options,
                self.module,
                port,
                reuse_port=not options.port_per_worker,
                ready=report.ready,
            )
        except StartupError as exc:
            report.failed(str(exc))
        except BaseException as exc:
            report.failed(f"worker {index} failed: {type(exc).__name__}: {exc}")
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(code)

    def _supervise(self) -> None:
        while self.pids or self.respawn_at:
            info = signal.sigtimedwait(SUPERVISOR_SIGNALS, self._wait_time())
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("signal %d: stopping %d workers", info.si_signo, len(self.pids))
                self._stop_workers()
                return
            self._reap()
            if self.failure is not None:
                if self.pids:
                    log.info("a worker failed to start: stopping %d workers", len(self.pids))
                self._stop_workers()
                return
            self._respawn_due()

    def _wait_time(self) -> float:
        if not self.respawn_at:
            return 1.0
        return max(0.0, min(self.respawn_at.values()) - time.monotonic())

    def _exited(self) -> Iterator[tuple[int, int]]:
        """(pid, wait status) of each child that has ended, without blocking."""
        while self.pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            yield pid, status

    def _reap(self) -> None:
        for pid, status in self._exited():
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            failure = self.reports.pop(pid).collect()
            if failure is not None and not stopped_by_signal(status):
                # It never listened: a restart would fail the same way.
                self.failure = (
                    self.failure
                    or failure
                    or (f"worker {index} exited during start-up: {describe_status(status)}")
                )
                continue
            lived = time.monotonic() - self.started[index]
            log.warning(
                "worker %d (pid %d) exited: %s; restarting", index, pid, describe_status(status)
            )
            delay = RESPAWN_BACKOFF if lived < YOUNG_WORKER else 0.0
            self.respawn_at[index] = time.monotonic() + delay

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.respawn_at.items()):
            if when <= now:
                del self.respawn_at[index]
                self._spawn(index)

    def _stop_workers(self) -> None:
        for pid in self.pids:
            _signal_quietly(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.shutdown_timeout + KILL_GRACE
        while self.pids and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.1)
            self._reap_stopped()
        for pid in self.pids:
            log.warning("worker pid %d missed the shutdown deadline: SIGKILL", pid)
            _signal_quietly(pid, signal.SIGKILL)
        while self.pids:
            pid, _ = os.waitpid(-1, 0)
            self.pids.pop(pid, None)
        for report in self.reports.values():
            os.close(report.reader)
        self.reports.clear()

    def _reap_stopped(self) -> None:
        for pid, status in self._exited():
            report = self.reports.pop(pid, None)
            failed_to_start = report is not None and report.collect() is not None
            # Expected ends are not news: SIGTERM came from us, and a sibling's
            # start-up failure repeats the line the server stops with.
            quiet = stopped_by_signal(status) or failed_to_start
            if self.pids.pop(pid, None) is not None and status != 0 and not quiet:
                log.warning("worker pid %d stopped: %s", pid, describe_status(status))


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already gone; the reaper will collect it


def stopped_by_signal(status: int) -> bool:
    """Ended by SIGTERM/SIGINT: someone is stopping it (Ctrl-C reaches the whole
    process group), which is no start-up failure."""
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGINT)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
