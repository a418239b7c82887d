"""Soak: churning WebSocket clients and keep-alive HTTP clients against one
server, every byte compared, the server's fds and RSS watched.

    .venv/bin/python bench/soak.py --seconds 600          # results in bench/results/

Load (all loopback, bounded in time: --seconds, then at most --grace to wind down):
- --ws-clients (1,000) WebSocket clients, the `websockets` library on asyncio.
  Each connects, exchanges 1-20 bursts of 1-4 pipelined messages, then closes
  (95%: the close handshake; 5%: TCP dropped without one), and reconnects:
  churn. Sizes 0 B - 1 MiB (40% up to 125 B, 30% to 16 KiB, 20% to 256 KiB,
  10% to 1 MiB), half text (multi-byte UTF-8) half binary, 20% sent fragmented.
  Each echo must equal its message, in order: nothing lost, nothing reordered.
- --http-clients (200) keep-alive HTTP clients fetching files of 0 B - 4 MiB
  (small ones from the server's cache, large ones by sendfile), sometimes two
  requests pipelined, 2% reconnecting; each body compared with the file.
- The server: `python -m reactor --proto auto` (one port for both), sampled
  every second for RSS and open fds.

Report: ``bench/soak.py --report FUZZ.json FAULTS.json SOAK.json`` prints the
"Hostile input and faults" table of bench/RESULTS.md from the JSON of a fuzz
run (tests/fuzz/run.py), a fault-suite run (REACTOR_FAULT_STATS=... pytest
tests/test_faults.py) and a soak run.

Verdicts (also asserted by tests/test_soak.py):
- no mismatch, no lost or unexpected message, no client error;
- after the clients leave, the server's fd count returns to its baseline;
- RSS growth over the second half of the run stays below --rss-bound
  (16 MiB). Why that bound: after the first seconds the load is stationary,
  so a healthy server's RSS only wanders with allocator high-water marks (a
  few more 1 MiB messages in assembly at one moment than before, one more
  4 MiB output buffer); measured: second-half growth -1.1 to +0.2 MiB
  (medians of 5 samples; single samples wander within ~5 MiB), the peak
  ~6 MiB above the idle server (60 s and 600 s runs). A leak grows with the
  traffic instead: the run prints the smallest per-message leak the bound
  catches (bound / messages and responses of the second half), ~300 B at
  the suite's 60 s, less than one leaked bytes object plus its header.
  Leaked connections are caught by the fd check, whatever their size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import benchkit

MIB = 1 << 20
FILE_SIZES = (0, 1, 1000, 20_000, 100_000, 1_000_000, 4 * MIB)  # 20 KB: cached; 100 KB+: sendfile
# (upper bound, share): 40% up to 125 B (one-byte length), 30% to 16 KiB, 20% to 256 KiB,
# 10% to 1 MiB (64-bit length, many reads per message)
SIZE_CLASSES = ((125, 0.4), (16 * 1024, 0.3), (256 * 1024, 0.2), (MIB, 0.1))
BURST_MAX = 4  # messages in flight per connection
MESSAGE_TIMEOUT = 120  # seconds for one echo: generous on 2 loaded cores; a hang, not a pace
DEFAULT_RSS_BOUND = 16 * MIB  # see the module docstring


# ---- the server ----------------------------------------------------------------------------


def start_server(root: Path) -> benchkit.Server:
    argv = [sys.executable, "-m", "reactor", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--proto", "auto", "--root", str(root), "--quiet"]
    server = benchkit.Server("reactor", argv, cpu=None)
    server.wait_ready()
    return server


def server_fds(server: benchkit.Server) -> int:
    return benchkit.fd_count(server.proc.pid)


def server_cpu(server: benchkit.Server) -> float:
    return benchkit.process_cpu_seconds(server.proc.pid) or 0.0


# ---- payloads ----------------------------------------------------------------------------------


class Payloads:
    """Messages are slices of one random pattern (binary) or one random text."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.binary = rng.randbytes(2 * MIB)
        alphabet = "abcdefghij KLMNOP 0123456789 éüß жзи 中文字 🌍🚀"  # 1-4 byte UTF-8
        self.text = "".join(rng.choice(alphabet) for _ in range(MIB))

    @staticmethod
    def size(rng: random.Random) -> int:
        low, pick = 0, rng.random()
        for high, share in SIZE_CLASSES:
            if pick < share:
                return rng.randint(low, high)
            pick -= share
            low = high + 1
        return MIB

    def message(self, rng: random.Random) -> str | bytes:
        size = self.size(rng)
        if rng.random() < 0.5:
            start = rng.randrange(MIB)
            return self.binary[start : start + size]
        chars = size // 2  # about size bytes: the alphabet averages ~2 bytes a character
        start = rng.randrange(len(self.text) - chars)
        return self.text[start : start + chars]


