"""Running reactors: one in this process, or N worker processes supervised.

With ``--workers N`` the parent forks N workers. Each worker opens its own
listening socket on the same port with SO_REUSEPORT, so the kernel spreads
new connections across them (one accept queue per worker, no thundering
herd). With ``--port-per-worker`` worker i listens on port + i instead, for
clients that pick their worker (the C1000K benchmark: SO_REUSEPORT's hash
spreads unevenly, and a worker is capped by its open-file limit).

The parent only supervises: it restarts a worker that dies and forwards
SIGTERM/SIGINT so every worker stops gracefully, then reaps them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import time
from types import ModuleType

from .allocator import tune_malloc
from .loop import Reactor

log = logging.getLogger("reactor")

RESPAWN_BACKOFF = 1.0  # seconds before restarting a worker that died young
DEFAULT_BUSY_POLL_USEC = 50  # spins of 10-20 us bridge a loopback peer's turnaround; 50 covers
#                              a slower peer, and the spin backs off (reactor/loop.py docstring)
YOUNG_WORKER = 2.0  # a worker dying sooner than this after start is "young"
KILL_GRACE = 2.0  # seconds past --shutdown-timeout before stragglers get SIGKILL
SUPERVISOR_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


def default_busy_poll(workers: int) -> int:
    """--busy-poll auto: on, unless the workers outnumber the CPUs (spinning
    workers would then take turns on a core that another one needs, the case
    Seastar's --overprovisioned switch covers)."""
    return DEFAULT_BUSY_POLL_USEC if workers <= len(os.sched_getaffinity(0)) else 0


def serve(options: argparse.Namespace, module: ModuleType) -> int:
    if options.busy_poll in (None, "auto"):  # None from the parser, "auto" from serve()
        options.busy_poll = default_busy_poll(options.workers)
    if options.workers == 1 and not options.port_per_worker:
        return run_worker(options, module, options.port, reuse_port=False)
    return Supervisor(options, module).run()


def run_worker(
    options: argparse.Namespace, module: ModuleType, port: int, *, reuse_port: bool
) -> int:
    """Build one reactor with the chosen handler and run it until stopped."""
    tune_malloc()
    reactor = Reactor(
        max_connections=options.max_connections,
        idle_timeout=options.idle_timeout or None,
        max_send_buffer=options.max_send_buffer,
        busy_poll=options.busy_poll / 1e6,
    )
    handler = module.make_handler(options, reactor)
    sock = reactor.listen(
        options.host, port, handler, backlog=options.backlog, reuse_port=reuse_port
    )
    reactor.install_signal_handlers(options.shutdown_timeout)
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


class Supervisor:
    """Forks and watches the worker processes."""

    def __init__(self, options: argparse.Namespace, module: ModuleType) -> None:
        self.options = options
        self.module = module
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> start time
        self.respawn_at: dict[int, float] = {}  # worker index -> when to restart it
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
        try:
            for index in range(options.workers):
                self._spawn(index)
            self._supervise()
        finally:
            if reserve is not None:
                reserve.close()
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
        pid = os.fork()
        if pid == 0:
            self._become_worker(index)  # never returns
        self.pids[pid] = index
        self.started[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, pid)

    def _become_worker(self, index: int) -> None:
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)
            options = self.options
            if options.port_per_worker:
                code = run_worker(options, self.module, options.port + index, reuse_port=False)
            else:
                code = run_worker(options, self.module, options.port, reuse_port=True)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(code)

    def _supervise(self) -> None:
        while self.pids or self.respawn_at:
            info = signal.sigtimedwait(SUPERVISOR_SIGNALS, self._wait_time())
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self._stop_workers(info.si_signo)
                return
            self._reap()
            self._respawn_due()

    def _wait_time(self) -> float:
        if not self.respawn_at:
            return 1.0
        return max(0.0, min(self.respawn_at.values()) - time.monotonic())

    def _reap(self) -> None:
        while self.pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
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

    def _stop_workers(self, signum: int) -> None:
        log.info("signal %d: stopping %d workers", signum, len(self.pids))
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

    def _reap_stopped(self) -> None:
        while self.pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            if self.pids.pop(pid, None) is not None and status != 0:
                log.warning("worker pid %d stopped: %s", pid, describe_status(status))


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already gone; the reaper will collect it


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
