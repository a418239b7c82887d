"""Static files over HTTP: our ``--proto http``, nginx and aiohttp side by side, loaded by wrk.

``wrk -t1 -c100 -d10s`` with keep-alive on a 1 KiB and a 1 MiB file. Each server runs pinned
to CPU 0 (``taskset -c 0``), wrk to CPU 1. The servers start once and stay up; every
repetition runs each (file, server) pair once, in an order that alternates between
repetitions so drift hits all alike; medians are reported. Before each measured run a short
unmeasured wrk run warms the server (page cache, caches, connection set-up), and the script
waits (bounded) for the shared machine to go quiet.

- nginx: 1 worker (plus its master), ``sendfile on``, ``tcp_nopush on`` (its usual pairing),
  ``access_log off``, its own temporary prefix and config, a loopback port.
- aiohttp: ``web.static`` (``add_static``) on the same root, access log off.
- ours: ``python -m reactor --proto http --quiet`` (no access log, like the others).

Every process is tracked by PID and stopped in a ``finally`` (SIGTERM, then SIGKILL after a
deadline); every wait is bounded. Results go to bench/results/http_static-<time>.json and a
markdown table on stdout.

    .venv/bin/python bench/http_static.py            # 3 x 10 s per (file, server): ~4 min
    .venv/bin/python bench/http_static.py --quick    # 1 x 2 s: a smoke run

Needs ``wrk`` and ``nginx`` on PATH (apt-get install -y wrk nginx) and aiohttp in the venv
(pip install aiohttp); a missing server is skipped and said so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FILES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}
START_TIMEOUT = 15.0  # s for a server to accept connections
STOP_TIMEOUT = 10.0  # s for a graceful exit before SIGKILL
WRK_SLACK = 20.0  # s beyond wrk's own duration before it is killed
QUIET_PROBE = 0.3  # s per idleness probe before a run
QUIET_THRESHOLD = 0.15  # cores busy on the idle machine: above this, something else runs
NOISY_OTHER = 0.15  # share of a core used by neither the server nor wrk: a noisy run

NGINX_CONF = """\
daemon off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""

AIOHTTP_SERVER = """\
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""


# ---- CPU accounting ------------------------------------------------------------------------


def process_ticks(pid: int) -> int:
    """utime + stime of a process and its live children (nginx: master + worker)."""
    total = 0
    for one in [pid, *child_pids(pid)]:
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{one}/stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total


def child_pids(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def core_busy_ticks() -> dict[int, int]:
    """Busy ticks per core (everything but idle and iowait) from /proc/stat."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values[:8]]
            cores[int(name[3:])] = sum(ticks) - ticks[3] - ticks[4]
    return cores


def wait_for_quiet(limit: float) -> float:
    """Other agents share this machine: wait (bounded) until it is nearly idle."""
    deadline = time.monotonic() + limit
    while True:
        before = sum(core_busy_ticks().values())
        time.sleep(QUIET_PROBE)
        load = (sum(core_busy_ticks().values()) - before) / CLOCK_TICKS / QUIET_PROBE
        if load <= QUIET_THRESHOLD or time.monotonic() >= deadline:
            return round(load, 3)


# ---- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_accepting(port: int, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not accept connections within {START_TIMEOUT}s")


def stop_process(proc: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL once the deadline passes; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(STOP_TIMEOUT)


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, cpu: int, log_dir: Path) -> None:
        self.log = log_dir / f"{self.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *self.argv],
                cwd=REPO_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_accepting(self.port, self.proc, self.name)

    def stop(self) -> int | None:
        return stop_process(self.proc) if self.proc else None


def make_servers(names: list[str], python: str, root: Path, work: Path) -> list[Server]:
    servers = []
    for name in names:
        port = free_port()
        if name == "reactor":
            argv = [python, "-m", "reactor", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--proto", "http", "--root", str(root), "--quiet"]
        elif name == "nginx":
            argv = nginx_argv(work / "nginx", root, port)
        elif name == "aiohttp":
            argv = [python, "-c", AIOHTTP_SERVER, str(root), str(port)]
        else:
            raise ValueError(name)
        servers.append(Server(name, argv, port))
    return servers


def nginx_argv(prefix: Path, root: Path, port: int) -> list[str]:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, root=root, port=port))
    return [shutil.which("nginx") or "nginx", "-p", str(prefix), "-c", str(conf)]