def fragments(message: str | bytes, rng: random.Random) -> list:
    cuts = sorted(rng.randint(0, len(message)) for _ in range(rng.randint(1, 4)))
    bounds = [0, *cuts, len(message)]
    return [message[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# ---- clients ------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.problems: list[str] = []  # the first few, verbatim

    def problem(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.problems) < 20:
            self.problems.append(f"{kind}: {detail}")


async def ws_client(index: int, url: str, deadline: float, payloads: Payloads, stats: Stats):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, 2))  # spread the first handshakes
    while time.monotonic() < deadline:
        dropped = False
        try:
            async with connect(
                url, max_size=None, compression=None, ping_interval=None, proxy=None,
                open_timeout=MESSAGE_TIMEOUT, close_timeout=MESSAGE_TIMEOUT, max_queue=None,
            ) as ws:  # fmt: skip
                stats.counts["ws connections"] += 1
                await ws_session(ws, rng, deadline, payloads, stats)
                if rng.random() < 0.05:
                    dropped = True
                    ws.transport.abort()  # gone without a close frame: TCP reset
                    stats.counts["ws dropped without close"] += 1
                else:
                    stats.counts["ws closed with handshake"] += 1
        except ConnectionClosed as exc:
            if not dropped:
                stats.problem("ws closed unexpectedly", repr(exc))
        except Exception as exc:  # any other failure is a finding, counted by kind
            stats.problem(f"ws {type(exc).__name__}", repr(exc))
        await asyncio.sleep(rng.uniform(0, 0.05))


async def ws_session(ws, rng, deadline, payloads, stats) -> None:
    for _ in range(rng.randint(1, 20)):
        if time.monotonic() >= deadline:
            return
        burst = [payloads.message(rng) for _ in range(rng.randint(1, BURST_MAX))]
        for message in burst:
            if rng.random() < 0.2 and len(message) > 1:
                await ws.send(fragments(message, rng))
                stats.counts["ws messages sent fragmented"] += 1
            else:
                await ws.send(message)
        for message in burst:
            echo = await asyncio.wait_for(ws.recv(), MESSAGE_TIMEOUT)
            if echo != message:
                stats.problem("ws echo mismatch", f"{len(echo)} vs {len(message)} bytes")
                return
            stats.counts["ws messages checked"] += 1
            stats.counts["ws text" if isinstance(message, str) else "ws binary"] += 1
            size = len(message.encode()) if isinstance(message, str) else len(message)
            stats.counts["ws bytes checked"] += size


async def http_client(index: int, port: int, deadline: float, files: dict, stats: Stats):
    rng = random.Random(100_000 + index)
    names = list(files)
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            stats.counts["http connections"] += 1
            try:
                while time.monotonic() < deadline and rng.random() > 0.02:
                    batch = [rng.choice(names) for _ in range(1 if rng.random() < 0.8 else 2)]
                    writer.write(
                        b"".join(b"GET /%s HTTP/1.1\r\nHost: s\r\n\r\n" % n.encode() for n in batch)
                    )
                    for name in batch:
                        await http_response(reader, name, files[name], stats)
            finally:
                writer.close()
        except Exception as exc:
            stats.problem(f"http {type(exc).__name__}", repr(exc))
            await asyncio.sleep(0.1)


async def http_response(reader, name: str, content: bytes, stats: Stats) -> None:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MESSAGE_TIMEOUT)
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head).group(1))
    body = await asyncio.wait_for(reader.readexactly(length), MESSAGE_TIMEOUT)
    if status != 200 or body != content:
        stats.problem("http body mismatch", f"{name}: status {status}, {len(body)} bytes")
        return
    stats.counts["http responses checked"] += 1
    stats.counts["http bytes checked"] += len(body)


# ---- the run ------------------------------------------------------------------------------


