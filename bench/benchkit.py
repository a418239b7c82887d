"""Plumbing shared by the benchmarks: paths, /proc readers, CPU pinning, processes, ports.

Every bench script imports this module (``import benchkit``: a script's own folder is on
``sys.path``), so a fix to how a process is stopped, how CPU time is read or how a core is
pinned is made once. The measuring logic of each benchmark stays in its own script.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from reactor.ws.handshake import accept_key  # the one definition of the RFC 6455 accept key

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
C_DIR = BENCH_DIR / "c"
RESULTS_DIR = BENCH_DIR / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
LISTENING = re.compile(r"listening on \[?([0-9a-fA-F.:]+?)\]?:(\d+)")
START_TIMEOUT = 15.0  # s for a server to log its address or accept (Python start-up under load)
STOP_TIMEOUT = 10.0  # s for a graceful SIGTERM exit before SIGKILL
STDERR_LINES = 200  # server log lines kept for the report
QUIET_PROBE = 0.3  # s per idleness probe before a run
QUIET_THRESHOLD = 0.1  # cores busy on the idle machine: above this, something else runs


# ---- /proc readers -------------------------------------------------------------------------


def read_text(path: str | Path) -> str | None:
    """A /proc file's text, or None when it is gone (the process exited) or unreadable."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; the command name may contain spaces."""
    text = read_text(f"/proc/{pid}/stat")
    return text.rpartition(")")[2].split() if text else None


def process_ticks(pids: Iterable[int], *, reaped_children: bool = False) -> int:
    """utime + stime clock ticks of live processes (plus those of their reaped children)."""
    last = 15 if reaped_children else 13  # fields 14-15: utime stime; 16-17: cutime cstime
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields:
            total += sum(int(v) for v in fields[11:last])
    return total


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of one live process in seconds; None once it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    text = read_text(f"/proc/{pid}/task/{pid}/children")
    if text is not None:
        return [int(p) for p in text.split()]
    return [p for p in all_pids() if parent_of(p) == pid]  # kernels without that file


def process_tree(pid: int) -> list[int]:
    """A process and its direct children (a supervisor and its workers)."""
    return [pid, *child_pids(pid)]


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def parent_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def alive(pid: int) -> bool:
    """True for a running process (a zombie is dead: it only waits to be reaped)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (/proc/<pid>/statm); 0 once it is gone."""
    statm = read_text(f"/proc/{pid}/statm")
    return int(statm.split()[1]) * PAGE_SIZE if statm else 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def core_ticks() -> dict[int, dict[str, int]]:
    """Clock ticks per /proc/stat column, per core."""
    cores = {}
    for line in (read_text("/proc/stat") or "").splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            cores[int(name[3:])] = dict(zip(STAT_FIELDS, map(int, values), strict=False))
    return cores


def machine_ticks() -> dict[str, int]:
    """Clock ticks of all cores together, per /proc/stat column."""
    total = dict.fromkeys(STAT_FIELDS, 0)
    for times in core_ticks().values():
        for field, value in times.items():
            total[field] += value
    return total


def busy(times: dict[str, float]) -> float:
    """Everything but idle and iowait."""
    return sum(v for f, v in times.items() if f not in ("idle", "iowait"))


def machine_busy_share(seconds: float) -> float:
    """Busy share of the whole machine (in cores) over a short interval."""
    before = sum(busy(t) for t in core_ticks().values())
    time.sleep(seconds)
    return (sum(busy(t) for t in core_ticks().values()) - before) / CLOCK_TICKS / seconds


def wait_for_quiet(limit: float, threshold: float = QUIET_THRESHOLD) -> dict:
    """Other programs may share this machine: wait (bounded) until it is nearly idle."""
    start = time.monotonic()
    while True:
        load = machine_busy_share(QUIET_PROBE)
        waited = time.monotonic() - start
        if load <= threshold or waited >= limit:
            return {"busy_cores_before": round(load, 3), "waited_s": round(waited, 1)}


def machine_note() -> dict:
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in (read_text("/proc/cpuinfo") or "").splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


# ---- pinning -------------------------------------------------------------------------------
# The server under test gets one core and the load generator the other, so neither measures
# the other's scheduling: `taskset` for programs started here (threads and children inherit
# the mask), sched_setaffinity for this process when it is the client.


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """``argv`` run on one core (``taskset -c CPU``); unchanged when ``cpu`` is None."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def add_run_options(
    parser: argparse.ArgumentParser, client: str, quiet_timeout: float | None = None
) -> None:
    """The options the load benchmarks share: the two cores, the interpreter of the Python
    servers, where results go, and (given a default) how long to wait for a quiet machine."""
    add = parser.add_argument
    add("--server-cpu", type=int, default=0, help="core of the server under test")
    add(f"--{client}-cpu", type=int, default=1, help=f"core of the {client}")
    add("--python", default=sys.executable, help="interpreter of the Python servers")
    add("--results-dir", type=Path, default=RESULTS_DIR)
    if quiet_timeout is not None:
        wait = "max s to wait before each run for the machine to be idle (it may be shared)"
        add("--quiet-timeout", type=float, default=quiet_timeout, help=wait)


def pin_self(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


def affinity(pids: Iterable[int]) -> list[int]:
    """The cores any of these processes may run on (all of their threads), sorted."""
    cores: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # it may exit, or a thread end, while we look
            for task in os.listdir(f"/proc/{pid}/task"):
                cores |= os.sched_getaffinity(int(task))
    return sorted(cores)


# ---- processes -----------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then SIGKILL once the deadline passes; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops the processes it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def raise_fd_limit() -> None:
    """Many sockets are held here; the servers started from here inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server(cpu: int | None = None) -> Iterator[tuple[int, subprocess.Popen]]:
    """A redis-server of our own on a free loopback port, with no persistence and its
    own data folder, pinned to ``cpu`` when given: (port, process); stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", folder]
        proc = subprocess.Popen(pinned(argv, cpu), stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield port, proc
        finally:
            stop_process(proc)


def wait_accepting(host: str, port: int, proc: subprocess.Popen, name: str) -> None:
    """Bounded wait until a server that logs no address accepts connections."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not accept connections within {START_TIMEOUT}s")


class Server:
    """A server subprocess, pinned to a core when ``cpu`` is given, that logs
    ``listening on HOST:PORT`` to stderr; its last log lines are kept for the report."""

    def __init__(
        self, name: str, argv: list[str], cpu: int | None, cwd: str | Path = REPO_DIR
    ) -> None:
        self.name = name
        self.log: deque[str] = deque(maxlen=STDERR_LINES)
        self.port: int | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            pinned(argv, cpu),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            match = LISTENING.search(line)
            if match and self.port is None:
                self.port = int(match.group(2))
                self._ready.set()
        self._ready.set()  # exited: wake the waiter, which sees no port

    def wait_ready(self) -> int:
        if not self._ready.wait(START_TIMEOUT) or self.port is None:
            raise RuntimeError(f"{self.name} did not start: {list(self.log)[-5:]}")
        return self.port

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        status = stop_process(self.proc, timeout)
        self._reader.join(STOP_TIMEOUT)
        return status


# ---- WebSocket -----------------------------------------------------------------------------


def upgrade_request(host: str, port: int) -> tuple[bytes, bytes]:
    """An RFC 6455 §4.1 opening handshake and the Sec-WebSocket-Accept it must get back."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return request, accept_key(key.decode()).encode()
