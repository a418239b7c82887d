"""Raw TCP echo benchmark: our ``--proto echo`` server and the C reference server, one run.

Each server runs pinned to one core (``taskset -c 0``), the C load generator to the other
(``taskset -c 1``); repetitions alternate the servers so drift hits both alike, and medians
are reported. While the load generator runs, ``/proc/<pid>/stat`` of both processes and
``/proc/stat`` are sampled, so the report shows how busy the server, the load generator and
everything else (other programs, interrupts) were: the C server's much higher rate at a
load-generator share below one core is the evidence that the load generator is not the limit.

Every process started here is tracked by PID and stopped in a ``finally`` (SIGTERM, then
SIGKILL after a deadline); every wait is bounded. Results go to bench/results/echo-<time>.json
and a markdown table on stdout.

    .venv/bin/python bench/echo.py            # 3 x 10 s per server
    .venv/bin/python bench/echo.py --quick    # one short repetition: a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import benchkit

LOADGEN = benchkit.C_DIR / "loadgen"
C_SERVER = benchkit.C_DIR / "echo_server"
SAMPLE_INTERVAL = 0.1  # s between /proc samples
SLACK = 15.0  # s beyond the load generator's own bounds before it is killed
NOISY_OTHER = 0.15  # share of a core used by neither process during a run: a noisy run
INTERVAL_NOISY = 0.3  # the same within one sampling interval (tick accounting: +-0.1 jitter)
NOISY_FRACTION = 0.1  # a run with more such intervals than this is noisy too
SATURATED = 0.95  # a pinned core this busy is the limit of the run
LOADGEN_LIMIT = 0.9  # a load generator core busier than this may cap the rate: flagged


# ---- /proc sampling -----------------------------------------------------------------------
# Process shares come from /proc/<pid>/stat; loopback TCP spends about a third of each core in
# softirq, run inline in the sending process and charged to it. The per-core lines of
# /proc/stat are sampled too: with the server and the load generator pinned to one core each,
# a core's busy share is "that process plus whatever else ran there", and busy time the two
# processes do not explain is interference (other programs on this shared machine, steal).


@dataclass
class CpuSample:
    when: float
    server: float | None
    loadgen: float | None
    cores: dict[int, dict[str, int]]


def take_sample(server_pid: int | None, loadgen_pid: int) -> CpuSample:
    return CpuSample(
        time.monotonic(),
        benchkit.process_cpu_seconds(server_pid) if server_pid else None,
        benchkit.process_cpu_seconds(loadgen_pid),
        benchkit.core_ticks(),
    )


def cpu_shares(first: CpuSample, last: CpuSample, server_core: int, loadgen_core: int) -> dict:
    """Shares of one core between two samples.

    ``*_core``: busy share of the pinned core; ``softirq``: of both cores' busy time, the part
    spent in softirq (already inside the process shares when it ran in process context);
    ``other``: busy time on the two cores that neither process explains.
    """
    wall = last.when - first.when
    if wall <= 0:
        return {"window_s": 0.0}

    def delta(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) / wall, 3)

    def core(n: int, field: str | None = None) -> float:
        a, b = first.cores[n], last.cores[n]
        ticks = (benchkit.busy(a), benchkit.busy(b)) if field is None else (a[field], b[field])
        return delta(*(t / benchkit.CLOCK_TICKS for t in ticks))

    shares = {"server": delta(first.server, last.server)}
    shares["loadgen"] = delta(first.loadgen, last.loadgen)
    shares["server_core"] = core(server_core)
    shares["loadgen_core"] = core(loadgen_core)
    shares["softirq"] = round(core(server_core, "softirq") + core(loadgen_core, "softirq"), 3)
    processes = (shares["server"] or 0) + (shares["loadgen"] or 0)
    shares["other"] = round(shares["server_core"] + shares["loadgen_core"] - processes, 3)
    shares["window_s"] = round(wall, 3)
    return shares


# ---- one measurement ----------------------------------------------------------------------


@dataclass
class Settings:
    mode: str
    host: str
    connections: int
    window: int
    size: int
    duration: float
    warmup: float
    grace: float
    server_cpu: int
    loadgen_cpu: int
    quiet_timeout: float

    def loadgen_argv(self, port: int) -> list[str]:
        return [
            str(LOADGEN), self.mode, "--host", self.host, "--port", str(port),
            "--connections", str(self.connections), "--window", str(self.window),
            "--size", str(self.size), "--duration", str(self.duration),
            "--warmup", str(self.warmup), "--grace", str(self.grace),
        ]  # fmt: skip

    def loadgen_timeout(self) -> float:
        connect_timeout = 5.0  # the load generator's default bound on connecting
        return connect_timeout + self.warmup + self.duration + self.grace + SLACK


def interference(samples: list[CpuSample], server_core: int, loadgen_core: int) -> float:
    """Fraction of sampling intervals in which something else took a sizable share of the
    two cores: an average over the run hides a burst that spoiled part of it."""
    pairs = list(zip(samples, samples[1:], strict=False))
    if not pairs:
        return 0.0
    shares = [cpu_shares(a, b, server_core, loadgen_core).get("other") for a, b in pairs]
    return round(sum(1 for o in shares if (o or 0) > INTERVAL_NOISY) / len(pairs), 3)


def run_loadgen(settings: Settings, port: int, server_pid: int | None) -> dict:
    """Runs the pinned load generator once, sampling CPU use until it exits."""
    argv = benchkit.pinned(settings.loadgen_argv(port), settings.loadgen_cpu)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + settings.loadgen_timeout()
    try:
        samples = [take_sample(server_pid, proc.pid)]
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(SAMPLE_INTERVAL)
            sample = take_sample(server_pid, proc.pid)
            if sample.loadgen is not None:
                samples.append(sample)  # taken while the load generator lived
        timed_out = proc.poll() is None
    finally:
        status = benchkit.stop_process(proc, timeout=2.0)
    stdout, stderr = proc.communicate()
    if timed_out or not stdout.strip():
        raise RuntimeError(f"loadgen failed (status {status}): {stderr.strip()[-500:]}")
    result = json.loads(stdout)
    cores = settings.server_cpu, settings.loadgen_cpu
    result["cpu_share"] = cpu_shares(samples[0], samples[-1], *cores)
    result["cpu_share"]["interfered"] = interference(samples, *cores)
    result["noisy"] = (
        result["cpu_share"].get("other", 0) > NOISY_OTHER
        or result["cpu_share"]["interfered"] > NOISY_FRACTION
    )
    return result


def measure(name: str, server_argv: list[str] | None, target_port: int | None, s: Settings) -> dict:
    """One repetition against one server: start it (unless external), load it, stop it."""
    quiet = benchkit.wait_for_quiet(s.quiet_timeout)
    server = benchkit.Server(name, server_argv, s.server_cpu) if server_argv else None
    try:
        port = server.wait_ready() if server else target_port
        pids = benchkit.process_tree(server.proc.pid) if server else []
        cores = benchkit.affinity(pids)  # taken before the load: the proof of the pinning
        result = run_loadgen(s, port, server.proc.pid if server else None)
    finally:
        status = server.stop() if server else None
    result["server"] = name
    result["server_cores"] = cores
    result["loadgen_saturated"] = loadgen_saturated(s.mode, result["cpu_share"])
    result["quiet"] = quiet
    result["server_exit_status"] = status
    result["server_log_tail"] = list(server.log)[-10:] if server else []
    return result


# ---- the benchmark ------------------------------------------------------------------------


def build_tools() -> None:
    subprocess.run(["make", "-s", "-C", str(benchkit.C_DIR)], check=True, timeout=120)


def server_commands(python: str, host: str) -> dict[str, list[str]]:
    return {
        "ours": [python, "-m", "reactor", "--host", host, "--port", "0", "--proto", "echo"],
        "c": [str(C_SERVER), host, "0"],
    }


def parse_target(text: str) -> tuple[str, str, int]:
    name, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not name or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    return name, host.strip("[]"), int(port)


def run_all(args: argparse.Namespace, settings: Settings) -> list[dict]:
    commands = server_commands(args.python, settings.host)
    plan: list[tuple[str, list[str] | None, int | None]] = [
        (name, commands[name], None) for name in args.servers
    ]
    plan += [(name, None, port) for name, _host, port in args.target]
    runs = []
    for rep in range(args.repeat):
        order = plan if rep % 2 == 0 else plan[::-1]  # alternate, so drift hits all alike
        for name, argv, port in order:
            result = measure(name, argv, port, settings)
            result["repetition"] = rep
            runs.append(result)
            print(f"  rep {rep} {name:>6}: {result['ops_per_s']:>12,.0f} {result['unit']}/s, "
                  f"errors {result['errors_total']}", file=sys.stderr, flush=True)  # fmt: skip
    return runs


def busy_polling(mode: str) -> bool:
    """The one-at-a-time modes' client spins on its socket: its core is 100% busy by design."""
    return mode.endswith("-rtt")


