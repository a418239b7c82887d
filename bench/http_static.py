"""Static files over HTTP: our ``--proto http``, nginx and aiohttp side by side, loaded by wrk.

``wrk -t1 -c100 -d10s`` with keep-alive on a 1 KiB and a 1 MiB file. Each server runs pinned
to CPU 0 (``taskset -c 0``: its threads and children inherit the mask), wrk to CPU 1, so
neither shares a core with the other and a server's rate is not the client's. The servers
start once and stay up; every repetition runs each (file, server) pair once, in an order that
alternates between repetitions so drift hits all alike; medians are reported. Before each
measured run a short unmeasured wrk run warms the server (page cache, caches, connection
set-up), and the script waits (bounded) for the shared machine to go quiet.

- nginx: one process (``master_process off``, ``worker_processes 1``: the process that serves
  is the one pinned and measured), ``sendfile on``, ``tcp_nopush on``, ``access_log off``, its
  own temporary prefix and config, a loopback port. Two variants: ``nginx`` with
  ``open_file_cache`` off (every request opens, fstats and closes the file, as ours looks its
  file up each time) and ``nginx-ofc`` with it on (open descriptors and stat results cached).
- aiohttp: ``web.static`` (``add_static``) on the same root, access log off.
- ours: ``python -m reactor --proto http --quiet`` (one process, no access log).

Reported per (file, server): requests/s and, next to it, the server's CPU time per request
(its process CPU share over the rate: the figure that stays fair when a client caps the
rate); wrk's own CPU share and its core's busy share, flagged when the core is more than 90%
busy (then wrk, not the server, may have set the rate); the server's cores and processes,
recorded as proof of the pinning.

Every process is tracked by PID and stopped in a ``finally`` (SIGTERM, then SIGKILL after a
deadline); every wait is bounded. Results go to bench/results/http_static-<time>.json and a
markdown table on stdout.

    .venv/bin/python bench/http_static.py            # 3 x 10 s per (file, server): ~6 min
    .venv/bin/python bench/http_static.py --quick    # 1 x 2 s: a smoke run

Needs ``wrk`` and ``nginx`` on PATH (apt-get install -y wrk nginx) and aiohttp in the venv
(pip install aiohttp); a missing server is skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchkit

FILES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}
SERVERS = ("reactor", "nginx", "nginx-ofc", "aiohttp")
WRK_SLACK = 20.0  # s beyond wrk's own duration before it is killed
QUIET_THRESHOLD = 0.15  # cores busy on the idle machine: above this, something else runs
NOISY_OTHER = 0.15  # share of a core used by neither the server nor wrk: a noisy run
WRK_LIMIT = 0.9  # a wrk core busier than this may cap the rate: flagged

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    {open_file_cache}
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
OPEN_FILE_CACHE = {
    "nginx": "open_file_cache off;",
    "nginx-ofc": "open_file_cache max=1024 inactive=60s; open_file_cache_valid 60s;",
}

AIOHTTP_SERVER = """\
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""