async def sample(
    server: benchkit.Server, samples: list, stop: asyncio.Event, started: float
) -> None:
    while not stop.is_set():
        rss = benchkit.rss_bytes(server.proc.pid)
        samples.append((round(time.monotonic() - started, 2), rss, server_fds(server)))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def drive(server: benchkit.Server, options, files: dict, stats: Stats) -> list:
    payloads = Payloads(options.seed)
    started = time.monotonic()
    deadline = started + options.seconds
    url = f"ws://127.0.0.1:{server.port}/"
    samples: list = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(server, samples, stop, started))
    clients = [ws_client(i, url, deadline, payloads, stats) for i in range(options.ws_clients)]
    clients += [
        http_client(i, server.port, deadline, files, stats) for i in range(options.http_clients)
    ]
    done, pending = await asyncio.wait(
        [asyncio.create_task(c) for c in clients], timeout=options.seconds + options.grace
    )
    for task in pending:  # a client stuck past the grace period is a finding too
        task.cancel()
        stats.problem("client stuck past the grace period", "cancelled")
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await sampler
    return samples


def make_site(root: Path, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for size in FILE_SIZES:
        name = f"file-{size}.bin"
        files[name] = rng.randbytes(size)
        (root / name).write_bytes(files[name])
    return files


def growth_second_half(samples: list, seconds: float) -> tuple[int, int, int]:
    """(RSS near the middle, RSS at the end of the load, growth): medians of 5
    samples each, so one allocator spike does not decide."""
    loaded = [s for s in samples if s[0] <= seconds]
    middle = min(range(len(loaded)), key=lambda i: abs(loaded[i][0] - seconds / 2))
    mid = statistics.median(s[1] for s in loaded[max(0, middle - 2) : middle + 3])
    end = statistics.median(s[1] for s in loaded[-5:])
    return int(mid), int(end), int(end - mid)


def run(options) -> dict:
    stats = Stats()
    with tempfile.TemporaryDirectory(prefix="reactor-soak-") as tmp:
        files = make_site(Path(tmp), options.seed)
        server = start_server(Path(tmp))
        try:
            time.sleep(0.5)
            fd_baseline = server_fds(server)
            cpu_before = server_cpu(server)
            samples = asyncio.run(drive(server, options, files, stats))
            cpu = server_cpu(server) - cpu_before
            settled = _wait(lambda: server_fds(server) == fd_baseline, 30)
            fd_end = server_fds(server)
        finally:
            exit_code = server.stop(timeout=20)  # a graceful drain under load
    mid, end, growth = growth_second_half(samples, options.seconds)
    second_half_messages = _second_half_share(stats, samples, options.seconds)
    counts = dict(stats.counts)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": options.seconds,
        "ws_clients": options.ws_clients,
        "http_clients": options.http_clients,
        "counts": counts,
        "errors": dict(stats.errors),
        "problems": stats.problems,
        "fd_baseline": fd_baseline,
        "fd_peak": max(s[2] for s in samples),
        "fd_end": fd_end,
        "fds_back_to_baseline": settled,
        "rss_start_mib": round(samples[0][1] / MIB, 1),
        "rss_peak_mib": round(max(s[1] for s in samples) / MIB, 1),
        "rss_mid_mib": round(mid / MIB, 1),
        "rss_end_mib": round(end / MIB, 1),
        "rss_growth_second_half_mib": round(growth / MIB, 2),
        "rss_bound_mib": round(options.rss_bound / MIB, 1),
        "smallest_leak_caught_bytes_per_message": round(
            options.rss_bound / max(1, second_half_messages)
        ),
        "server_cpu_seconds": round(cpu, 1),
        "server_exit_code": exit_code,
        "server_log_head": list(server.log)[:20],
        "samples": samples,
    }
    result["passed"] = (
        not stats.errors
        and counts.get("ws messages checked", 0) > 0
        and counts.get("http responses checked", 0) > 0
        and settled
        and growth < options.rss_bound
        and exit_code == 0
    )
    return result


