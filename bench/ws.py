"""WebSocket benchmark: our ``--proto ws`` server side by side with picows, aiohttp, websockets,
socketify (uWebSockets) and a minimal C echo server, in one run. Ours runs twice: as started
by default (adaptive busy polling, up to 50 us), and as ``ours-no-spin`` with ``--busy-poll 0``
(the loop always sleeps when it has nothing to do, as the peers' loops do). ``ours-async`` is
ours with an ``async def on_message`` echo (bench/peers/ours_async_echo.py): every message
crosses to the asyncio companion thread and back, to compare with the asyncio-native peers.

Scenarios, each server pinned to CPU 0 and the C load generator
(bench/c/loadgen) to CPU 1, repetitions alternating the servers, medians:

- ``echo64``: 64 B binary messages, 100 connections, 16 in flight on each (msg/s);
- ``rtt``: one message at a time from a busy-polling client (round trips/s);
- ``echo64k``: 64 KiB messages (MB/s of payload, one direction);
- ``handshake``: connect + upgrade + close handshake + TCP close, 50 concurrent (handshakes/s);
- ``idle``: server memory per idle connection: RSS with 10k upgraded connections open, minus
  RSS after a warm-up, over 10k. The connections are held by this script (no load generator).

Server start-up, pinning and the /proc readers are bench/benchkit.py's; CPU sampling, noisy-run
detection and medians are bench/echo.py's. This script adds the WebSocket servers, the
scenarios, the idle-memory client and a table of ratios against picows, the reference peer.
Next to each rate the summary gives the server's CPU time per message or handshake (its
process CPU share over the rate), and it flags a figure whose load generator core was more
than 90% busy: there the load generator, not the server, may have set the rate. The C server
(bench/c/ws_echo_server) is there to show the load generator drives a faster server well above
the Python figures. A server whose package is not installed (or ours, before its handler
exists) is skipped and said so.

Every process started here is tracked by PID and stopped in a ``finally`` (SIGTERM, then
SIGKILL after a deadline); every wait is bounded. Results go to bench/results/ws-<time>.json and
markdown tables on stdout.

    .venv/bin/python bench/ws.py                  # 3 x 5 s per server and scenario, ~15 min
    .venv/bin/python bench/ws.py --quick          # 1 x 1 s, 1000 idle connections: smoke run
    .venv/bin/python bench/ws.py --scenarios echo64,rtt --servers ours,picows
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import benchkit
import echo as tcp_bench  # bench/echo.py: the measuring machinery (CPU sampling, medians)
from benchkit import upgrade_request

PEERS_DIR = benchkit.BENCH_DIR / "peers"
C_WS_SERVER = benchkit.C_DIR / "ws_echo_server"
REFERENCE = "picows"  # the goals are ratios against picows on uvloop

# The module each server needs, to skip the ones that are not installed.
REQUIREMENTS = {
    "ours": "reactor.handlers.ws",
    "ours-no-spin": "reactor.handlers.ws",  # ours with --busy-poll 0
    "ours-async": "reactor.handlers.ws_async",  # ours, echoing from an async def on_message
    "picows": "picows",
    "aiohttp": "aiohttp",
    "websockets": "websockets",
    "socketify": "socketify",
    "c": None,
}
SERVERS = tuple(REQUIREMENTS)
ASYNCIO_PEERS = ("picows", "aiohttp", "websockets")


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # loadgen mode, or "idle" for the memory scenario
    connections: int
    window: int
    size: int
    unit: str  # what the summary table shows
    higher_is_better: bool = True


SCENARIOS = {
    "echo64": Scenario("echo64", "ws-echo", 100, 16, 64, "msg/s"),
    "rtt": Scenario("rtt", "ws-rtt", 1, 1, 64, "round trips/s"),
    "echo64k": Scenario("echo64k", "ws-echo", 10, 4, 64 * 1024, "MB/s"),
    "handshake": Scenario("handshake", "ws-handshake", 50, 1, 64, "handshakes/s"),
    "idle": Scenario("idle", "idle", 10_000, 0, 0, "B/connection", higher_is_better=False),
}

# The goals, as (scenario, server, ratio against picows, what it says).
GOALS = (
    ("echo64", "ours", 1.0, "64 B echo >= 1.0x picows (aim 2x)"),
    ("rtt", "ours", 1.0, "one-at-a-time round trips >= 1.0x picows"),
    ("rtt", "ours-no-spin", 1.0, "the same with --busy-poll 0 (no spinning)"),
    ("echo64k", "ours", 1.0, "64 KiB echo >= 1.0x picows"),
    ("handshake", "ours", 2.0, "handshakes/s >= 2x picows (aim: >= socketify)"),
)
IDLE_GOAL = 512  # bytes of server memory per idle connection (aim 256)


# ---- servers ------------------------------------------------------------------------------


def server_commands(python: str, host: str, peer_loop: str) -> dict[str, list[str]]:
    commands = {
        "ours": [python, "-m", "reactor", "--host", host, "--port", "0", "--proto", "ws",
                 "--idle-timeout", "0"],
        "socketify": [python, str(PEERS_DIR / "socketify_echo.py"), "--host", host],
        "c": [str(C_WS_SERVER), host, "0"],
    }  # fmt: skip
    commands["ours-no-spin"] = [*commands["ours"], "--busy-poll", "0"]
    commands["ours-async"] = [*commands["ours"], "--app", "bench.peers.ours_async_echo:app"]
    for name in ASYNCIO_PEERS:
        script = str(PEERS_DIR / f"{name}_echo.py")
        commands[name] = [python, script, "--host", host, "--loop", peer_loop]
    return commands


def missing_module(python: str, module: str | None) -> bool:
    if module is None:
        return False
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    done = subprocess.run([python, "-c", probe], cwd=benchkit.REPO_DIR, timeout=60)
    return done.returncode != 0


def available_servers(python: str, wanted: list[str], peer_loop: str) -> tuple[list[str], dict]:
    """The wanted servers that can run here, and why the others cannot."""
    skipped = {}
    for name in wanted:
        needs = [REQUIREMENTS[name]]
        if name in ASYNCIO_PEERS and peer_loop == "uvloop":
            needs.append("uvloop")
        absent = [m for m in needs if missing_module(python, m)]
        if absent:
            skipped[name] = f"not importable: {', '.join(absent)}"
    return [name for name in wanted if name not in skipped], skipped


# ---- throughput scenarios: the load generator ---------------------------------------------


def settings_for(scenario: Scenario, args: argparse.Namespace) -> tcp_bench.Settings:
    return tcp_bench.Settings(
        scenario.mode, args.host, scenario.connections, scenario.window, scenario.size,
        args.duration, args.warmup, args.grace, args.server_cpu, args.loadgen_cpu,
        args.quiet_timeout,
    )  # fmt: skip


def measure_load(name: str, argv: list[str], scenario: Scenario, args) -> dict:
    result = tcp_bench.measure(name, argv, None, settings_for(scenario, args))
    result["scenario"] = scenario.name
    return result


def summarize_load(scenario: Scenario, runs: list[dict]) -> dict[str, dict]:
    summary = tcp_bench.summarize(runs)
    for s in summary.values():
        if scenario.mode == "ws-rtt":
            s["bound_by"] = "latency"  # the busy-polling client keeps its core at 100%
        s["value"] = per_unit(scenario, s["ops_per_s"])
        s["values_all"] = [per_unit(scenario, v) for v in s["ops_per_s_all"]]
    return summary


def per_unit(scenario: Scenario, ops_per_s: float | None) -> float | None:
    if ops_per_s is None:
        return None
    return ops_per_s * scenario.size / 1e6 if scenario.unit == "MB/s" else ops_per_s


# ---- the idle-memory scenario: a client holding many upgraded connections ------------------

IDLE_IN_FLIGHT = 64  # handshakes under way at once: under asyncio's default backlog of 100
IDLE_WARMUP = 200  # connections opened and closed before the baseline: first-use allocations
IDLE_SETTLE = 1.0  # s before each RSS reading (lazy frees, GC); --idle-settle changes it
IDLE_TIMEOUT = 120.0  # s bound on opening all the connections
RESPONSE_LIMIT = 4096  # bytes of a 101 response we accept: the peers send under 300


def upgraded(response: bytes, accept: bytes) -> bool:
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    lines = head.split(b"\r\n")
    return (
        lines[0].startswith(b"http/1.1 101") and b"sec-websocket-accept: " + accept.lower() in lines
    )


@dataclass
class Pending:
    sock: socket.socket
    request: bytes
    accept: bytes
    response: bytes = b""
    sent: bool = False


class IdleClients:
    """Opens and upgrades ``count`` connections with non-blocking sockets, then holds them."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.held: list[socket.socket] = []
        self.failed = 0
        self.selector = selectors.DefaultSelector()

    def open(self, count: int, timeout: float = IDLE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        started = 0
        while len(self.held) + self.failed < count and time.monotonic() < deadline:
            while started < count and len(self.selector.get_map()) < IDLE_IN_FLIGHT:
                self._start()
                started += 1
            for key, _events in self.selector.select(timeout=0.5):
                self._step(key.data)
        self.failed += len(self.selector.get_map())  # still under way at the deadline
        for key in list(self.selector.get_map().values()):
            self._drop(key.data)

    def _start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setblocking(False)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed += 1
            return
        request, accept = upgrade_request(self.host, self.port)
        self.selector.register(sock, selectors.EVENT_WRITE, Pending(sock, request, accept))

    def _step(self, p: Pending) -> None:
        try:
            if not p.sent:
                self._send_request(p)
            else:
                self._read_response(p)
        except OSError:
            self._drop(p)
            self.failed += 1

    def _send_request(self, p: Pending) -> None:
        error = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        p.sock.send(p.request)  # ~150 bytes into an empty socket buffer: never partial
        p.sent = True
        self.selector.modify(p.sock, selectors.EVENT_READ, p)

    def _read_response(self, p: Pending) -> None:
        chunk = p.sock.recv(RESPONSE_LIMIT)
        p.response += chunk
        if not chunk or len(p.response) > RESPONSE_LIMIT:
            raise OSError("connection closed or oversized response during the handshake")
        if b"\r\n\r\n" not in p.response:
            return
        if not upgraded(p.response, p.accept):
            raise OSError(f"not upgraded: {p.response[:80]!r}")
        self.selector.unregister(p.sock)
        self.held.append(p.sock)

    def _drop(self, p: Pending) -> None:
        self.selector.unregister(p.sock)
        p.sock.close()

    def still_open(self) -> int:
        """Held connections the server has not closed (no EOF, no reset waiting)."""
        alive = 0
        for sock in self.held:
            try:
                alive += sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
            except BlockingIOError:
                alive += 1  # nothing to read: open and idle
            except OSError:
                pass
        return alive

    def close(self) -> None:
        for sock in self.held:
            sock.close()
        self.held.clear()
        self.selector.close()


def warm_up(host: str, port: int, connections: int) -> int:
    clients = IdleClients(host, port)
    try:
        clients.open(min(IDLE_WARMUP, connections // 10 + 1))  # small runs: a smaller warm-up
        return len(clients.held)
    finally:
        clients.close()


def measure_idle(name: str, argv: list[str], scenario: Scenario, args) -> dict:
    """RSS per connection with ``scenario.connections`` upgraded connections held open."""
    server = benchkit.Server(name, argv, args.server_cpu)
    clients = None
    result = {"server": name, "scenario": scenario.name, "mode": "idle"}
    result["connections"] = scenario.connections
    try:
        port = server.wait_ready()
        result["warmup_connections"] = warm_up(args.host, port, scenario.connections)
        time.sleep(args.idle_settle)
        result["rss_baseline"] = benchkit.rss_bytes(server.proc.pid)
        clients = IdleClients(args.host, port)
        started = time.monotonic()
        clients.open(scenario.connections)
        result["open_seconds"] = round(time.monotonic() - started, 2)
        time.sleep(args.idle_settle)
        result["rss_loaded"] = benchkit.rss_bytes(server.proc.pid)
        result.update(opened=len(clients.held), failed=clients.failed)
        result["alive_at_sample"] = clients.still_open()
    finally:
        if clients:
            clients.close()
        result["server_exit_status"] = server.stop()
    return with_idle_figures(result)


def with_idle_figures(result: dict) -> dict:
    alive = result["alive_at_sample"]
    growth = result["rss_loaded"] - result["rss_baseline"]
    result["bytes_per_connection"] = growth / alive if alive else None
    result["errors_total"] = result["failed"] + result["connections"] - alive
    return result


def summarize_idle(runs: list[dict]) -> dict[str, dict]:
    summary = {}
    for name in dict.fromkeys(r["server"] for r in runs):
        mine = [r for r in runs if r["server"] == name]
        values = [r["bytes_per_connection"] for r in mine]
        summary[name] = {
            "repetitions": len(mine),
            "value": tcp_bench.median(values),
            "values_all": [None if v is None else round(v) for v in values],
            "rss_baseline": tcp_bench.median([r["rss_baseline"] for r in mine]),
            "rss_loaded": tcp_bench.median([r["rss_loaded"] for r in mine]),
            "errors": sum(r["errors_total"] for r in mine),
        }
    return summary


# ---- running everything -------------------------------------------------------------------


def run_scenario(scenario: Scenario, servers: list[str], commands: dict, args) -> list[dict]:
    measure = measure_idle if scenario.mode == "idle" else measure_load
    runs = []
    for rep in range(args.repeat):
        order = servers if rep % 2 == 0 else servers[::-1]  # drift hits all alike
        for name in order:
            result = measure_until_clean(measure, name, commands[name], scenario, args)
            result["repetition"] = rep
            runs.append(result)
    return runs


def measure_until_clean(measure, name: str, argv: list[str], scenario: Scenario, args) -> dict:
    """One repetition, measured again (at most --noisy-retries times) while other programs on
    this shared machine disturbed it; the disturbed attempts are kept in the result."""
    disturbed = []
    for attempt in range(args.noisy_retries + 1):
        result = measure(name, argv, scenario, args)
        result["attempt"] = attempt
        log_run(scenario, result)
        if not result.get("noisy"):
            break
        disturbed.append({k: v for k, v in result.items() if k not in ("timeline", "runs")})
    result["disturbed_attempts"] = disturbed[:-1] if result.get("noisy") else disturbed
    return result


def log_run(scenario: Scenario, r: dict) -> None:
    if scenario.mode == "idle":
        value = (
            f"{r['bytes_per_connection'] or 0:>12,.0f} B/connection ({r['alive_at_sample']} open)"
        )
    else:
        value = f"{per_unit(scenario, r['ops_per_s']):>12,.1f} {scenario.unit}"
    noisy = " (disturbed)" if r.get("noisy") else ""
    print(f"  {scenario.name:>9} {r['server']:>10}: {value}, errors {r['errors_total']}{noisy}",
          file=sys.stderr, flush=True)  # fmt: skip


def summarize_scenario(scenario: Scenario, runs: list[dict]) -> dict[str, dict]:
    if scenario.mode == "idle":
        return summarize_idle(runs)
    return summarize_load(scenario, runs)


# ---- reporting ----------------------------------------------------------------------------


def ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value and reference else None


def cell(scenario: Scenario, entry: dict | None, reference: dict | None) -> str:
    if entry is None or entry.get("value") is None:
        return "-"
    value = entry["value"]
    text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    x = ratio(value, (reference or {}).get("value"))
    if x is not None:
        text += f" ({x:.2f}x)"
    if entry.get("server_cpu_us_per_op") is not None:  # server CPU per message/handshake
        text += f", {entry['server_cpu_us_per_op']:.2f} µs"
    if entry.get("loadgen_saturated_runs"):
        text += f", loadgen core {entry['loadgen_core_busy']:.0%}"
    return text


def summary_table(summaries: dict[str, dict[str, dict]], servers: list[str]) -> str:
    """One row per server, one column per scenario, each figure with its ratio to picows."""
    names = [n for n in summaries]
    header = " | ".join(f"{n}: {SCENARIOS[n].unit}" for n in names)
    lines = [f"| server | {header} |", "|---|" + "---:|" * len(names)]
    for server in servers:
        cells = [cell(SCENARIOS[n], summaries[n].get(server), summaries[n].get(REFERENCE))
                 for n in names]  # fmt: skip
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_lines(summaries: dict[str, dict[str, dict]]) -> list[str]:
    lines = []
    for name, server, goal, text in GOALS:
        if name in summaries and (server == "ours" or server in summaries[name]):
            values = summaries[name]
            x = ratio(values.get(server, {}).get("value"), values.get(REFERENCE, {}).get("value"))
            lines.append(verdict(text, x, x is not None and x >= goal, "x"))
    if "idle" in summaries:
        value = summaries["idle"].get("ours", {}).get("value")
        ok = value is not None and value <= IDLE_GOAL
        lines.append(verdict(f"idle connection <= {IDLE_GOAL} B (aim 256)", value, ok, " B"))
    return lines


def verdict(text: str, value: float | None, ok: bool, unit: str) -> str:
    if value is None:
        return f"- {text}: not measured (needs ours and {REFERENCE} in the same run)"
    shown = f"{value:.2f}x" if unit == "x" else f"{value:,.0f}{unit}"
    return f"- {text}: {shown} -> {'met' if ok else 'NOT met'}"


def detail_table(scenario: Scenario, summary: dict[str, dict]) -> str:
    if scenario.mode == "idle":
        lines = ["| server | B/connection (median) | per run | RSS before | RSS with all open "
                 "| errors |", "|---|---:|---|---:|---:|---:|"]  # fmt: skip
        for name, s in summary.items():
            lines.append(
                f"| {name} | {tcp_bench.fmt(s['value'], ',.0f')} | {s['values_all']} "
                f"| {s['rss_baseline'] / 2**20:.1f} MiB | {s['rss_loaded'] / 2**20:.1f} MiB "
                f"| {s['errors']} |"
            )
        return "\n".join(lines)
    return tcp_bench.markdown_table(summary)


def report(summaries: dict, skipped: dict, servers: list[str], scenarios: list[Scenario]) -> str:
    parts = [
        "## Summary (ratio against picows, server CPU µs per message or handshake)",
        summary_table(summaries, servers),
    ]
    goals = goal_lines(summaries) if "ours" in servers else []
    if goals:
        parts += ["## Goals for ours", "\n".join(goals)]
    for scenario in scenarios:
        summary = summaries[scenario.name]
        parts += [f"## {scenario.name} ({describe(scenario)})", detail_table(scenario, summary)]
    if skipped:
        parts.append("Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped.items()))
    return "\n\n".join(parts)


def describe(s: Scenario) -> str:
    if s.mode == "idle":
        return f"{s.connections} upgraded idle connections held open"
    window = f", window {s.window}" if s.mode == "ws-echo" else ""
    return f"loadgen {s.mode}, {s.connections} connections{window}, {s.size} B"


# ---- command line -------------------------------------------------------------------------


def parse_list(text: str, known: tuple[str, ...] | dict, what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--quick", action="store_true",
        help="smoke run: 1 repetition of 1 s, no warmup, 1000 idle connections")  # fmt: skip
    add("--duration", type=float, default=5.0, help="measured seconds per run")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    add("--repeat", type=int, default=3, help="repetitions per server (alternating order)")
    add("--servers", default=",".join(SERVERS), help="comma list of " + ", ".join(SERVERS))
    add("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    add("--idle-connections", type=int, default=10_000, help="connections the idle run holds")
    add("--idle-settle", type=float, default=IDLE_SETTLE, help="s before each RSS reading")
    add("--large-connections", type=int, default=10, help="connections of the 64 KiB echo")
    add("--large-window", type=int, default=4, help="64 KiB messages in flight per connection")
    add("--noisy-retries", type=int, default=2,
        help="measure a repetition again up to this many times while it is disturbed")  # fmt: skip
    add("--peer-loop", choices=["uvloop", "asyncio"], default="uvloop",
        help="event loop of the picows, aiohttp and websockets servers")  # fmt: skip
    add("--grace", type=float, default=2.0, help="bound on draining and closing (s)")
    add("--host", default="127.0.0.1")
    add("--no-build", action="store_true", help="skip `make -C bench/c`")
    benchkit.add_run_options(p, "loadgen", quiet_timeout=30.0)
    args = p.parse_args(argv)
    args.servers = parse_list(args.servers, SERVERS, "--servers")
    args.scenarios = parse_list(args.scenarios, SCENARIOS, "--scenarios")
    if args.quick:
        args.duration, args.warmup, args.repeat, args.noisy_retries = 1.0, 0.0, 1, 0
        args.idle_connections = min(args.idle_connections, 1000)
        args.quiet_timeout = min(args.quiet_timeout, 2.0)
    return args


def chosen_scenarios(args: argparse.Namespace) -> list[Scenario]:
    tuned = {
        "echo64k": {"connections": args.large_connections, "window": args.large_window},
        "idle": {"connections": args.idle_connections},
    }
    return [replace(SCENARIOS[n], **tuned.get(n, {})) for n in args.scenarios]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benchkit.stop_on_sigterm()
    benchkit.raise_fd_limit()  # the idle run holds 10k sockets; the servers inherit it
    if not args.no_build:
        tcp_bench.build_tools()
    servers, skipped = available_servers(args.python, args.servers, args.peer_loop)
    commands = server_commands(args.python, args.host, args.peer_loop)
    machine = benchkit.machine_note()
    runs, summaries = [], {}
    scenarios = chosen_scenarios(args)
    for scenario in scenarios:
        scenario_runs = run_scenario(scenario, servers, commands, args)
        runs += scenario_runs
        summaries[scenario.name] = summarize_scenario(scenario, scenario_runs)
    text = report(summaries, skipped, servers, scenarios)
    write_record(args, machine, servers, skipped, summaries, text, runs)
    print(text)
    return 1 if any(s["errors"] for per in summaries.values() for s in per.values()) else 0


def write_record(args, machine, servers, skipped, summaries, text, runs) -> Path:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"ws-{time.strftime('%Y%m%d-%H%M%S')}.json"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    scenarios = {s.name: s.__dict__ for s in chosen_scenarios(args)}
    record = {"benchmark": "ws", "command": sys.argv, "settings": settings,
              "scenarios": scenarios, "machine": machine, "servers": servers,
              "skipped": skipped, "summary": summaries, "table": text, "runs": runs}  # fmt: skip
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    sys.exit(main())
