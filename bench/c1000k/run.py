"""One run: start the server and the clients, drive them through the stages while sampling
memory and CPU, and always tear everything down."""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchkit

from .plan import Plan
from .preflight import gib
from .processes import (
    Client,
    _die_with_parent,
    client_command,
    kill_if_alive,
    server_command,
    stop_process,
    websocket_round_trip,
)
from .procfs import (
    listener_pids,
    listening_ports,
    meminfo,
    process_uss,
    slab_caches,
    softirq_threads,
)

SAMPLE_INTERVAL = 0.5  # seconds between memory/progress samples
STARTUP_TIMEOUT = 30.0  # seconds for every worker to listen
STOP_GRACE = 10.0  # seconds after SIGTERM before SIGKILL (server: its --shutdown-timeout + 5)
STAGE_SLACK = 30.0  # seconds the driver waits beyond a client's own stage bound
WARM_UP_TIMEOUT = 10.0  # seconds to wait for the workers' RSS to settle before the baseline
RSS_STABLE_BYTES = 256 * 1024  # summed RSS moving less than this in 0.5 s counts as settled


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
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, cwd=benchkit.REPO_DIR,
        )  # fmt: skip
        self.all_pids.add(self.server.pid)
        self.wait_listening()
        self.worker_pids = benchkit.child_pids(self.server.pid)
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
        pids = (
            benchkit.child_pids(self.server.pid)
            if self.server and self.server.poll() is None
            else []
        )
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
            rss = sum(benchkit.rss_bytes(p) for p in self.server_pids())
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
            "server_rss": sum(benchkit.rss_bytes(p) for p in self.server_pids()),
            "client_rss": sum(benchkit.rss_bytes(c.proc.pid) for c in self.clients),
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
            "server_rss": sum(benchkit.rss_bytes(p) for p in pids),
            "server_uss": sum(process_uss(p) for p in pids),
            "server_processes": len(pids),
            "slab": mem.get("Slab", 0),
            "mem_available": mem.get("MemAvailable", 0),
            "client_rss": sum(benchkit.rss_bytes(c.proc.pid) for c in self.clients),
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
            benchkit.machine_ticks(),
            benchkit.process_ticks(server, reaped_children=True),
            benchkit.process_ticks(clients, reaped_children=True),
            benchkit.process_ticks(softirq_threads(), reaped_children=True),
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
        spent = {k: (m1[k] - m0[k]) / tick for k in benchkit.STAT_FIELDS}
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
        return sorted(pid for pid in self.all_pids if benchkit.alive(pid))


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