def loadgen_saturated(mode: str, shares: dict) -> bool:
    """The load generator's core was so busy that it, not the server, may set the rate."""
    return not busy_polling(mode) and (shares.get("loadgen_core") or 0) > LOADGEN_LIMIT


def bound_by(mode: str, server_core: float | None, loadgen_core: float | None) -> str:
    """Which side limited a run, judged by how busy each pinned core was."""
    if busy_polling(mode):
        return "latency"
    if loadgen_core is not None and loadgen_core > LOADGEN_LIMIT:
        return "loadgen" if not server_core or server_core < SATURATED else "both"
    if server_core is not None and server_core >= SATURATED:
        return "server"
    return "neither"


def median_interval_rate(runs: list[dict]) -> float | None:
    """Median rate over every timeline interval of these runs: robust to short interference."""
    rates = [n * 1000 / r["timeline_ms"] for r in runs for n in r["timeline"]]
    return median(rates)


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Medians per server over the clean runs (all runs when none was clean)."""
    summary: dict[str, dict] = {}
    for name in dict.fromkeys(r["server"] for r in runs):
        everything = [r for r in runs if r["server"] == name]
        clean = [r for r in everything if not r["noisy"]]
        mine = clean or everything

        def share(key: str, runs: list[dict] = mine) -> float | None:
            return median([r["cpu_share"].get(key) for r in runs])

        rate = median([r["ops_per_s"] for r in mine])
        server_cpu = share("server")
        server_core, loadgen_core = share("server_core"), share("loadgen_core")
        summary[name] = {
            "repetitions": len(everything),
            "clean_repetitions": len(clean),
            "unit": mine[0]["unit"],
            "ops_per_s": rate,
            "ops_per_s_all": [round(r["ops_per_s"]) for r in everything],
            "p50_us": median([r["latency_us"]["p50"] for r in mine]),
            "p99_us": median([r["latency_us"]["p99"] for r in mine]),
            "max_us": max(r["latency_us"]["max"] for r in mine),
            "errors": sum(r["errors_total"] for r in everything),
            "slowest_interval_per_s": min(r["rate_min_per_s"] for r in mine),
            "median_interval_per_s": median_interval_rate(mine),
            "server_process_cpu": server_cpu,
            "server_cpu_us_per_op": per_op_us(server_cpu, rate),
            "server_core_busy": server_core,
            "server_core_us_per_op": per_op_us(server_core, rate),
            "loadgen_process_cpu": share("loadgen"),
            "loadgen_process_cpu_self": median([r["cpu"]["share"] for r in mine]),
            "loadgen_core_busy": loadgen_core,
            "softirq": share("softirq"),
            "other": share("other"),
            "loadgen_saturated_runs": sum(bool(r.get("loadgen_saturated")) for r in mine),
            "bound_by": bound_by(mine[0]["mode"], server_core, loadgen_core),
        }
    return summary


def per_op_us(cpu_share: float | None, rate: float | None) -> float | None:
    """CPU time per operation in µs, from a share of one core and the operations per second."""
    return cpu_share / rate * 1e6 if cpu_share and rate else None


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(summary: dict[str, dict]) -> str:
    reference = summary.get("c", {}).get("ops_per_s")
    unit = next(iter(summary.values()))["unit"].replace("_", " ")
    lines = [
        f"| server | {unit}/s (median) | server CPU µs/op | vs C | median 100 ms | p50 µs "
        "| p99 µs | errors | slowest 100 ms "
        "| server process / core | server core µs/op | loadgen process / core | other "
        "| bound by | clean runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, s in summary.items():
        ratio = s["ops_per_s"] / reference if reference else None
        lines.append(
            f"| {name} | {s['ops_per_s']:,.0f} | {fmt(s['server_cpu_us_per_op'], '.2f')} "
            f"| {fmt(ratio, '.2f')} | {fmt(s['median_interval_per_s'], ',.0f')}/s "
            f"| {fmt(s['p50_us'], '.0f')} | {fmt(s['p99_us'], '.0f')} | {s['errors']} "
            f"| {s['slowest_interval_per_s']:,.0f}/s "
            f"| {fmt(s['server_process_cpu'], '.0%')} / {fmt(s['server_core_busy'], '.0%')} "
            f"| {fmt(s['server_core_us_per_op'], '.3f')} | {loadgen_cell(s)} "
            f"| {fmt(s['other'], '.0%')} | {s['bound_by']} "
            f"| {s['clean_repetitions']}/{s['repetitions']} |"
        )
    return "\n".join(lines)


def loadgen_cell(s: dict) -> str:
    """The load generator's shares, flagged when its core was near saturation."""
    text = f"{fmt(s['loadgen_process_cpu'], '.0%')} / {fmt(s['loadgen_core_busy'], '.0%')}"
    saturated = s.get("loadgen_saturated_runs", 0)
    limit = f"{LOADGEN_LIMIT:.0%}"
    return f"{text} (over {limit} in {saturated} runs)" if saturated else text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--quick", action="store_true", help="smoke run: 1 repetition of 1 s, no warmup")
    add("--duration", type=float, default=10.0, help="measured seconds per run")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    add("--repeat", type=int, default=3, help="repetitions per server (alternating order)")
    add("--mode", choices=["tcp-echo", "tcp-rtt"], default="tcp-echo",
        help="tcp-rtt: one message at a time, busy-polling client (window 1)")  # fmt: skip
    add("--connections", type=int, default=None, help="default: 100 (tcp-rtt: 1)")
    add("--window", type=int, default=None, help="messages in flight per connection (16)")
    add("--size", type=int, default=64, help="message bytes")
    add("--grace", type=float, default=2.0, help="bound on draining and closing (s)")
    add("--host", default="127.0.0.1")
    add("--servers", default="ours,c", help="comma list of started servers: ours, c")
    add("--target", type=parse_target, action="append", default=[],
        help="also load an already running server: NAME=HOST:PORT (repeatable)")  # fmt: skip
    add("--no-build", action="store_true", help="skip `make -C bench/c`")
    benchkit.add_run_options(p, "loadgen", quiet_timeout=30.0)
    args = p.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = set(args.servers) - {"ours", "c"}
    if unknown:
        p.error(f"unknown --servers {sorted(unknown)}; use ours, c or --target")
    rtt = args.mode == "tcp-rtt"
    args.connections = args.connections or (1 if rtt else 100)
    args.window = args.window or (1 if rtt else 16)
    if args.quick:
        args.duration, args.warmup, args.repeat = 1.0, 0.0, 1
        args.quiet_timeout = min(args.quiet_timeout, 2.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        args.mode, args.host, args.connections, args.window, args.size, args.duration,
        args.warmup, args.grace, args.server_cpu, args.loadgen_cpu, args.quiet_timeout,
    )  # fmt: skip
    if not args.no_build:
        build_tools()
    machine = benchkit.machine_note()
    runs = run_all(args, settings)
    summary = summarize(runs)
    table = markdown_table(summary)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"echo-{time.strftime('%Y%m%d-%H%M%S')}.json"
    record = {"benchmark": settings.mode, "command": sys.argv, "settings": settings.__dict__,
              "machine": machine, "summary": summary, "table": table, "runs": runs}  # fmt: skip
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(table)
    print(f"\nresults: {out}")
    return 1 if any(s["errors"] for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