def _second_half_share(stats: Stats, samples: list, seconds: float) -> int:
    """Messages and responses of the second half, estimated as half the total
    (the load is stationary after the first seconds)."""
    total = stats.counts["ws messages checked"] + stats.counts["http responses checked"]
    return total // 2


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def summary(result: dict) -> str:
    c = result["counts"]
    lines = [
        f"soak {result['seconds']} s, {result['ws_clients']} ws + {result['http_clients']} http "
        f"clients: {'PASSED' if result['passed'] else 'FAILED'}",
        f"  ws: {c.get('ws connections', 0):,} connections "
        f"({c.get('ws dropped without close', 0):,} dropped without close), "
        f"{c.get('ws messages checked', 0):,} messages / {c.get('ws bytes checked', 0):,} bytes "
        f"checked ({c.get('ws messages sent fragmented', 0):,} sent fragmented)",
        f"  http: {c.get('http connections', 0):,} connections, "
        f"{c.get('http responses checked', 0):,} responses / "
        f"{c.get('http bytes checked', 0):,} bytes checked",
        f"  errors: {result['errors'] or 'none'}",
        f"  fds: baseline {result['fd_baseline']}, peak {result['fd_peak']}, "
        f"end {result['fd_end']}",
        f"  RSS MiB: start {result['rss_start_mib']}, peak {result['rss_peak_mib']}, "
        f"mid {result['rss_mid_mib']}, end {result['rss_end_mib']}: second-half growth "
        f"{result['rss_growth_second_half_mib']} (bound {result['rss_bound_mib']}; catches "
        f"leaks >= {result['smallest_leak_caught_bytes_per_message']} B/message)",
        f"  server: {result['server_cpu_seconds']} s CPU, exit code {result['server_exit_code']}",
    ]
    lines += [f"  problem: {p}" for p in result["problems"][:10]]
    return "\n".join(lines)


# ---- the report ---------------------------------------------------------------------------


def report(fuzz_path: Path, faults_path: Path, soak_path: Path) -> str:
    """The markdown table of bench/RESULTS.md from three runs' JSON."""
    fuzz = json.loads(fuzz_path.read_text())
    faults = json.loads(faults_path.read_text())
    soak = json.loads(soak_path.read_text())
    rows = ["| what | count | by kind |", "|---|---:|---|"]
    for target in fuzz["targets"]:
        kinds = ", ".join(f"{kind}: {n:,}" for kind, n in target["kinds"].items())
        name = f"bad inputs: fuzz target `{target['target']}`"
        if target.get("asan_replayed") is not None:
            kinds += f"; {target['asan_replayed']:,} replayed on the C built with ASan"
        rows.append(f"| {name} | {target['inputs']:,} | {kinds} |")
    groups: Counter[str] = Counter()
    for kind, n in faults["faults"].items():
        groups[kind.split(":")[0]] += n
    for group, n in groups.items():
        detail = ", ".join(
            f"{kind.split(': ', 1)[1]}: {m:,}"
            for kind, m in faults["faults"].items()
            if kind.split(":")[0] == group and ": " in kind
        )
        label = "bad inputs" if group.startswith("hostile bytes") else "faults injected"
        rows.append(f"| {label}: {group} | {n:,} | {detail} |")
    c = Counter(soak["counts"])
    ws_conns, http_conns = c["ws connections"], c["http connections"]
    rows.append(
        f"| soak ({soak['seconds']:.0f} s): connections | {ws_conns + http_conns:,} | "
        f"{ws_conns:,} ws ({c['ws dropped without close']:,} dropped without close), "
        f"{http_conns:,} http |"
    )
    messages = c.get("ws messages checked", 0) + c.get("http responses checked", 0)
    data = c.get("ws bytes checked", 0) + c.get("http bytes checked", 0)
    rows.append(
        f"| messages checked byte-exact | {messages + faults['checked']['messages']:,} | soak: "
        f"{c.get('ws messages checked', 0):,} ws ({c.get('ws messages sent fragmented', 0):,} "
        f"sent fragmented) + {c.get('http responses checked', 0):,} http; faults suite: "
        f"{faults['checked']['messages']:,} |"
    )
    rows.append(
        f"| bytes checked byte-exact | {data + faults['checked']['bytes']:,} | soak: {data:,}; "
        f"faults suite: {faults['checked']['bytes']:,} |"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--report"]:
        print(report(*(Path(p) for p in argv[1:4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--ws-clients", type=int, default=1000)
    parser.add_argument("--http-clients", type=int, default=200)
    parser.add_argument("--grace", type=float, default=180, help="seconds to wind down")
    parser.add_argument("--rss-bound", type=int, default=DEFAULT_RSS_BOUND, help="bytes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="default: bench/results/soak-<time>.json")
    options = parser.parse_args(argv)
    benchkit.raise_fd_limit()  # 1,200 client sockets
    result = run(options)
    path = options.json or benchkit.RESULTS_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    print(f"  results: {path}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