def available(names: list[str], python: str) -> list[str]:
    """The servers that can run here; the others are skipped with a reason."""
    usable = []
    for name in names:
        if name == "nginx" and not shutil.which("nginx"):
            print("skipping nginx: not installed (apt-get install -y nginx)", file=sys.stderr)
        elif name == "aiohttp" and not _has_module(python, "aiohttp"):
            print("skipping aiohttp: not installed (pip install aiohttp)", file=sys.stderr)
        else:
            usable.append(name)
    return usable


def _has_module(python: str, module: str) -> bool:
    check = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60)
    return check.returncode == 0


# ---- wrk -----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Settings:
    duration: int
    warmup: int
    connections: int
    repeat: int
    server_cpu: int
    wrk_cpu: int
    quiet_timeout: float
    files: list[str]


def wrk(port: int, path: str, seconds: int, s: Settings) -> str:
    argv = ["taskset", "-c", str(s.wrk_cpu), "wrk", "-t1", f"-c{s.connections}"]
    argv += [f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/{path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + WRK_SLACK)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return done.stdout


def parse_wrk(text: str) -> dict:
    def number(pattern: str) -> float:
        match = re.search(pattern, text)
        if match is None:
            raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
        return float(match.group(1))

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests_per_s": number(r"Requests/sec:\s+([\d.]+)"),
        "requests": int(number(r"(\d+) requests in")),
        "p50_ms": latency_ms("50%"),
        "p99_ms": latency_ms("99%"),
        "socket_errors": errors,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def measure(server: Server, path: str, s: Settings) -> dict:
    """One warm-up and one measured wrk run, with CPU shares over the measured one."""
    wrk(server.port, path, s.warmup, s)
    quiet = wait_for_quiet(s.quiet_timeout)
    cores0, server0, wall0 = core_busy_ticks(), process_ticks(server.proc.pid), time.monotonic()
    output = wrk(server.port, path, s.duration, s)
    wall = time.monotonic() - wall0
    cores1, server1 = core_busy_ticks(), process_ticks(server.proc.pid)
    result = parse_wrk(output)
    if result["non_2xx"]:  # e.g. nginx unable to read the root: the figures would be void
        raise RuntimeError(f"{server.name}: {result['non_2xx']} non-2xx responses on /{path}")
    result["mb_per_s"] = result["requests_per_s"] * FILES[path] / 1e6  # body bytes
    share = {
        "server": (server1 - server0) / CLOCK_TICKS / wall,
        "server_core": (cores1[s.server_cpu] - cores0[s.server_cpu]) / CLOCK_TICKS / wall,
        "wrk_core": (cores1[s.wrk_cpu] - cores0[s.wrk_cpu]) / CLOCK_TICKS / wall,
    }
    # the server core's busy time that the server does not explain: something else ran there
    share["other_on_server_core"] = share["server_core"] - share["server"]
    result["cpu"] = {k: round(v, 3) for k, v in share.items()}
    result["noisy"] = share["other_on_server_core"] > NOISY_OTHER
    result["busy_cores_before"] = quiet
    result["server"], result["file"] = server.name, path
    return result


# ---- the benchmark ---------------------------------------------------------------------------


@dataclass
class Report:
    runs: list[dict] = field(default_factory=list)

    def add(self, result: dict, rep: int) -> None:
        result["repetition"] = rep
        self.runs.append(result)
        print(
            f"  rep {rep} {result['file']:>7} {result['server']:>8}: "
            f"{result['requests_per_s']:>10,.0f} req/s {result['mb_per_s']:>9,.1f} MB/s "
            f"server cpu {result['cpu']['server']:.2f}, wrk core {result['cpu']['wrk_core']:.2f}"
            f"{' (noisy)' if result['noisy'] else ''}",
            file=sys.stderr,
            flush=True,
        )


def run_all(servers: list[Server], s: Settings) -> Report:
    report = Report()
    pairs = [(path, server) for path in s.files for server in servers]
    for rep in range(s.repeat):
        order = pairs if rep % 2 == 0 else pairs[::-1]  # alternate: drift hits all alike
        for path, server in order:
            report.add(measure(server, path, s), rep)
    return report


def summarize(runs: list[dict]) -> dict:
    """Medians per (file, server) over the clean runs (all runs when none was clean)."""
    summary: dict = {}
    for path in dict.fromkeys(r["file"] for r in runs):
        for name in dict.fromkeys(r["server"] for r in runs):
            every = [r for r in runs if r["file"] == path and r["server"] == name]
            clean = [r for r in every if not r["noisy"]] or every
            rate = statistics.median(r["requests_per_s"] for r in clean)
            server_cpu = statistics.median(r["cpu"]["server"] for r in clean)
            summary.setdefault(path, {})[name] = {
                "requests_per_s": rate,
                "mb_per_s": rate * FILES[path] / 1e6,
                "requests_per_s_all": [round(r["requests_per_s"]) for r in every],
                "clean_runs": len([r for r in every if not r["noisy"]]),
                "runs": len(every),
                "server_cpu": server_cpu,
                "server_cpu_us_per_request": server_cpu / rate * 1e6 if rate else None,
                "wrk_core": statistics.median(r["cpu"]["wrk_core"] for r in clean),
                "p50_ms": statistics.median(r["p50_ms"] for r in clean),
                "p99_ms": statistics.median(r["p99_ms"] for r in clean),
                "errors": sum(r["socket_errors"] + r["non_2xx"] for r in every),
            }
    return summary


def ratios(summary: dict) -> dict:
    def ratio(path: str, a: str, b: str) -> float | None:
        first, second = summary.get(path, {}).get(a), summary.get(path, {}).get(b)
        if not first or not second:
            return None
        return round(first["requests_per_s"] / second["requests_per_s"], 3)

    return {
        "1k_reactor_vs_nginx": ratio("1k.bin", "reactor", "nginx"),  # goal >= 0.5, aim 1.0
        "1k_reactor_vs_aiohttp": ratio("1k.bin", "reactor", "aiohttp"),  # goal >= 10
        "1m_reactor_vs_nginx": ratio("1m.bin", "reactor", "nginx"),  # goal >= 0.8 (MB/s)
    }


def markdown(summary: dict, goal_ratios: dict) -> str:
    lines = [
        "| file | server | req/s (median) | body MB/s | vs nginx | server CPU | "
        "server µs/req | wrk core | p50 ms | p99 ms | errors | clean runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, by_server in summary.items():
        nginx = by_server.get("nginx", {}).get("requests_per_s")
        for name, row in by_server.items():
            versus = f"{row['requests_per_s'] / nginx:.2f}x" if nginx else "-"
            lines.append(
                f"| {path} | {name} | {row['requests_per_s']:,.0f} | {row['mb_per_s']:,.1f} | "
                f"{versus} | {row['server_cpu']:.2f} | {row['server_cpu_us_per_request']:.1f} | "
                f"{row['wrk_core']:.2f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['errors']} | {row['clean_runs']}/{row['runs']} |"
            )
    lines.append("")
    lines.append(
        "Goals: 1 KiB reactor/nginx {1k_reactor_vs_nginx} (>= 0.5, aim 1.0), "
        "reactor/aiohttp {1k_reactor_vs_aiohttp} (>= 10); "
        "1 MiB reactor/nginx {1m_reactor_vs_nginx} (>= 0.8)".format(**goal_ratios)
    )
    return "\n".join(lines)


def make_root(base: Path) -> Path:
    # nginx's worker drops root privileges (user nobody/www-data): the files must be readable
    # by others, and the temporary directory (mode 0700) traversable.
    base.chmod(0o755)
    root = base / "root"
    root.mkdir(mode=0o755)
    for name, size in FILES.items():
        (root / name).write_bytes(os.urandom(size))
        (root / name).chmod(0o644)
    return root


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="reactor,nginx,aiohttp")
    parser.add_argument("--files", default=",".join(FILES), help="a subset of " + ",".join(FILES))
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured wrk first")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    parser.add_argument("--quiet-timeout", type=float, default=20.0)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--quick", action="store_true", help="1 repetition of 2 s: smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat, args.quiet_timeout = 2, 1, 2.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    settings = Settings(
        args.duration, args.warmup, args.connections, args.repeat,
        args.server_cpu, args.wrk_cpu, args.quiet_timeout, args.files.split(","),
    )  # fmt: skip
    names = available(args.servers.split(","), args.python)
    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
        work = Path(tmp)
        servers = make_servers(names, args.python, make_root(work), work)
        try:
            for server in servers:
                server.start(settings.server_cpu, work)
            report = run_all(servers, settings)
        finally:
            for server in servers:
                server.stop()
    summary = summarize(report.runs)
    goal_ratios = ratios(summary)
    table = markdown(summary, goal_ratios)
    save(args, settings, report, summary, goal_ratios)
    print(table)
    return 0


def save(args, settings: Settings, report: Report, summary: dict, goal_ratios: dict) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("http_static-%Y%m%d-%H%M%S.json")
    path.write_text(
        json.dumps(
            {
                "settings": settings.__dict__,
                "wrk": f"wrk -t1 -c{settings.connections} -d{settings.duration}s --latency",
                "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
                "runs": report.runs,
                "summary": summary,
                "ratios": goal_ratios,
            },
            indent=2,
        )
    )
    print(f"results: {path.relative_to(REPO_DIR)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
