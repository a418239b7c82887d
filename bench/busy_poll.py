"""What busy polling costs: server CPU for one echo at a time with a pause between them.

Starts ``python -m reactor --proto echo`` pinned to CPU 0 once per configuration and pause,
and exchanges 1-byte messages with it from this process (pinned to CPU 1): send, read the
echo, wait PAUSE microseconds (busy-waiting, so the pause is exact), repeat. Reports the
server's CPU share over the run and the time per exchange. Sparse traffic (long pauses) should
cost the same with and without spinning; a chatty peer (short pauses) pays CPU for latency.

    .venv/bin/python bench/busy_poll.py                          # pauses 1000, 200, 30 us
    .venv/bin/python bench/busy_poll.py --pauses 100 --seconds 5
    .venv/bin/python bench/busy_poll.py --server-dir /tmp/old --config fixed="--busy-poll 50"

``--server-dir`` runs the servers from another checkout (e.g. ``git worktree add /tmp/old
<commit>`` with its cffi modules built), to compare with an older policy. Every run is bounded
by --seconds and --max-exchanges; results go to bench/results/busy_poll-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
import time
from pathlib import Path

import benchkit

CONFIGS = {"off": "--busy-poll 0", "default": ""}


def exchange_loop(
    sock: socket.socket, pause: float, seconds: float, limit: int
) -> tuple[int, float]:
    """Exchanges done and seconds taken; stops at ``limit`` or after ``seconds``."""
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    done = 0
    while done < limit:
        sock.sendall(b"y")
        if sock.recv(1) != b"y":
            raise RuntimeError("wrong or missing echo")
        done += 1
        now = clock()
        if now >= deadline:
            break
        until = now + pause
        while clock() < until:
            pass
    return done, clock() - start


def measure(args: argparse.Namespace, name: str, server_args: str, pause_us: int) -> dict:
    argv = [args.python, "-m", "reactor", "--host", "127.0.0.1", "--port", "0", "--proto",
            "echo", *shlex.split(server_args)]  # fmt: skip
    server = benchkit.Server(name, argv, args.server_cpu, cwd=args.server_dir)
    try:
        port = server.wait_ready()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            exchange_loop(sock, 0.0, 0.2, 1000)  # warm-up
            before = benchkit.process_cpu_seconds(server.proc.pid)
            done, elapsed = exchange_loop(sock, pause_us / 1e6, args.seconds, args.max_exchanges)
            after = benchkit.process_cpu_seconds(server.proc.pid)
    finally:
        server.stop()
    return {
        "config": name,
        "server_args": server_args,
        "pause_us": pause_us,
        "exchanges": done,
        "seconds": round(elapsed, 3),
        "server_cpu_share": round((after - before) / elapsed, 4),
        "us_per_exchange": round(elapsed / done * 1e6, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    benchkit.add_run_options(parser, "client")
    parser.add_argument(
        "--pauses", default="1000,200,30", help="comma list of pauses between exchanges (us)"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="bound on each run")
    parser.add_argument("--max-exchanges", type=int, default=100_000, help="bound on each run")
    parser.add_argument(
        "--config", action="append", default=[], metavar="NAME=ARGS",
        help="server options to measure (default: off='--busy-poll 0' and default='')",
    )  # fmt: skip
    parser.add_argument(
        "--server-dir", default=str(benchkit.REPO_DIR), help="checkout the servers run from"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = dict(item.split("=", 1) for item in args.config) if args.config else CONFIGS
    benchkit.pin_self(args.client_cpu)
    runs = []
    for pause in (int(p) for p in args.pauses.split(",")):
        for name, server_args in configs.items():
            run = measure(args, name, server_args, pause)
            runs.append(run)
            print(
                f"pause {pause:>5} us  {name:>10}: server {run['server_cpu_share']:.1%} of a core,"
                f" {run['us_per_exchange']} us per exchange ({run['exchanges']} exchanges)",
                flush=True,
            )
    out = Path(args.results_dir) / time.strftime("busy_poll-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": sys.argv, "runs": runs}, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
