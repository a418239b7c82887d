"""Per-topic SUBSCRIBE or one pattern: what each costs Redis and the workers.

The Redis broker subscribes each worker to the channel of every topic it has
subscribers for. The alternative, one PSUBSCRIBE to all topic channels per
worker, sends every publish to every worker. This measures both on a
redis-server started here (free port, temp dir, stopped by PID): W subscriber
connections ("workers"), topics spread so each worker wants 1/W of the
publishes, one pipelined publisher; it reports redis-server's CPU per publish
and the bytes each worker had to read per publish.

    .venv/bin/python bench/redis_subscribe.py [--workers 4] [--publishes 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchkit  # noqa: E402

from reactor.brokers.redis import command  # noqa: E402

BATCH = 1000  # publishes per pipelined write
PAYLOAD = b"x" * 73  # what a 64 B message becomes: opcode + 8-byte origin + 64 bytes
TIMEOUT = 120.0  # s for one measurement at most


@contextlib.contextmanager
def redis_server():
    with benchkit.redis_server() as (port, proc):
        yield port, proc.pid


def measure(mode: str, workers: int, publishes: int) -> dict:
    with redis_server() as (port, pid), contextlib.ExitStack() as stack:
        subscribers = []
        for index in range(workers):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            if mode == "per-topic":
                sock.sendall(command(b"SUBSCRIBE", b"reactor:0:t:room%d" % index))
            else:
                sock.sendall(command(b"PSUBSCRIBE", b"reactor:0:t:*"))
            sock.recv(4096)  # the confirmation
            sock.setblocking(False)
            subscribers.append(sock)
        publisher = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        publisher.setblocking(False)
        batch = b"".join(
            command(b"PUBLISH", b"reactor:0:t:room%d" % (n % workers), PAYLOAD)
            for n in range(BATCH)
        )
        received, replies, pending, sent = [0] * workers, 0, b"", 0
        cpu0, deadline = benchkit.process_cpu_seconds(pid), time.monotonic() + TIMEOUT
        while replies < publishes and time.monotonic() < deadline:
            if not pending and sent < publishes:
                pending, sent = batch, sent + BATCH
            if pending:
                with contextlib.suppress(BlockingIOError):
                    pending = pending[publisher.send(pending) :]
            readable, _, _ = select.select([publisher, *subscribers], [], [], 0.01)
            for sock in readable:
                with contextlib.suppress(BlockingIOError):
                    data = sock.recv(1 << 20)
                    if sock is publisher:
                        replies += data.count(b":")  # one integer reply per PUBLISH
                    else:
                        received[subscribers.index(sock)] += len(data)
        drain_until = time.monotonic() + 1.0  # what Redis still had queued for subscribers
        while time.monotonic() < drain_until:
            for sock in select.select(subscribers, [], [], 0.1)[0]:
                with contextlib.suppress(BlockingIOError):
                    received[subscribers.index(sock)] += len(sock.recv(1 << 20))
        redis_cpu = benchkit.process_cpu_seconds(pid) - cpu0
    return {
        "mode": mode,
        "workers": workers,
        "publishes": replies,
        "redis_cpu_us_per_publish": round(redis_cpu / replies * 1e6, 2),
        "bytes_per_worker_per_publish": round(sum(received) / workers / replies, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--publishes", type=int, default=200_000)
    args = parser.parse_args()
    for mode in ("per-topic", "pattern"):
        print(measure(mode, args.workers, args.publishes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