# ---- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen | None = None
    cores: list[int] = field(default_factory=list)  # where it may run: the pinning's proof
    processes: int = 0

    def start(self, cpu: int, log_dir: Path) -> None:
        with open(log_dir / f"{self.name}.log", "wb") as log:
            self.proc = subprocess.Popen(
                benchkit.pinned(self.argv, cpu),
                cwd=benchkit.REPO_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        benchkit.wait_accepting("127.0.0.1", self.port, self.proc, self.name)
        pids = benchkit.process_tree(self.proc.pid)
        self.cores, self.processes = benchkit.affinity(pids), len(pids)

    def cpu_ticks(self) -> int:
        return benchkit.process_ticks(benchkit.process_tree(self.proc.pid))

    def stop(self) -> int | None:
        return benchkit.stop_process(self.proc) if self.proc else None


def make_servers(names: list[str], python: str, root: Path, work: Path) -> list[Server]:
    servers = []
    for name in names:
        port = benchkit.free_port()
        if name == "reactor":
            argv = [python, "-m", "reactor", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--proto", "http", "--root", str(root), "--quiet"]
        elif name in OPEN_FILE_CACHE:
            argv = nginx_argv(work / name, root, port, OPEN_FILE_CACHE[name])
        elif name == "aiohttp":
            argv = [python, "-c", AIOHTTP_SERVER, str(root), str(port)]
        else:
            raise ValueError(name)
        servers.append(Server(name, argv, port))
    return servers


def nginx_argv(prefix: Path, root: Path, port: int, open_file_cache: str) -> list[str]:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    text = NGINX_CONF.format(prefix=prefix, root=root, port=port, open_file_cache=open_file_cache)
    conf.write_text(text)
    return [shutil.which("nginx") or "nginx", "-p", str(prefix), "-c", str(conf)]


def available(names: list[str], python: str) -> list[str]:
    """The servers that can run here; the others are skipped with a reason."""
    usable = []
    for name in names:
        if name in OPEN_FILE_CACHE and not shutil.which("nginx"):
            print(f"skipping {name}: not installed (apt-get install -y nginx)", file=sys.stderr)
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


def wrk(port: int, path: str, seconds: int, s: Settings) -> tuple[str, float]:
    """wrk's output and the CPU seconds it used (user + system, from its rusage once reaped)."""
    argv = ["wrk", "-t1", f"-c{s.connections}", f"-d{seconds}s", "--latency"]
    argv = benchkit.pinned([*argv, f"http://127.0.0.1:{port}/{path}"], s.wrk_cpu)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + WRK_SLACK)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, cpu


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


def core_busy_seconds() -> dict[int, float]:
    return {n: benchkit.busy(t) / benchkit.CLOCK_TICKS for n, t in benchkit.core_ticks().items()}


def measure(server: Server, path: str, s: Settings) -> dict:
    """One warm-up and one measured wrk run, with CPU shares over the measured one."""
    wrk(server.port, path, s.warmup, s)
    quiet = benchkit.wait_for_quiet(s.quiet_timeout, QUIET_THRESHOLD)
    cores0, server0, wall0 = core_busy_seconds(), server.cpu_ticks(), time.monotonic()
    output, wrk_cpu = wrk(server.port, path, s.duration, s)
    wall = time.monotonic() - wall0
    cores1, server1 = core_busy_seconds(), server.cpu_ticks()
    result = parse_wrk(output)
    if result["non_2xx"]:  # e.g. nginx unable to read the root: the figures would be void
        raise RuntimeError(f"{server.name}: {result['non_2xx']} non-2xx responses on /{path}")
    result["mb_per_s"] = result["requests_per_s"] * FILES[path] / 1e6  # body bytes
    share = {
        "server": (server1 - server0) / benchkit.CLOCK_TICKS / wall,
        "server_core": (cores1[s.server_cpu] - cores0[s.server_cpu]) / wall,
        "wrk": wrk_cpu / wall,
        "wrk_core": (cores1[s.wrk_cpu] - cores0[s.wrk_cpu]) / wall,
    }
    # the server core's busy time that the server does not explain: something else ran there
    share["other_on_server_core"] = share["server_core"] - share["server"]
    result["cpu"] = {k: round(v, 3) for k, v in share.items()}
    result["wrk_saturated"] = share["wrk_core"] > WRK_LIMIT
    result["noisy"] = share["other_on_server_core"] > NOISY_OTHER
    result["quiet"] = quiet
    result["server"], result["file"] = server.name, path
    result["server_cores"], result["server_processes"] = server.cores, server.processes
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
            f"{' (wrk core saturated)' if result['wrk_saturated'] else ''}"
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

            def median(key: str, runs: list[dict] = clean) -> float:
                return statistics.median(r["cpu"][key] for r in runs)

            rate = statistics.median(r["requests_per_s"] for r in clean)
            summary.setdefault(path, {})[name] = {
                "requests_per_s": rate,
                "server_cpu_us_per_request": median("server") / rate * 1e6 if rate else None,
                "mb_per_s": rate * FILES[path] / 1e6,
                "requests_per_s_all": [round(r["requests_per_s"]) for r in every],
                "clean_runs": len([r for r in every if not r["noisy"]]),
                "runs": len(every),
                "server_cpu": median("server"),
                "wrk_cpu": median("wrk"),
                "wrk_core": median("wrk_core"),
                "wrk_saturated_runs": sum(r["wrk_saturated"] for r in clean),
                "p50_ms": statistics.median(r["p50_ms"] for r in clean),
                "p99_ms": statistics.median(r["p99_ms"] for r in clean),
                "errors": sum(r["socket_errors"] + r["non_2xx"] for r in every),
                "server_cores": every[0]["server_cores"],
                "server_processes": every[0]["server_processes"],
            }
    return summary


def ratios(summary: dict) -> dict:
    def ratio(path: str, a: str, b: str) -> float | None:
        first, second = summary.get(path, {}).get(a), summary.get(path, {}).get(b)
        if not first or not second:
            return None
        return round(first["requests_per_s"] / second["requests_per_s"], 3)

    return {
        "1k_reactor_vs_nginx": ratio("1k.bin", "reactor", "nginx"),
        "1k_reactor_vs_nginx_ofc": ratio("1k.bin", "reactor", "nginx-ofc"),
        "1k_reactor_vs_aiohttp": ratio("1k.bin", "reactor", "aiohttp"),
        "1m_reactor_vs_nginx": ratio("1m.bin", "reactor", "nginx"),
        "1m_reactor_vs_nginx_ofc": ratio("1m.bin", "reactor", "nginx-ofc"),
    }


def markdown(summary: dict, goal_ratios: dict) -> str:
    lines = [
        "| file | server | req/s (median) | server CPU µs/req | body MB/s | vs nginx "
        "| vs nginx-ofc | server CPU | wrk process / core | p50 ms | p99 ms | errors "
        "| server cores / processes | clean runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for path, by_server in summary.items():
        for name, row in by_server.items():
            lines.append(
                f"| {path} | {name} | {row['requests_per_s']:,.0f} "
                f"| {row['server_cpu_us_per_request']:.2f} | {row['mb_per_s']:,.1f} "
                f"| {versus(row, by_server.get('nginx'))} "
                f"| {versus(row, by_server.get('nginx-ofc'))} | {row['server_cpu']:.2f} "
                f"| {wrk_cell(row)} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {row['errors']} | {row['server_cores']} / {row['server_processes']} "
                f"| {row['clean_runs']}/{row['runs']} |"
            )
    lines.append("")
    lines.append(
        "reactor / nginx: 1 KiB {1k_reactor_vs_nginx} (open_file_cache off), "
        "{1k_reactor_vs_nginx_ofc} (on); 1 MiB {1m_reactor_vs_nginx} (off), "
        "{1m_reactor_vs_nginx_ofc} (on). reactor / aiohttp, 1 KiB: "
        "{1k_reactor_vs_aiohttp}".format(**goal_ratios)
    )
    return "\n".join(lines)


def versus(row: dict, reference: dict | None) -> str:
    return f"{row['requests_per_s'] / reference['requests_per_s']:.2f}x" if reference else "-"


def wrk_cell(row: dict) -> str:
    """wrk's shares, flagged when its core was so busy that wrk may have set the rate."""
    text = f"{row['wrk_cpu']:.0%} / {row['wrk_core']:.0%}"
    saturated = row["wrk_saturated_runs"]
    return f"{text} (over {WRK_LIMIT:.0%} in {saturated} runs)" if saturated else text


def make_root(base: Path) -> Path:
    # Readable by others, and the temporary directory (mode 0700) traversable: nginx started
    # as root serves as its configured user.
    base.chmod(0o755)
    root = base / "root"
    root.mkdir(mode=0o755)
    for name, size in FILES.items():
        (root / name).write_bytes(os.urandom(size))
        (root / name).chmod(0o644)
    return root


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--servers", default=",".join(SERVERS), help="a subset of " + ",".join(SERVERS))
    add("--files", default=",".join(FILES), help="a subset of " + ",".join(FILES))
    add("--duration", type=int, default=10, help="seconds per measured run")
    add("--warmup", type=int, default=1, help="seconds of unmeasured wrk first")
    add("--connections", type=int, default=100)
    add("--repeat", type=int, default=3)
    benchkit.add_run_options(parser, "wrk", quiet_timeout=20.0)
    add("--quick", action="store_true", help="1 repetition of 2 s: smoke run")
    args = parser.parse_args(argv)
    unknown = set(args.servers.split(",")) - set(SERVERS)
    if unknown:
        parser.error(f"unknown --servers {sorted(unknown)}; known: {', '.join(SERVERS)}")
    if args.quick:
        args.duration, args.repeat, args.quiet_timeout = 2, 1, min(args.quiet_timeout, 2.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    benchkit.stop_on_sigterm()
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
    save(args, settings, report, summary, goal_ratios, table)
    print(table)
    return 1 if any(row["errors"] for rows in summary.values() for row in rows.values()) else 0


def save(args, settings: Settings, report: Report, summary: dict, goal_ratios: dict, table: str):
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / time.strftime("http_static-%Y%m%d-%H%M%S.json")
    record = {
        "command": sys.argv,
        "settings": settings.__dict__,
        "wrk": f"wrk -t1 -c{settings.connections} -d{settings.duration}s --latency",
        "machine": benchkit.machine_note(),
        "runs": report.runs,
        "summary": summary,
        "ratios": goal_ratios,
        "table": table,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
