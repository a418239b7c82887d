"""C1000K: hold up to a million WebSocket connections on this machine and prove it.

    .venv/bin/python bench/c1000k.py --connections 100000          # or: make c1000k N=100000
    .venv/bin/python bench/c1000k.py --connections 1000000 --preflight-only

One run: preflight (limits, sysctls and memory against what the stage needs; refuses a stage
that would leave less than --min-free of memory) -> start `python -m reactor --proto ws` with
one worker per ~19.6k connections, worker i on port BASE + i (--port-per-worker) -> one
`bench/c/c1000k_client` per worker, client i connecting only to port BASE + i from the source
addresses 127.(1 + i // 256).(i % 256).1-4 -> wait until every connection is established (or
failed) -> sample memory while they are held idle -> "echo": one masked message per connection,
echo checked byte for byte -> "close": RFC 6455 close handshake on every connection -> stop the
server -> table, JSON (bench/results/c1000k-<N>-<time>.json) and PNG plot.

Why this layout (issue 5's measured facts): a process holds at most its open-file hard limit
(20,000 here, not raisable), so 1M connections need ~51 server and ~51 client processes; one
source and one destination address give at most one ephemeral port range (~28k) of connections,
hence four sources per client; SO_REUSEPORT spreads unevenly (16.5k-16.9k per process at 100k),
so with workers near their fd limit one would overflow: per-worker ports give each worker exactly
its share (--shared-port measures the alternative).

Everything is bounded in time and torn down by PID (clients first, then the server: SIGTERM,
SIGKILL after a bound), also on Ctrl-C and errors. Children run in their own sessions and die
with this process (PR_SET_PDEATHSIG), so none outlives it. A memory guard aborts the run when
MemAvailable falls below half of --min-free: the machine is never pushed into the OOM killer.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import json
import math
import os
import platform
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "bench" / "c" / "c1000k_client"
RESULTS_DIR = REPO / "bench" / "results"

# Capacity of one process: the open-file hard limit minus a reserve for the listener, epoll,
# pipes, logs and the reactor's own fds (the 19,600 at a 20,000 limit).
FD_RESERVE = 400
SOURCES_PER_CLIENT = 4  # 4 x ~28k ephemeral ports per destination: ample for 19.6k
# Projection constants, measured on this machine (issue 5 and bench/RESULTS.md "C1000K").
# Slab per client+server socket pair, measured here: TCP 5.0 KB, sock_inode 1.7 KB, dentry,
# filp, epoll item; plus 1.4 KB of proc inodes because a monitor on this machine walks
# /proc/<pid>/fd (issue 5 saw 8.4 KB without it). Rounded up.
KERNEL_BYTES_PER_PAIR = 10_500
DEFAULT_SERVER_BYTES_PER_CONN = 1024  # until a run here measured it: twice the goal, cautious
CLIENT_BYTES_PER_CONN = 160  # measured client RSS per connection (struct conn is 24 B)
WORKER_BASELINE_BYTES = 24 << 20  # one idle reactor worker (Python, cffi module, 256 KiB buffer)
CLIENT_BASELINE_BYTES = 2 << 20  # one client: connection table, handshake pool, histograms
SKB_PAGE = 4096  # tcp_mem counts pages; a socket holding any data is charged at least one

SAMPLE_INTERVAL = 0.5  # seconds between memory/progress samples
STARTUP_TIMEOUT = 30.0  # seconds for every worker to listen
STOP_GRACE = 10.0  # seconds after SIGTERM before SIGKILL (server: its --shutdown-timeout + 5)
STAGE_SLACK = 30.0  # seconds the driver waits beyond a client's own stage bound
WARM_UP_TIMEOUT = 10.0  # seconds to wait for the workers' RSS to settle before the baseline
RSS_STABLE_BYTES = 256 * 1024  # summed RSS moving less than this in 0.5 s counts as settled
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


# ---- small /proc readers -------------------------------------------------------------------


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def sysctl(name: str) -> str | None:
    text = read_text("/proc/sys/" + name.replace(".", "/"))
    return " ".join(text.split()) if text is not None else None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    info = {}
    for line in (read_text("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) * 1024
    return info


def process_rss(pid: int) -> int:
    statm = read_text(f"/proc/{pid}/statm")
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") if statm else 0


def process_uss(pid: int) -> int:
    """Private (unshared) bytes: what this process alone costs, from smaps_rollup."""
    total = 0
    for line in (read_text(f"/proc/{pid}/smaps_rollup") or "").splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_ticks() -> dict[str, int]:
    """Clock ticks of all CPUs by kind, from the first line of /proc/stat."""
    fields = (read_text("/proc/stat") or "cpu").splitlines()[0].split()[1:]
    values = [int(v) for v in fields[: len(CPU_FIELDS)]]
    return dict(zip(CPU_FIELDS, values + [0] * (len(CPU_FIELDS) - len(values)), strict=True))


def process_ticks(pids: list[int]) -> int:
    """User + system clock ticks used by `pids` (also of their reaped children)."""
    total = 0
    for pid in pids:
        stat = read_text(f"/proc/{pid}/stat")
        if stat:
            fields = stat.rpartition(")")[2].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total


def slab_caches() -> dict[str, int]:
    """Bytes held by each kernel slab cache (/proc/slabinfo, root only; empty otherwise)."""
    caches = {}
    for line in (read_text("/proc/slabinfo") or "").splitlines()[2:]:
        f = line.split()
        if len(f) > 14:  # name active num objsize perslab pages : tunables ... : slabdata a n s
            caches[f[0]] = int(f[14]) * int(f[5]) * os.sysconf("SC_PAGE_SIZE")
    return caches


def slab_growth(base: dict[str, int], held: dict[str, int], count: int, top: int = 8):
    """The caches that grew most, in bytes per connection, largest first."""
    if not count:
        return {}
    growth = {name: (held[name] - base.get(name, 0)) / count for name in held}
    largest = sorted(growth.items(), key=lambda item: -item[1])[:top]
    return {name: round(value, 1) for name, value in largest if value > 0}


def softirq_threads() -> list[int]:
    return [p for p in all_pids() if (read_text(f"/proc/{p}/comm") or "").startswith("ksoftirqd/")]


def child_pids(pid: int) -> list[int]:
    text = read_text(f"/proc/{pid}/task/{pid}/children")
    if text is not None:
        return [int(p) for p in text.split()]
    return [p for p in all_pids() if parent_of(p) == pid]


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def parent_of(pid: int) -> int | None:
    stat = read_text(f"/proc/{pid}/stat")
    return int(stat.rpartition(")")[2].split()[1]) if stat else None


def alive(pid: int) -> bool:
    """True for a running process (a zombie is dead: it only waits to be reaped)."""
    stat = read_text(f"/proc/{pid}/stat")
    return stat is not None and stat.rpartition(")")[2].split()[0] != "Z"


def listening_ports() -> set[int]:
    """Local ports in LISTEN state (IPv4 and IPv6)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read_text(name) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def listener_pids(ports: set[int]) -> list[int]:
    """Processes holding a listening socket on one of `ports` (a server we did not start)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read_text(name) or "").splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rpartition(":")[2], 16) in ports:
                inodes.add(f"socket:[{f[9]}]")
    return sorted({pid for pid in all_pids() if _holds_any(pid, inodes)})


def _holds_any(pid: int, targets: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        return any(_readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in fds)
    except OSError:
        return False


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


# ---- the plan ------------------------------------------------------------------------------


@dataclass
class Plan:
    connections: int
    workers: int
    per_process_max: int
    base_port: int
    host: str = "127.0.0.1"
    shared_port: bool = False
    target: bool = False  # a running server: nothing to start or stop
    in_flight: int = 512
    echo_window: int = 1024
    size: int = 32
    close_mode: str = "handshake"
    sources_per_client: int = SOURCES_PER_CLIENT
    server_args: list[str] = field(default_factory=list)

    @property
    def clients(self) -> int:
        return self.workers

    def per_client(self) -> list[int]:
        """Connections of each client: an even split, the first ones taking the remainder."""
        base, extra = divmod(self.connections, self.clients)
        return [base + (1 if i < extra else 0) for i in range(self.clients)]

    def port_of(self, client: int) -> int:
        return self.base_port if self.shared_port else self.base_port + client

    def ports(self) -> list[int]:
        return sorted({self.port_of(i) for i in range(self.clients)})

    def sources_of(self, client: int) -> str:
        """127.(1 + i // 256).(i % 256).1-4: every client its own source addresses."""
        return f"127.{1 + client // 256}.{client % 256}.1-{self.sources_per_client}"


def per_process_max(hard_limit: int) -> int:
    return max(1, hard_limit - FD_RESERVE)


def workers_needed(connections: int, per_process: int) -> int:
    return max(1, math.ceil(connections / per_process))


def port_range() -> tuple[int, int]:
    low, high = (sysctl("net.ipv4.ip_local_port_range") or "32768 60999").split()
    return int(low), int(high)


def pick_base_port(count: int, host: str) -> int:
    """The first run of `count` free ports above the ephemeral range (never handed out to our
    own clients' connects), or below it when there is no room above."""
    low, high = port_range()
    candidates = list(range(high + 1, 65536 - count + 1)) + list(range(1024, low - count + 1))
    for base in candidates:
        if all(port_is_free(host, base + i) for i in range(count)):
            return base
    raise SystemExit(f"no run of {count} free ports outside ip_local_port_range {low}-{high}")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# ---- preflight -----------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    need: str
    have: str
    ok: bool
    fix: str = ""
    blocking: bool = True  # False: a warning that never refuses the stage
    note: str = ""  # how `need` was worked out, printed under the table


@dataclass
class Facts:
    """What the preflight judges, gathered once (tests pass made-up ones)."""

    fd_soft: int
    fd_hard: int
    nproc_limit: int
    processes: int
    pid_max: int
    port_range: tuple[int, int]
    somaxconn: int
    syn_backlog: int
    conntrack_max: int | None  # None: the module is not loaded
    conntrack_tracks_loopback: bool
    tcp_mem_high_pages: int
    mem_total: int
    mem_available: int
    load1: float
    cpus: int
    server_bytes_per_conn: int
    server_bytes_source: str


def gather_facts(previous_results: Path = RESULTS_DIR) -> Facts:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    mem = meminfo()
    conntrack = sysctl("net.netfilter.nf_conntrack_max")
    per_conn, source = measured_server_bytes(previous_results)
    return Facts(
        fd_soft=soft,
        fd_hard=hard,
        nproc_limit=nproc if nproc != resource.RLIM_INFINITY else 1 << 30,
        processes=len(all_pids()),
        pid_max=int(sysctl("kernel.pid_max") or 32768),
        port_range=port_range(),
        somaxconn=int(sysctl("net.core.somaxconn") or 4096),
        syn_backlog=int(sysctl("net.ipv4.tcp_max_syn_backlog") or 1024),
        conntrack_max=int(conntrack) if conntrack else None,
        conntrack_tracks_loopback=conntrack is not None and conntrack_sees_loopback(),
        tcp_mem_high_pages=int((sysctl("net.ipv4.tcp_mem") or "0 0 0").split()[2]),
        mem_total=mem.get("MemTotal", 0),
        mem_available=mem.get("MemAvailable", 0),
        load1=os.getloadavg()[0],
        cpus=os.cpu_count() or 1,
        server_bytes_per_conn=per_conn,
        server_bytes_source=source,
    )


def conntrack_sees_loopback(probes: int = 64) -> bool:
    """Open `probes` loopback connections and watch nf_conntrack_count: it grows only if
    loopback traffic is tracked (then every benchmark connection needs an entry)."""
    before = int(sysctl("net.netfilter.nf_conntrack_count") or 0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(probes)
        socks = [socket.create_connection(listener.getsockname()) for _ in range(probes)]
        after = int(sysctl("net.netfilter.nf_conntrack_count") or 0)
        for sock in socks:
            sock.close()
    return after - before >= probes // 2


def measured_server_bytes(results: Path) -> tuple[int, str]:
    """Server memory per connection from the largest earlier run here, for the projection
    (small runs overstate it: fixed start-up costs are spread over few connections); the
    cautious default when there is none."""
    best: tuple[int, int] | None = None  # (connections held, bytes per connection)
    for path in results.glob("c1000k-*.json"):
        try:
            result = json.loads(path.read_text())["result"]
            measured = (int(result["held_at_echo"]), int(result["server_rss_per_conn_b"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if measured[0] > 0 and (best is None or measured > best):
            best = measured
    if best is None:
        return DEFAULT_SERVER_BYTES_PER_CONN, "default until a run measures it"
    return best[1], f"measured with {best[0]:,} connections (bench/results)"


def min_free_bytes(facts: Facts, min_free_gib: float | None) -> int:
    """The memory that must stay free: --min-free, else max(2 GiB, 10% of RAM)."""
    if min_free_gib is not None:
        return int(min_free_gib * (1 << 30))
    return max(2 << 30, facts.mem_total // 10)


def projected_bytes(plan: Plan, facts: Facts) -> int:
    n = plan.connections
    per_conn = KERNEL_BYTES_PER_PAIR + facts.server_bytes_per_conn + CLIENT_BYTES_PER_CONN
    processes = 0 if plan.target else plan.workers * WORKER_BASELINE_BYTES
    return n * per_conn + processes + plan.clients * CLIENT_BASELINE_BYTES


def preflight(plan: Plan, facts: Facts, min_free: int) -> list[Check]:
    return [
        check_fd_limit(plan, facts),
        check_processes(plan, facts),
        check_port_range(plan, facts),
        check_server_ports(plan, facts),
        check_backlog("somaxconn", "net.core.somaxconn", facts.somaxconn, plan),
        check_backlog(
            "tcp_max_syn_backlog", "net.ipv4.tcp_max_syn_backlog", facts.syn_backlog, plan
        ),
        check_conntrack(plan, facts),
        check_tcp_mem(plan, facts),
        check_memory(plan, facts, min_free),
        check_load(facts),
    ]


def check_fd_limit(plan: Plan, facts: Facts) -> Check:
    need = max(plan.per_client()) + FD_RESERVE
    ok = facts.fd_hard >= need
    workers = workers_needed(plan.connections, per_process_max(facts.fd_hard))
    fix = (
        f"more processes: --workers {workers} or auto (the hard limit is per process; raising it "
        f"needs `ulimit -Hn {need}` as root)"
    )
    return Check(
        "open files per process (hard limit)",
        f">= {need:,} ({max(plan.per_client()):,} connections + {FD_RESERVE} reserve)",
        f"soft {facts.fd_soft:,}, hard {facts.fd_hard:,}",
        ok,
        "" if ok else fix,
    )


def check_processes(plan: Plan, facts: Facts) -> Check:
    ours = (0 if plan.target else plan.workers + 1) + plan.clients
    room = min(facts.nproc_limit, facts.pid_max) - facts.processes
    ok = room >= ours
    return Check(
        "processes",
        f"{ours} ({'' if plan.target else f'{plan.workers} workers + supervisor + '}"
        f"{plan.clients} clients)",
        f"{facts.processes} running, pid_max {facts.pid_max}, ulimit -u {facts.nproc_limit}",
        ok,
        ""
        if ok
        else f"sysctl -w kernel.pid_max={facts.processes + ours + 4096}; ulimit -u unlimited",
    )


def check_port_range(plan: Plan, facts: Facts) -> Check:
    low, high = facts.port_range
    size = high - low + 1
    # Clients never share source addresses, so each (source, destination) pair carries this:
    per_pair = math.ceil(max(plan.per_client()) / plan.sources_per_client)
    ok = per_pair <= size * 0.9  # the kernel's port search slows down near a full range
    return Check(
        "ip_local_port_range",
        f">= {math.ceil(per_pair / 0.9):,} ports ({per_pair:,} per source/destination pair)",
        f"{low} {high} ({size:,} ports)",
        ok,
        "" if ok else 'sysctl -w net.ipv4.ip_local_port_range="1024 65000"',
    )


def check_server_ports(plan: Plan, facts: Facts) -> Check:
    low, high = facts.port_range
    ports = plan.ports()
    inside = [p for p in ports if low <= p <= high]
    ok = not inside and ports[-1] <= 65535
    return Check(
        "server ports outside the ephemeral range",
        f"{ports[0]}-{ports[-1]} outside {low}-{high}",
        "overlap" if inside else "ok",
        ok,
        "" if ok else f"--base-port {high + 1} (or narrow ip_local_port_range)",
    )


def check_backlog(name: str, key: str, value: int, plan: Plan) -> Check:
    # One client keeps --in-flight connects open against one listener: its accept queue and
    # SYN queue must hold that many, or SYNs are dropped and retried after 1 s, 3 s...
    ok = value >= plan.in_flight
    return Check(
        name,
        f">= {plan.in_flight} (--in-flight)",
        str(value),
        ok,
        "" if ok else f"sysctl -w {key}={max(4096, plan.in_flight)}",
    )


def check_conntrack(plan: Plan, facts: Facts) -> Check:
    if facts.conntrack_max is None:
        return Check("nf_conntrack_max", "-", "module not loaded", True)
    if not facts.conntrack_tracks_loopback:
        return Check(
            "nf_conntrack_max", "-", f"{facts.conntrack_max:,} (loopback not tracked)", True
        )
    need = int(plan.connections * 1.1) + 65536
    ok = facts.conntrack_max >= need
    return Check(
        "nf_conntrack_max",
        f">= {need:,} (loopback is tracked)",
        f"{facts.conntrack_max:,}",
        ok,
        "" if ok else f"sysctl -w net.netfilter.nf_conntrack_max={need}",
    )


def check_tcp_mem(plan: Plan, facts: Facts) -> Check:
    # During the echo and close rounds at most echo-window messages per client are in flight,
    # each held by a client and a server socket; past tcp_mem's high mark the kernel drops.
    busy = 2 * plan.clients * max(plan.echo_window, plan.in_flight)
    ok = busy <= facts.tcp_mem_high_pages
    return Check(
        "tcp_mem (high, pages)",
        f">= {busy:,} (sockets holding data at once)",
        f"{facts.tcp_mem_high_pages:,} (~{facts.tcp_mem_high_pages * SKB_PAGE >> 20:,} MiB)",
        ok,
        ""
        if ok
        else f'smaller --echo-window, or sysctl -w net.ipv4.tcp_mem="{busy} {busy} {busy * 2}"',
    )


def check_memory(plan: Plan, facts: Facts, min_free: int) -> Check:
    projected = projected_bytes(plan, facts)
    left = facts.mem_available - projected
    ok = left >= min_free
    # Costs grow about linearly with connections (workers too); 5% off for the rounding.
    room = max(0, facts.mem_available - min_free)
    fitting = int(plan.connections * room / max(projected, 1) * 0.95) // 1000 * 1000
    fix = f"a smaller stage: --connections {fitting}"
    note = (
        f"projected {gib(projected)}: kernel {KERNEL_BYTES_PER_PAIR} B per socket pair + server "
        f"{facts.server_bytes_per_conn} B/conn ({facts.server_bytes_source}) + client "
        f"{CLIENT_BYTES_PER_CONN} B/conn + process baselines"
    )
    return Check(
        "memory left after the stage",
        f">= {gib(min_free)} (projected use {gib(projected)})",
        f"{gib(facts.mem_available)} available -> {gib(left)}",
        ok,
        "" if ok else fix,
        note=note,
    )


def check_load(facts: Facts) -> Check:
    ok = facts.load1 < 0.5 * facts.cpus
    return Check(
        "machine idle (1-min load)",
        f"< {0.5 * facts.cpus:.1f} for clean figures",
        f"{facts.load1:.2f}",
        ok,
        "" if ok else "wait for other heavy processes (top) to finish",
        blocking=False,
    )


def gib(value: float) -> str:
    return f"{value / (1 << 30):.2f} GiB"


def format_checks(checks: list[Check]) -> str:
    rows = [("check", "need", "have", "status")]
    for c in checks:
        rows.append((c.name, c.need, c.have, "ok" if c.ok else "FAIL" if c.blocking else "warn"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for c in checks:
        if c.note:
            lines.append(f"  {c.name}: {c.note}")
        if not c.ok and c.fix:
            lines.append(f"  fix {c.name}: {c.fix}")
    return "\n".join(lines)


def refusals(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.blocking and not c.ok]


# ---- processes -----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the driver dies, however it dies."""
    os.setsid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def server_command(plan: Plan) -> list[str]:
    argv = [
        sys.executable, "-m", "reactor", "--proto", "ws", "--host", plan.host,
        "--port", str(plan.base_port), "--workers", str(plan.workers),
        "--idle-timeout", "0", "--ping-interval", "0", "--log-level", "warning",
    ]  # fmt: skip
    if not plan.shared_port:
        argv.append("--port-per-worker")
    return argv + plan.server_args


def client_command(plan: Plan, index: int, count: int, args: argparse.Namespace) -> list[str]:
    return [
        str(CLIENT), "--host", plan.host, "--port", str(plan.port_of(index)),
        "--connections", str(count), "--sources", plan.sources_of(index), "--id", str(index),
        "--in-flight", str(plan.in_flight), "--echo-window", str(plan.echo_window),
        "--size", str(plan.size), "--close", plan.close_mode, "--progress-ms", "500",
        "--handshake-timeout", str(args.handshake_timeout),
        "--ramp-timeout", str(args.ramp_timeout), "--hold-timeout", str(args.hold_timeout),
        "--echo-timeout", str(args.echo_timeout), "--close-timeout", str(args.close_timeout),
    ]  # fmt: skip


class Client:
    """One client process and what it reported."""

    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent, cwd=REPO,
        )  # fmt: skip
        self.partial = {"out": b"", "err": b""}
        self.last: dict[str, Any] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.stderr: list[str] = []

    def command(self, word: str) -> None:
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it exited; its report (or its absence) tells the story

    def feed(self, stream: str, data: bytes) -> None:
        lines = (self.partial[stream] + data).split(b"\n")
        self.partial[stream] = lines.pop()
        for line in lines:
            if stream == "err":
                self.stderr.append(line.decode(errors="replace"))
                del self.stderr[:-20]  # the last lines are the useful ones
            elif line.strip():
                self.on_line(json.loads(line))

    def on_line(self, record: dict[str, Any]) -> None:
        self.last = record
        if record["event"] != "progress":
            self.events[record["event"]] = record


class Run:
    """The processes of one run, the samples, and the teardown that always happens."""

    def __init__(self, plan: Plan, args: argparse.Namespace, min_free: int) -> None:
        self.plan = plan
        self.args = args
        self.guard = min_free // 2  # abort below this MemAvailable: never reach the OOM killer
        self.server: subprocess.Popen | None = None
        self.server_log = None
        self.worker_pids: list[int] = []
        self.target_pids: list[int] = []
        self.clients: list[Client] = []
        self.selector = selectors.DefaultSelector()
        self.t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self.marks: dict[str, float] = {}
        self.cpu_marks: dict[str, tuple] = {}  # name -> (time, machine ticks, ours...)
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.min_available = meminfo().get("MemAvailable", 0)
        self.aborted: str | None = None
        self.progress = Progress(plan.connections)
        self.all_pids: set[int] = set()

    # -- server

    def start_server(self, log_path: Path) -> None:
        if self.plan.target:
            self.target_pids = listener_pids(set(self.plan.ports()))
            return
        self.server_log = open(log_path, "wb")
        self.server = subprocess.Popen(
            server_command(self.plan), stdin=subprocess.DEVNULL, stdout=self.server_log,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, cwd=REPO,
        )  # fmt: skip
        self.all_pids.add(self.server.pid)
        self.wait_listening()
        self.worker_pids = child_pids(self.server.pid)
        self.all_pids.update(self.worker_pids)

    def wait_listening(self) -> None:
        ports, deadline = set(self.plan.ports()), time.monotonic() + STARTUP_TIMEOUT
        while not ports <= listening_ports():
            if self.server.poll() is not None:
                raise RuntimeError(f"server exited with {self.server.returncode}; see its log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not listening on {min(ports)}-{max(ports)} in time")
            time.sleep(0.1)
        time.sleep(0.5)  # let every worker finish its start-up allocations before the baseline

    def server_pids(self) -> list[int]:
        if self.plan.target:
            return self.target_pids
        pids = child_pids(self.server.pid) if self.server and self.server.poll() is None else []
        self.all_pids.update(pids)
        return pids

    # -- clients

    def start_clients(self) -> None:
        for index, count in enumerate(self.plan.per_client()):
            client = Client(index, client_command(self.plan, index, count, self.args))
            self.clients.append(client)
            self.all_pids.add(client.proc.pid)
            for stream, pipe in (("out", client.proc.stdout), ("err", client.proc.stderr)):
                os.set_blocking(pipe.fileno(), False)
                self.selector.register(pipe, selectors.EVENT_READ, (client, stream))

    def pump(self, timeout: float) -> None:
        """Read whatever the clients printed, for at most `timeout` seconds."""
        for key, _ in self.selector.select(timeout):
            client, stream = key.data
            try:
                data = os.read(key.fd, 1 << 16)  # the raw fd: no buffering layer guessing EOF
            except BlockingIOError:
                continue
            if not data:
                self.selector.unregister(key.fileobj)
                continue
            client.feed(stream, data)

    def broadcast(self, word: str) -> None:
        for client in self.clients:
            client.command(word)

    def wait_for(self, event: str, stage: str, bound: float) -> None:
        """Pump and sample until every client reported `event` (or exited), within `bound`."""
        deadline = time.monotonic() + bound
        next_sample = 0.0
        while not all(event in c.events or c.proc.poll() is not None for c in self.clients):
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"clients did not report {event} within {bound:.0f}s")
            if now >= next_sample:
                self.sample(stage)
                next_sample = now + SAMPLE_INTERVAL
            self.pump(min(0.2, max(0.0, next_sample - now)))
        self.sample(stage)

    def hold(self, seconds: float) -> None:
        """Keep reading the clients (their pipes must not fill) and sampling for `seconds`."""
        end = time.monotonic() + seconds
        next_sample = 0.0
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                self.sample("hold")
                next_sample = now + SAMPLE_INTERVAL
            self.pump(max(0.0, min(next_sample, end) - now))

    def warm_up(self) -> None:
        """One WebSocket connection per port, opened and closed, then a wait until the workers'
        RSS stops moving: first-use costs (code pages of the handshake path, lazily built
        tables) then land in the baseline, not in the cost per connection."""
        for port in self.plan.ports():
            for _ in range(1 if not self.plan.shared_port else self.plan.workers * 2):
                websocket_round_trip(self.plan.host, port)
        previous, deadline = -1, time.monotonic() + WARM_UP_TIMEOUT
        while time.monotonic() < deadline:
            rss = sum(process_rss(p) for p in self.server_pids())
            if abs(rss - previous) < RSS_STABLE_BYTES:
                return
            previous = rss
            time.sleep(SAMPLE_INTERVAL)

    # -- measurements

    def totals(self) -> dict[str, int]:
        keys = ("established", "open", "echo_ok", "closed", "failures_total")
        return {k: sum(c.last.get(k, 0) for c in self.clients) for k in keys}

    def sample(self, stage: str) -> dict[str, Any]:
        mem = meminfo()
        available = mem.get("MemAvailable", 0)
        self.min_available = min(self.min_available, available)
        record = {
            "t": round(time.monotonic() - self.t0, 3),
            "stage": stage,
            **self.totals(),
            "mem_available": available,
            "slab": mem.get("Slab", 0),
            "server_rss": sum(process_rss(p) for p in self.server_pids()),
            "client_rss": sum(process_rss(c.proc.pid) for c in self.clients),
        }
        self.samples.append(record)
        self.progress.show(record)
        if available < self.guard:
            raise MemoryError(f"MemAvailable {gib(available)} below the guard {gib(self.guard)}")
        return record

    def snapshot(self, name: str) -> dict[str, Any]:
        """Memory at a point that matters (baseline, held idle, after the echo round)."""
        pids = self.server_pids()
        mem = meminfo()
        snap = {
            "t": round(time.monotonic() - self.t0, 3),
            "established": self.totals()["established"],
            "open": self.totals()["open"],
            "server_rss": sum(process_rss(p) for p in pids),
            "server_uss": sum(process_uss(p) for p in pids),
            "server_processes": len(pids),
            "slab": mem.get("Slab", 0),
            "mem_available": mem.get("MemAvailable", 0),
            "client_rss": sum(process_rss(c.proc.pid) for c in self.clients),
            "slab_caches": slab_caches(),
        }
        self.snapshots[name] = snap
        return snap

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.t0, 3)
        server = self.server_pids() + ([self.server.pid] if self.server else [])
        clients = [c.proc.pid for c in self.clients]
        self.cpu_marks[name] = (
            time.monotonic(),
            machine_ticks(),
            process_ticks(server),
            process_ticks(clients),
            process_ticks(softirq_threads()),
        )

    def cpu_between(self, start: str, end: str) -> dict[str, float] | None:
        """Where the CPUs went between two marks, in CPU-seconds: our server, our clients, the
        kernel's ksoftirqd threads (loopback TCP work deferred from either side), other
        processes (this machine is shared: a busy neighbour slows the ramp), idle. Softirq
        work run inline is charged to the task it interrupted (tick-based accounting), so it
        is inside server_s and clients_s; softirq_s shows the machine's total of it."""
        if start not in self.cpu_marks or end not in self.cpu_marks:
            return None
        (t0, m0, *ours0), (t1, m1, *ours1) = self.cpu_marks[start], self.cpu_marks[end]
        tick = os.sysconf("SC_CLK_TCK")
        spent = {k: (m1[k] - m0[k]) / tick for k in CPU_FIELDS}
        server, clients, ksoftirqd = ((b - a) / tick for a, b in zip(ours0, ours1, strict=True))
        idle = spent["idle"] + spent["iowait"]
        busy = sum(spent.values()) - idle
        return {
            "seconds": round(t1 - t0, 3),
            "server_s": round(server, 2),
            "clients_s": round(clients, 2),
            "ksoftirqd_s": round(ksoftirqd, 2),
            "others_s": round(max(0.0, busy - server - clients - ksoftirqd), 2),
            "idle_s": round(idle, 2),
            "softirq_s": round(spent["softirq"] + spent["irq"], 2),
        }

    # -- teardown

    def teardown(self) -> None:
        """Clients first (they close their connections and print their last report), then
        the server; by PID, every wait bounded. A second Ctrl-C cannot cut it short."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._stop_clients()
            if self.server is not None:
                workers = self.server_pids()
                stop_process(self.server, grace=STOP_GRACE)
                for pid in workers:  # the supervisor stops its workers; make sure of it
                    kill_if_alive(pid)
            if self.server_log:
                self.server_log.close()
        finally:
            signal.signal(signal.SIGINT, previous)
            self.progress.finish()

    def _stop_clients(self) -> None:
        for client in self.clients:
            if client.proc.poll() is None:
                client.proc.send_signal(signal.SIGTERM)  # they abort: close all, report
        deadline = time.monotonic() + 5.0
        while self.selector.get_map() and time.monotonic() < deadline:
            self.pump(0.1)  # their final reports, until every pipe is at EOF
        for client in self.clients:
            stop_process(client.proc)  # SIGKILL if one is still there
        self.selector.close()

    def leftovers(self) -> list[int]:
        return sorted(pid for pid in self.all_pids if alive(pid))


def websocket_round_trip(host: str, port: int, timeout: float = 5.0) -> None:
    """Open a WebSocket (RFC 6455 §4.1), check its accept key, close it with 1000 (§5.5.1).
    Raises RuntimeError when the server does not answer like a WebSocket echo server."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise RuntimeError(f"port {port}: not a WebSocket upgrade: {head[:80]!r}")
        mask = os.urandom(4)
        code = bytes(b ^ mask[i] for i, b in enumerate(b"\x03\xe8"))  # 1000, masked
        sock.sendall(b"\x88\x82" + mask + code)
        while sock.recv(4096):  # the server's close frame, then its TCP close
            pass


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe:
            pipe.close()


def kill_if_alive(pid: int, grace: float = 3.0) -> None:
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Progress:
    """The live line on stderr: rewritten in place on a terminal, every 5 s otherwise."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0
        self.last_stage = ""
        self.previous: tuple[float, int] | None = None

    def show(self, s: dict[str, Any]) -> None:
        rate = 0.0
        if self.previous and s["t"] > self.previous[0]:
            rate = (s["established"] - self.previous[1]) / (s["t"] - self.previous[0])
        self.previous = (s["t"], s["established"])
        line = (
            f"[{s['t']:7.1f}s] {s['stage']:<9} established {s['established']:>9,}/{self.target:,}"
            f" ({100 * s['established'] / max(1, self.target):5.1f}%)  {rate:>8,.0f}/s"
            f"  open {s['open']:>9,}  echoed {s['echo_ok']:>9,}  failures {s['failures_total']:,}"
            f"  server RSS {s['server_rss'] / 2**20:,.0f} MiB  available {gib(s['mem_available'])}"
        )
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif s["t"] - self.last_print >= 5 or s["stage"] != self.last_stage:
            print(line, file=sys.stderr, flush=True)
            self.last_print = s["t"]
        self.last_stage = s["stage"]

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


# ---- the stages ----------------------------------------------------------------------------


def execute(run: Run, log_path: Path) -> None:
    plan, args = run.plan, run.args
    run.start_server(log_path)
    run.snapshot("cold")  # right after start: what a first connection also pays is still ahead
    run.warm_up()
    run.snapshot("baseline")
    run.mark("clients_started")
    run.start_clients()
    run.wait_for("ramp_done", "ramp", args.ramp_timeout + STAGE_SLACK)
    run.mark("ramp_done")
    run.hold(args.settle)  # let the kernel and the workers finish what the ramp left
    run.snapshot("held")
    run.mark("echo_started")
    run.broadcast("echo")
    run.wait_for("echo_done", "echo", args.echo_timeout + STAGE_SLACK)
    run.mark("echo_done")
    run.snapshot("after_echo")
    run.broadcast("close")
    run.mark("close_started")
    run.wait_for("report", "close", args.close_timeout + STAGE_SLACK)
    run.mark("closed")
    for client in run.clients:
        client.proc.wait(10)
    if plan.target:
        return
    run.snapshot("after_close")


# ---- the report ----------------------------------------------------------------------------


def merge_hist(reports: list[dict[str, Any]], key: str) -> list[tuple[int, int]]:
    merged: dict[int, int] = {}
    for report in reports:
        for value, count in report.get(key, []):
            merged[value] = merged.get(value, 0) + count
    return sorted(merged.items())


def quantile(hist: list[tuple[int, int]], q: float) -> float | None:
    """The value at quantile q of a merged histogram (the clients' bucket rule: rank ceil(qN))."""
    total = sum(count for _, count in hist)
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for value, count in hist:
        seen += count
        if seen >= rank:
            return value
    return hist[-1][0]


def latency_us(hist: list[tuple[int, int]]) -> dict[str, float | None]:
    out = {}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)):
        value = quantile(hist, q)
        out[name] = None if value is None else round(value / 1e3, 1)
    return out


def failures_by_cause(reports: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for report in reports:
        for stage, causes in report.get("failures", {}).items():
            for cause, count in causes.items():
                out[f"{stage}.{cause}"] = out.get(f"{stage}.{cause}", 0) + count
    return dict(sorted(out.items()))


def per_conn(delta: float, count: int) -> float | None:
    return round(delta / count, 1) if count else None


def ramp_slope(samples: list[dict[str, Any]], key: str) -> float | None:
    """Bytes per added connection during the ramp (least squares of `key` against open
    connections): the marginal cost, free of start-up costs the baseline difference includes.
    None when the ramp was too short to give at least 4 samples."""
    points = [(s["open"], s[key]) for s in samples if s["stage"] == "ramp" and s["open"] > 0]
    if len(points) < 4 or points[-1][0] == points[0][0]:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return round(sxy / sxx, 1) if sxx else None


def summarize(run: Run) -> dict[str, Any]:
    """The report: counts and times from the clients, memory from the snapshots."""
    return {**connection_figures(run), **memory_figures(run)}


def span(run: Run, start: str, end: str) -> float | None:
    if start not in run.marks or end not in run.marks:
        return None
    return round(run.marks[end] - run.marks[start], 3)


def connection_figures(run: Run) -> dict[str, Any]:
    reports = [c.events.get("report", c.last) for c in run.clients]
    established = sum(r.get("established", 0) for r in reports)
    # Time to full: from a client's start to its last handshake, the slowest client's.
    to_full = max((r.get("ramp_s", 0) for r in reports), default=0)
    failures = failures_by_cause(reports)
    return {
        "target": run.plan.connections,
        "established": established,
        "held_at_echo": run.snapshots.get("held", {}).get("open", 0),
        "failures": failures,
        "failures_total": sum(failures.values()),
        "time_to_full_s": round(to_full, 3),
        "ramp_stage_s": span(run, "clients_started", "ramp_done"),
        "connections_per_s": round(established / to_full, 1) if to_full else None,
        "handshake_us": latency_us(merge_hist(reports, "handshake_hist")),
        "echo_sent": sum(r.get("echo_sent", 0) for r in reports),
        "echo_ok": sum(r.get("echo_ok", 0) for r in reports),
        "echo_round_s": span(run, "echo_started", "echo_done"),
        "echo_us": latency_us(merge_hist(reports, "echo_hist")),
        "closed_clean": sum(r.get("closed", 0) for r in reports),
        "close_round_s": span(run, "close_started", "closed"),
        "cpu_in_ramp": run.cpu_between("clients_started", "ramp_done"),
        "cpu_in_echo": run.cpu_between("echo_started", "echo_done"),
    }


def memory_figures(run: Run) -> dict[str, Any]:
    """Per connection: growth from the baseline (no connection) to a snapshot, divided by the
    connections open at that snapshot."""
    base = run.snapshots.get("baseline", {})

    def growth(snapshot: str, key: str, sign: int = 1) -> float | None:
        snap = run.snapshots.get(snapshot, {})
        return per_conn(sign * (snap.get(key, 0) - base.get(key, 0)), snap.get("open", 0))

    held = run.snapshots.get("held", {})
    return {
        "server_rss_per_conn_b": growth("held", "server_rss"),
        "server_uss_per_conn_b": growth("held", "server_uss"),
        "server_rss_per_conn_after_echo_b": growth("after_echo", "server_rss"),
        "server_rss_slope_per_conn_b": ramp_slope(run.samples, "server_rss"),
        "server_rss_per_conn_from_cold_b": per_conn(
            held.get("server_rss", 0) - run.snapshots.get("cold", {}).get("server_rss", 0),
            held.get("open", 0),
        ),
        "kernel_slab_per_conn_b": growth("held", "slab"),
        "kernel_slab_slope_per_conn_b": ramp_slope(run.samples, "slab"),
        "mem_available_drop_per_conn_b": growth("held", "mem_available", -1),
        "client_rss_per_conn_b": per_conn(held.get("client_rss", 0), held.get("open", 0)),
        "kernel_slab_caches_per_conn_b": slab_growth(
            base.get("slab_caches", {}), held.get("slab_caches", {}), held.get("open", 0)
        ),
        "server_rss_baseline_b": base.get("server_rss"),
        "server_rss_held_b": held.get("server_rss"),
        "min_mem_available_b": run.min_available,
    }


def result_ok(result: dict[str, Any], plan: Plan) -> bool:
    return (
        result["failures_total"] == 0
        and result["established"] == plan.connections
        and result["echo_ok"] == plan.connections
        and result["closed_clean"] == plan.connections
    )


def format_result(r: dict[str, Any]) -> str:
    def num(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        return (f"{value:,.1f}" if isinstance(value, float) else f"{value:,}") + unit

    hs, echo = r["handshake_us"], r["echo_us"]
    failures = ", ".join(f"{k} {v:,}" for k, v in r["failures"].items()) or "none"
    rows = [
        ("established", f"{r['established']:,} / {r['target']:,}"),
        ("failures", failures),
        ("time to full", num(r["time_to_full_s"], " s")),
        ("connections/s", num(r["connections_per_s"])),
        ("handshake p50 / p99", f"{num(_ms(hs['p50']), ' ms')} / {num(_ms(hs['p99']), ' ms')}"),
        ("echo round (all)", f"{num(r['echo_round_s'], ' s')}, {r['echo_ok']:,} byte-exact"),
        ("echo p50 / p99", f"{num(_ms(echo['p50']), ' ms')} / {num(_ms(echo['p99']), ' ms')}"),
        ("close handshakes", f"{r['closed_clean']:,} in {num(r['close_round_s'], ' s')}"),
        ("server RSS / conn (idle)", num(r["server_rss_per_conn_b"], " B")),
        ("server USS / conn (idle)", num(r["server_uss_per_conn_b"], " B")),
        ("server RSS / conn after echo", num(r["server_rss_per_conn_after_echo_b"], " B")),
        ("server RSS slope in ramp", num(r["server_rss_slope_per_conn_b"], " B/conn")),
        ("server RSS / conn from cold", num(r["server_rss_per_conn_from_cold_b"], " B")),
        ("kernel slab / conn pair", num(r["kernel_slab_per_conn_b"], " B")),
        ("client RSS / conn", num(r["client_rss_per_conn_b"], " B")),
        ("min MemAvailable", gib(r["min_mem_available_b"])),
        ("CPU-seconds in ramp", cpu_text(r["cpu_in_ramp"])),
        ("CPU-seconds in echo round", cpu_text(r["cpu_in_echo"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


def cpu_text(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "-"
    parts = ("server", "clients", "ksoftirqd", "others", "idle")
    return (
        ", ".join(f"{name} {cpu[name + '_s']:.1f}" for name in parts)
        + f" (in {cpu['seconds']:.1f} s)"
    )


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1e3


def plot(record: dict[str, Any], path: Path) -> bool:
    """Connections, kernel memory and process memory over time; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = record["timeline"]
    t = [s["t"] for s in samples]
    base = samples[0] if samples else {}

    def delta(key: str, unit: int) -> list[float]:
        return [(s[key] - base.get(key, 0)) / unit for s in samples]

    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 8), constrained_layout=True)
    conns, kernel, procs = axes
    settings = record["settings"]
    conns.set_title(f"C1000K: {settings['connections']:,} WebSocket connections, "
                    f"{settings['workers']} workers")  # fmt: skip
    conns.plot(t, [s["open"] for s in samples], label="open connections")
    conns.plot(t, [s["echo_ok"] for s in samples], label="echoed byte-exact", linestyle="--")
    conns.plot(t, [s["failures_total"] for s in samples], label="failures", color="red")
    kernel.plot(t, delta("slab", 2**30), label="kernel slab (growth)", color="tab:orange")
    kernel.plot(t, [s["mem_available"] / 2**30 for s in samples], label="MemAvailable",
                color="gray")  # fmt: skip
    procs.plot(t, delta("server_rss", 2**20), label="server RSS, all workers (growth)")
    procs.plot(
        t, [s["client_rss"] / 2**20 for s in samples], label="clients RSS", color="tab:green"
    )
    marks = record["marks"]
    spans = [("ramp", "clients_started", "ramp_done", "tab:blue"),
             ("echo", "echo_started", "echo_done", "tab:orange"),
             ("close", "close_started", "closed", "tab:green")]  # fmt: skip
    for axis, unit in ((conns, "connections"), (kernel, "GiB"), (procs, "MiB")):
        axis.set_ylabel(unit)
        for name, start, end, color in spans:
            if start in marks and end in marks:
                label = f"{name} stage" if axis is conns else None
                axis.axvspan(marks[start], marks[end], color=color, alpha=0.07, label=label)
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(alpha=0.3)
    procs.set_xlabel("seconds")
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


# ---- command line --------------------------------------------------------------------------


def workers_arg(value: str) -> str | int:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("a positive number or 'auto'")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add(
        "--connections",
        type=int,
        default=10_000,
        help="stage: 10000, 100000, 250000, 500000, 1000000",
    )
    add(
        "--workers",
        type=workers_arg,
        default="auto",
        help="server workers = client processes (auto: one per ~19.6k)",
    )
    add(
        "--base-port",
        type=int,
        default=None,
        help="first server port (default: above the ephemeral range)",
    )
    add("--shared-port", action="store_true", help="all workers on one SO_REUSEPORT port")
    add("--target", default=None, help="HOST:PORT of a running server (with --workers ports)")
    add("--in-flight", type=int, default=512, help="connects + handshakes in flight per client")
    add("--echo-window", type=int, default=1024, help="echoes or closes outstanding per client")
    add("--size", type=int, default=32, help="echo payload bytes (1..125)")
    add("--close", dest="close_mode", choices=["handshake", "plain"], default="handshake")
    add("--settle", type=float, default=2.0, help="seconds held idle before measuring memory")
    add("--handshake-timeout", type=float, default=30.0)
    add("--ramp-timeout", type=float, default=600.0)
    add("--hold-timeout", type=float, default=900.0)
    add("--echo-timeout", type=float, default=120.0)
    add("--close-timeout", type=float, default=120.0)
    add(
        "--min-free",
        type=float,
        default=None,
        help="GiB that must stay free (default: max(2, 10%%))",
    )
    add("--server-arg", action="append", default=[], help="extra argument for the server (repeat)")
    add("--preflight-only", action="store_true", help="print the preflight and exit")
    add("--results-dir", type=Path, default=RESULTS_DIR)
    add("--no-plot", action="store_true")
    add("--no-build", action="store_true", help="do not run make -C bench/c first")
    return p


def make_plan(args: argparse.Namespace, facts: Facts) -> Plan:
    cap = per_process_max(facts.fd_hard)
    workers = workers_needed(args.connections, cap) if args.workers == "auto" else args.workers
    host, base = "127.0.0.1", args.base_port
    if args.target:
        host, _, port = args.target.rpartition(":")
        base = int(port)
    elif base is None:
        base = pick_base_port(1 if args.shared_port else workers, host)
    return Plan(
        connections=args.connections, workers=workers, per_process_max=cap, base_port=base,
        host=host, shared_port=args.shared_port, target=bool(args.target),
        in_flight=args.in_flight, echo_window=args.echo_window, size=args.size,
        close_mode=args.close_mode, server_args=args.server_arg,
    )  # fmt: skip


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mem_total_b": meminfo().get("MemTotal"),
        "sysctl": {
            k: sysctl(k)
            for k in (
                "net.ipv4.ip_local_port_range",
                "net.core.somaxconn",
                "net.ipv4.tcp_max_syn_backlog",
                "net.ipv4.tcp_mem",
                "net.netfilter.nf_conntrack_max",
                "net.ipv4.tcp_tw_reuse",
            )  # fmt: skip
        },
    }


def on_terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.no_build:
        subprocess.run(["make", "-s", "-C", str(CLIENT.parent), CLIENT.name], check=True)
    facts = gather_facts(args.results_dir)
    plan = make_plan(args, facts)
    min_free = min_free_bytes(facts, args.min_free)
    checks = preflight(plan, facts, min_free)
    print(
        f"C1000K preflight: {plan.connections:,} connections, {plan.workers} workers, "
        f"{plan.clients} clients, ports {plan.ports()[0]}-{plan.ports()[-1]}"
    )
    print(format_checks(checks), flush=True)
    if refusals(checks):
        print("refused: fix the FAIL lines above first", file=sys.stderr)
        return 2
    if args.preflight_only:
        return 0
    return run_stage(plan, args, facts, checks, min_free)


def run_stage(
    plan: Plan, args: argparse.Namespace, facts: Facts, checks: list[Check], min_free: int
) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"c1000k-{plan.connections}-{stamp}"
    run = Run(plan, args, min_free)
    signal.signal(signal.SIGTERM, on_terminate)
    try:
        execute(run, stem.with_suffix(".server.log"))
    except (KeyboardInterrupt, Exception) as exc:  # whatever happens: teardown, then report
        if not isinstance(exc, (KeyboardInterrupt, RuntimeError, MemoryError, OSError)):
            traceback.print_exc()  # a bug of ours: show where
        run.aborted = f"{type(exc).__name__}: {exc}"
    finally:
        run.teardown()
    return finish(run, facts, checks, stem)


def finish(run: Run, facts: Facts, checks: list[Check], stem: Path) -> int:
    result = summarize(run)
    ok = result_ok(result, run.plan) and run.aborted is None
    leftovers = run.leftovers()
    record = {
        "benchmark": "c1000k",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "machine": machine(),
        "settings": asdict(run.plan)
        | {"clients": run.plan.clients, "server_command": server_command(run.plan)},
        "preflight": [asdict(c) for c in checks],
        "facts": asdict(facts),
        "result": result,
        "snapshots": run.snapshots,
        "marks": run.marks,
        "timeline": run.samples,
        "clients": [_client_summary(c) for c in run.clients],
        "server_exit_status": run.server.returncode if run.server else None,
        "pids": sorted(run.all_pids),
        "leftover_pids": leftovers,
        "aborted": run.aborted,
        "ok": ok and not leftovers,
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(format_result(result))
    if not run.args.no_plot and plot(record, stem.with_suffix(".png")):
        print(f"plot: {stem.with_suffix('.png')}")
    print(f"results: {stem.with_suffix('.json')}")
    if run.aborted:
        print(f"ABORTED: {run.aborted}", file=sys.stderr)
    if leftovers:
        print(f"processes left behind: {leftovers}", file=sys.stderr)
    return 0 if record["ok"] else 1


def _client_summary(client: Client) -> dict[str, Any]:
    report = client.events.get("report", client.last)
    summary = {k: v for k, v in report.items() if not k.endswith("_hist")}
    summary["exit_status"] = client.proc.returncode
    summary["stderr"] = client.stderr
    return summary


if __name__ == "__main__":
    sys.exit(main())
