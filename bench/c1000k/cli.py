"""The command line: parse, plan, preflight, run one stage, write the JSON and the plot."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import benchkit

from . import __doc__ as package_doc
from .plan import Plan, per_process_max, pick_base_port, workers_needed
from .plot import plot
from .preflight import (
    Check,
    Facts,
    format_checks,
    gather_facts,
    min_free_bytes,
    preflight,
    refusals,
)
from .processes import CLIENT, Client, server_command
from .procfs import meminfo, sysctl
from .report import format_result, result_ok, summarize
from .run import Run, execute

STAGE_TIMEOUTS = {"handshake": 30.0, "ramp": 600.0, "hold": 900.0, "echo": 120.0, "close": 120.0}


def workers_arg(value: str) -> str | int:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("a positive number or 'auto'")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=package_doc.split("\n\n")[0])
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
    for bound, seconds in STAGE_TIMEOUTS.items():
        add(f"--{bound}-timeout", type=float, default=seconds, help="seconds (client side)")
    add(
        "--min-free",
        type=float,
        default=None,
        help="GiB that must stay free (default: max(2, 10%%))",
    )
    add("--server-arg", action="append", default=[], help="extra argument for the server (repeat)")
    add("--preflight-only", action="store_true", help="print the preflight and exit")
    add("--results-dir", type=Path, default=benchkit.RESULTS_DIR)
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
