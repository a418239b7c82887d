"""Topic fan-out benchmark: deliveries per second and publish -> receipt latency.

One topic with N subscribers (``--subscribers``, default 1000 and 10000), one
publisher keeping ``--window`` publishes (16) outstanding, 64-byte text
messages. A publish is outstanding until every subscriber has it. Every
delivery is checked: each subscriber must get every publish exactly once, in
order, byte for byte (sequence number, send time, padding); the run fails on
the first loss, duplicate, reordering or corruption.

Configurations (``--configs``):
- ``one``: one worker (the registry alone);
- ``workers2``: ``--workers 2 --broker local`` (subscribers spread by
  SO_REUSEPORT: about half get each publish through the local broker);
- ``redis``: ``--workers 2 --broker redis://`` to a redis-server started here
  (its own port and temp dir, stopped by PID): about half through Redis;
- ``socketify``: uWebSockets (``ws.subscribe`` / ``app.publish``,
  bench/peers/socketify_fanout.py) in the same run, for comparison (needs the
  bench extra).

The server runs pinned to one core (``taskset -c 0``, all its workers; Redis
too), this load generator to the other (``--loadgen-cpu``). The load
generator's CPU share is reported: below ~0.9 of its core it was not the limit.
Results: bench/results/fanout-<time>.json and a table on stdout.

    .venv/bin/python bench/fanout.py
    .venv/bin/python bench/fanout.py --subscribers 1000 --configs one --duration 3
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path

import benchkit

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LISTENING = benchkit.LISTENING
SIZE = 64  # bytes per message
HEADER = bytes((0x81, SIZE))  # the server's unmasked text frame header for 64 bytes
FRAME = len(HEADER) + SIZE
MASK = b"\0\0\0\0"  # the publisher's masking key: a valid key that leaves the payload as is
START_TIMEOUT = 20.0  # s for the server (every worker) to listen
CONNECT_TIMEOUT = 60.0  # s for every subscriber's upgrade
GRACE = 10.0  # s for outstanding publishes to arrive after the measured window


def payload(seq: int, sent_ns: int) -> bytes:
    return b"%016d%020d" % (seq, sent_ns) + b"." * (SIZE - 36)


PAD = b"." * (SIZE - 36)


class Failure(Exception):
    """A delivery was lost, repeated, reordered or corrupted."""


# ---- processes ------------------------------------------------------------------------------


class Server:
    def __init__(self, argv: list[str], cpu: int, workers: int, env: dict) -> None:
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO_DIR,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.port = 0
        self.workers = workers
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines[-20:]))

    def _read(self) -> None:
        listening = 0
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            match = LISTENING.search(line)
            if match:
                listening += 1
                self.port = int(match.group(2))
                if listening == self.workers:
                    self.ready.set()

    def pids(self) -> list[int]:
        return benchkit.process_tree(self.proc.pid)  # the supervisor and its workers

    def cpu_seconds(self) -> float:
        return sum(benchkit.process_cpu_seconds(pid) or 0.0 for pid in self.pids())

    def stop(self) -> None:
        benchkit.stop_process(self.proc)


@contextlib.contextmanager
def redis_server(cpu: int):
    with benchkit.redis_server(cpu) as (port, proc):
        yield f"redis://127.0.0.1:{port}", proc


# ---- the load generator -----------------------------------------------------------------------


def upgrade_request(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


def open_upgraded(port: int, path: str, count: int) -> list[socket.socket]:
    """``count`` upgraded connections: requests sent in waves, 101s read back."""
    socks: list[socket.socket] = []
    deadline = time.monotonic() + CONNECT_TIMEOUT
    for start in range(0, count, 500):
        wave = []
        for _ in range(min(500, count - start)):
            sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stalls
            sock.sendall(upgrade_request(path))
            wave.append(sock)
        for sock in wave:
            head = b""
            while b"\r\n\r\n" not in head:
                if time.monotonic() > deadline:
                    raise RuntimeError("upgrades too slow")
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("connection closed during the upgrade")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101") or not head.endswith(b"\r\n\r\n"):
                raise RuntimeError(f"unexpected upgrade answer {head[:80]!r}")
            sock.setblocking(False)
        socks.extend(wave)
    return socks


class Run:
    """The publisher and the subscribers of one measurement.

    Checking is cheap so that the load generator is not the limit: every
    subscriber must get exactly the server frames of the publishes in order, so
    the bytes of one read are compared at once with the frames expected next
    (one memcmp); latency is the receipt time minus each publish's send time.
    A publish is complete once every subscriber is past it (the minimum of their
    positions, taken once per poll batch)."""

    def __init__(self, port: int, subscribers: int, window: int) -> None:
        self.subs = open_upgraded(port, "/sub", subscribers)
        (self.pub,) = open_upgraded(port, "/pub", 1)
        self.window = window
        self.next_seq = [0] * subscribers  # per subscriber: the publish it must get next
        self.rest = [b""] * subscribers  # per subscriber: a frame cut by the end of a read
        self.frames: list[bytes] = []  # seq -> the server frame every subscriber must get
        self.sent_ns: list[int] = []  # seq -> when it was published
        self.published = 0
        self.completed = 0

    def publish(self) -> None:
        frames = []
        now = time.monotonic_ns()
        while self.published - self.completed < self.window:
            body = payload(self.published, now)
            self.frames.append(HEADER + body)
            self.sent_ns.append(now)
            frames.append(bytes((0x81, 0x80 | SIZE)) + MASK + body)
            self.published += 1
        if frames:
            self.pub.sendall(b"".join(frames))

    def receive(self, index: int, latencies: array | None) -> int:
        sock = self.subs[index]
        try:
            data = sock.recv(1 << 18)
        except BlockingIOError:
            return 0
        if not data:
            raise Failure(f"subscriber {index} was closed")
        if self.rest[index]:
            data = self.rest[index] + data
        count = len(data) // FRAME
        end = count * FRAME
        self.rest[index] = data[end:]
        if not count:
            return 0
        first = self.next_seq[index]
        if first + count > self.published:
            raise Failure(f"subscriber {index}: more messages than publishes")
        if data[:end] != b"".join(self.frames[first : first + count]):
            raise Failure(f"subscriber {index}: not the publishes {first}..{first + count - 1}")
        self.next_seq[index] = first + count
        if latencies is not None:
            now = time.monotonic_ns()
            latencies.extend([(now - sent) // 1000 for sent in self.sent_ns[first : first + count]])
        return count

    def loop(self, until: float, latencies: array | None, publishing: bool = True) -> int:
        poller = select.epoll()
        index_of = {sock.fileno(): i for i, sock in enumerate(self.subs)}
        for fd in index_of:
            poller.register(fd, select.EPOLLIN)
        deliveries = 0
        try:
            while time.monotonic() < until:
                if publishing:
                    self.publish()
                elif self.completed == self.published:
                    break
                events = poller.poll(0.05, 4096)
                for fd, _ in events:
                    deliveries += self.receive(index_of[fd], latencies)
                if events:
                    self.completed = min(self.next_seq)
        finally:
            poller.close()
        return deliveries

    def close(self) -> None:
        for sock in [*self.subs, self.pub]:
            sock.close()


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy, total) jiffies from /proc/stat."""
    cores = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [float(v) for v in fields[:8]]
                idle = values[3] + values[4]  # idle + iowait
                cores[int(name[3:])] = (sum(values) - idle, sum(values))
    return cores


