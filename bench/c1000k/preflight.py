"""Preflight: limits, sysctls and memory against what a stage needs; a stage that cannot
work (or would leave less than --min-free of memory) is refused before anything starts."""

from __future__ import annotations

import json
import math
import os
import resource
import socket
from dataclasses import dataclass
from pathlib import Path

import benchkit

from .plan import FD_RESERVE, Plan, per_process_max, port_range, workers_needed
from .procfs import meminfo, sysctl

# Projection constants, measured on this machine (bench/RESULTS.md "C1000K").
# Slab per client+server socket pair, measured here: TCP 5.0 KB, sock_inode 1.7 KB, dentry,
# filp, epoll item; plus 1.4 KB of proc inodes because a monitor on this machine walks
# /proc/<pid>/fd (8.4 KB without it). Rounded up.
KERNEL_BYTES_PER_PAIR = 10_500
DEFAULT_SERVER_BYTES_PER_CONN = 1024  # until a run here measured it: twice the goal, cautious
CLIENT_BYTES_PER_CONN = 160  # measured client RSS per connection (struct conn is 24 B)
WORKER_BASELINE_BYTES = 24 << 20  # one idle reactor worker (Python, cffi module, 256 KiB buffer)
CLIENT_BASELINE_BYTES = 2 << 20  # one client: connection table, handshake pool, histograms
SKB_PAGE = 4096  # tcp_mem counts pages; a socket holding any data is charged at least one


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


def gather_facts(previous_results: Path = benchkit.RESULTS_DIR) -> Facts:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    mem = meminfo()
    conntrack = sysctl("net.netfilter.nf_conntrack_max")
    per_conn, source = measured_server_bytes(previous_results)
    return Facts(
        fd_soft=soft,
        fd_hard=hard,
        nproc_limit=nproc if nproc != resource.RLIM_INFINITY else 1 << 30,
        processes=len(benchkit.all_pids()),
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
