"""A/B: our server from two checkouts, side by side, on the same scenarios.

For a change that must not move the figures (a refactor) or whose cost must
be shown: runs ``python -m reactor`` from checkout A and from checkout B in
alternating order, each pinned to one core with the load generator pinned to
the other, and reports medians with the server's CPU per operation.

    git worktree add /tmp/base <commit> && make -C /tmp/base install   # A, built
    .venv/bin/python bench/ab.py --a /tmp/base --b . --repeat 3
    .venv/bin/python bench/ab.py --a /tmp/base --b . --scenarios ws-echo64,static1k

Scenarios: ws-echo64 (loadgen ws-echo, 100 connections x 16 in flight, 64 B),
ws-rtt (one message at a time), ws-echo64k (10 x 4 in flight, 64 KiB),
ws-handshake (50 concurrent cycles), static1k (wrk -t1 -c100 on a 1 KiB file,
``--proto http --quiet``). Each checkout runs with its own ``.venv`` Python.
Results: a markdown table and bench/results/ab-<time>.json. Loopback only;
every run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchkit

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "c" / "loadgen"
SCENARIOS = {
    "ws-echo64": ("ws", ["ws-echo", "-c", "100", "-w", "16", "-s", "64"]),
    "ws-rtt": ("ws", ["ws-rtt"]),
    "ws-echo64k": ("ws", ["ws-echo", "-c", "10", "-w", "4", "-s", "65536"]),
    "ws-handshake": ("ws", ["ws-handshake", "-c", "50"]),
    "static1k": ("http", None),
}
WRK_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")


def start_server(checkout: Path, proto: str, root: Path, cpu: int) -> benchkit.Server:
    python = checkout / ".venv" / "bin" / "python"
    argv = [str(python), "-m", "reactor", "--host", "127.0.0.1", "--port", "0",
            "--proto", proto, "--quiet", "--root", str(root)]  # fmt: skip
    server = benchkit.Server(f"{checkout} {proto}", argv, cpu, cwd=checkout)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def load(scenario: str, port: int, args: argparse.Namespace) -> tuple[float, int]:
    """(operations per second, operations) of one measured run."""
    _, loadgen_args = SCENARIOS[scenario]
    if loadgen_args is None:
        argv = ["taskset", "-c", str(args.client_cpu), "wrk", "-t1", "-c100",
                f"-d{args.duration}s", f"http://127.0.0.1:{port}/1k.bin"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 30)
        rate = float(WRK_RATE.search(out.stdout).group(1))
        return rate, int(rate * args.duration)
    argv = ["taskset", "-c", str(args.client_cpu), str(LOADGEN), *loadgen_args,
            "-p", str(port), "-d", str(args.duration), "-u", "1"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60)
    result = json.loads(out.stdout)
    if out.returncode or any(result["errors"].values()):
        raise RuntimeError(f"{scenario}: load generator errors {result['errors']}")
    return result["ops_per_s"], result["ops"]


def measure(checkout: Path, scenario: str, root: Path, args: argparse.Namespace) -> dict:
    proto = SCENARIOS[scenario][0]
    server = start_server(checkout, proto, root, args.server_cpu)
    try:
        before = benchkit.process_cpu_seconds(server.proc.pid)
        started = time.monotonic()
        rate, ops = load(scenario, server.port, args)
        elapsed = time.monotonic() - started
        cpu = benchkit.process_cpu_seconds(server.proc.pid) - before
    finally:
        server.stop()
    # The server's CPU covers the warm-up second and the teardown too: per operation
    # it is an upper bound, the same for both checkouts.
    return {"rate": rate, "server_cpu_share": cpu / elapsed, "server_us_per_op": cpu / ops * 1e6}


def run(args: argparse.Namespace) -> dict:
    checkouts = {"A": Path(args.a).resolve(), "B": Path(args.b).resolve()}
    runs: dict[str, dict[str, list[dict]]] = {s: {"A": [], "B": []} for s in args.scenarios}
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "1k.bin").write_bytes(bytes(range(256)) * 4)
        for scenario in args.scenarios:
            for repetition in range(args.repeat):
                order = ("A", "B") if repetition % 2 == 0 else ("B", "A")
                for name in order:
                    result = measure(checkouts[name], scenario, Path(root), args)
                    runs[scenario][name].append(result)
                    print(f"{scenario} {name}: {result['rate']:,.0f}/s", file=sys.stderr)
    return {"checkouts": {k: str(v) for k, v in checkouts.items()}, "runs": runs}


def summarize(record: dict) -> str:
    lines = [
        "| scenario | A ops/s | B ops/s | B/A | A µs/op | B µs/op |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for scenario, by_name in record["runs"].items():
        a = statistics.median(r["rate"] for r in by_name["A"])
        b = statistics.median(r["rate"] for r in by_name["B"])
        a_us = statistics.median(r["server_us_per_op"] for r in by_name["A"])
        b_us = statistics.median(r["server_us_per_op"] for r in by_name["B"])
        lines.append(
            f"| {scenario} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | {a_us:.2f} | {b_us:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--a", required=True, help="checkout A (with its .venv built)")
    add("--b", default=str(HERE.parent), help="checkout B (default: this one)")
    add("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    add("--repeat", type=int, default=3, help="alternating pairs per scenario")
    add("--duration", type=int, default=5, help="measured seconds per run")
    add("--server-cpu", type=int, default=0)
    add("--client-cpu", type=int, default=1)
    add("--results-dir", default=str(benchkit.RESULTS_DIR))
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios.split(",")
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    subprocess.run(["make", "-s", "-C", str(HERE / "c")], check=True)
    record = {"benchmark": "ab", "command": sys.argv, **run(args)}
    table = summarize(record)
    record["table"] = table
    print(table)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"ab-{stamp}.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