def core_busy(before: dict, after: dict, core: int) -> float | None:
    if core not in before or core not in after:
        return None
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return round(busy / total, 3) if total else None


def percentile(values: array, share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


def measure(config: str, subscribers: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR))
    with contextlib.ExitStack() as stack:
        workers, broker = 1, "local"
        if config in ("workers2", "redis"):
            workers = 2
        if config == "redis":
            broker, _ = stack.enter_context(redis_server(args.server_cpu))
        if config == "socketify":
            argv = [args.python, str(BENCH_DIR / "peers" / "socketify_fanout.py")]
            argv += ["--host", "127.0.0.1", "--port", "0"]
        else:
            argv = [args.python, "-m", "reactor", "--proto", "ws", "--host", "127.0.0.1"]
            argv += ["--port", "0", "--app", "fanout_app:app", "--workers", str(workers)]
            argv += ["--broker", broker, "--idle-timeout", "0", "--ping-interval", "0"]
        server = Server(argv, args.server_cpu, workers, env)
        stack.callback(server.stop)
        run = Run(server.port, subscribers, args.window)
        stack.callback(run.close)
        run.loop(time.monotonic() + args.warmup, None)
        latencies = array("q")
        cores0 = core_times()
        cpu0, server_cpu0, t0 = time.process_time(), server.cpu_seconds(), time.monotonic()
        deliveries = run.loop(t0 + args.duration, latencies)
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        server_cpu = server.cpu_seconds() - server_cpu0
        cores1 = core_times()
        run.loop(time.monotonic() + GRACE, None, publishing=False)  # the rest arrives
        lost = run.published - run.completed
        if lost or any(seq != run.published for seq in run.next_seq):
            raise Failure(f"{lost} publishes did not reach every subscriber")
    return {
        "config": config,
        "subscribers": subscribers,
        "window": args.window,
        "size": SIZE,
        "duration_s": round(elapsed, 3),
        "publishes": run.published,
        "deliveries_measured": deliveries,
        "deliveries_per_s": round(deliveries / elapsed),
        "latency_us_p50": percentile(latencies, 0.5),
        "latency_us_p99": percentile(latencies, 0.99),
        "loadgen_core_share": round(cpu / elapsed, 3),
        "server_core_share": round(server_cpu / elapsed, 3),
        # Busy share of each pinned core, whoever ran there: well above the process's own
        # share means other programs took that core (a shared machine).
        "server_core_busy": core_busy(cores0, cores1, args.server_cpu),
        "loadgen_core_busy": core_busy(cores0, cores1, args.loadgen_cpu),
        "server_cpu_us_per_delivery": round(server_cpu / deliveries * 1e6, 3)
        if deliveries
        else None,
        "lost": 0,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| config | subscribers | deliveries/s | p50 µs | p99 µs | server CPU µs/delivery "
        "| server / its core busy | load generator / its core busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['subscribers']:,} | {r['deliveries_per_s']:,} "
            f"| {r['latency_us_p50']:.0f} | {r['latency_us_p99']:.0f} "
            f"| {r['server_cpu_us_per_delivery']} | {r['server_core_share']} / "
            f"{r['server_core_busy']} | {r['loadgen_core_share']} / {r['loadgen_core_busy']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--subscribers", default="1000,10000", help="comma list of subscriber counts")
    add(
        "--configs",
        default="one,workers2,redis",
        help="comma list of one, workers2, redis, socketify",
    )
    add("--window", type=int, default=16, help="publishes outstanding")
    add("--duration", type=float, default=5.0, help="measured seconds per configuration")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    add("--server-cpu", type=int, default=0)
    add("--loadgen-cpu", type=int, default=1)
    add("--python", default=sys.executable)
    add("--results-dir", type=Path, default=BENCH_DIR / "results")
    args = p.parse_args(argv)
    args.subscribers = [int(n) for n in args.subscribers.split(",")]
    args.configs = args.configs.split(",")
    unknown = set(args.configs) - {"one", "workers2", "redis", "socketify"}
    if unknown:
        p.error(f"unknown configs: {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.loadgen_cpu})
    results = []
    for subscribers in args.subscribers:
        for config in args.configs:
            results.append(measure(config, subscribers, args))
            print(json.dumps(results[-1]), file=sys.stderr)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {"results": results, "argv": sys.argv, "cpus": os.cpu_count()}
    (args.results_dir / f"fanout-{stamp}.json").write_text(json.dumps(record, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
