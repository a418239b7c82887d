"""permessage-deflate benchmark: our ``--compression shared`` and ``full`` beside websockets
(compression on, its defaults) and socketify (uWebSockets, shared compressor and decompressor).

Scenarios, each server pinned to CPU 0 and this script's client to CPU 1:

- ``idle``: server memory per idle connection with compression negotiated: RSS with N
  connections open (each has exchanged one compressed 1 KiB message both ways, so every
  context a server allocates lazily exists), minus RSS after a warm-up, over N. Two offers:
  ``nct`` = ``permessage-deflate; client_no_context_takeover`` (a client agreeing to keep no
  context) and ``browser`` = ``permessage-deflate; client_max_window_bits`` (what Chromium sends).
- ``echo``: JSON-like 1 KiB text messages echoed, compressed both ways, C connections with W
  messages in flight each (msg/s). 64 different messages are sent in turn (a server that keeps
  context cannot just repeat itself); the client offers ``client_no_context_takeover`` so each
  is compressed once, up front, and it inflates and checks every reply.

The client is Python (zlib for inflating the replies): it can be the bottleneck, which the
``client_cpu`` figure (share of its core) shows. Every process is stopped in a ``finally``;
every loop is bounded by a deadline.

    .venv/bin/python bench/ws_compression.py                        # ~3 min
    .venv/bin/python bench/ws_compression.py --quick                # smoke run
    .venv/bin/python bench/ws_compression.py --servers ours-shared --scenarios idle
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time
import zlib
from pathlib import Path

import benchkit  # server start-up and stop

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / "peers"
TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1
OFFERS = {
    "nct": "permessage-deflate; client_no_context_takeover",
    "browser": "permessage-deflate; client_max_window_bits",
}
REQUIREMENTS = {
    "ours-shared": "reactor",
    "ours-full": "reactor",
    "websockets": "websockets",
    "socketify": "socketify",
}
SETTLE = 1.0  # s before each RSS reading (lazy frees)
DEADLINE = 60.0  # s for opening the idle connections


def message_1k(seed: int = 0) -> bytes:
    """A JSON-like text of 1 KiB: what chat and API traffic look like."""
    words = ("hello", "there", "how", "are", "you", "today", "fine", "thanks", "see", "later")
    items = [
        {
            "id": seed * 100 + i,
            "user": f"user{(seed + i) % 7}",
            "text": " ".join(words[(seed * 3 + i + k) % 10] for k in range(5)),
            "read": (seed + i) % 2 == 0,
        }
        for i in range(40)
    ]
    return json.dumps({"type": "messages", "items": items}).encode()[:1024]


MESSAGE = message_1k()
VARIANTS = [message_1k(seed) for seed in range(64)]


def server_commands(python: str, host: str) -> dict[str, list[str]]:
    ours = [python, "-m", "reactor", "--host", host, "--port", "0", "--proto", "ws",
            "--idle-timeout", "0", "--ping-interval", "0"]  # fmt: skip
    return {
        "ours-shared": [*ours, "--compression", "shared"],
        "ours-full": [*ours, "--compression", "full"],
        "websockets": [python, str(PEERS_DIR / "websockets_deflate_echo.py"), "--host", host],
        "socketify": [python, str(PEERS_DIR / "socketify_deflate_echo.py"), "--host", host],
    }


# ---- a client connection -----------------------------------------------------------------


def masked_frame(opcode_byte: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    head = (
        struct.pack("!BB", opcode_byte, 0x80 | n)
        if n < 126
        else (struct.pack("!BBH", opcode_byte, 0x80 | 126, n))
    )
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + key + masked


def compressed_frame(payload: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return masked_frame(0xC1, data[:-4])  # FIN | RSV1 | text


def upgrade(host: str, port: int, offer: str) -> tuple[socket.socket, str]:
    sock = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Extensions: {offer}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101") and not rest, head
    extension = ""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-extensions":
            extension = value.strip()
    return sock, extension


class Replies:
    """Server frames read off one connection, inflated and checked against what was sent."""

    def __init__(self, expected: list[bytes] | None = None) -> None:
        self.buf = bytearray()
        self.inflater = zlib.decompressobj(-15)  # decodes replies with or without context kept
        self.bad = 0
        self.expected = expected or [MESSAGE]
        self.next = 0  # index of the message the next reply echoes

    def feed(self, data: bytes) -> int:
        """Count the complete replies in ``data`` (and what came before it)."""
        buf = self.buf
        buf += data
        pos = count = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, start = b1 & 0x7F, pos + 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                (n,) = struct.unpack_from("!H", buf, pos + 2)
                start += 2
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                start += 8
            if len(buf) - start < n:
                break
            payload = bytes(buf[start : start + n])
            if b0 & 0x40:
                payload = self.inflater.decompress(payload + TAIL)
            self.bad += payload != self.expected[self.next % len(self.expected)]
            self.next += 1
            count += 1
            pos = start + n
        del buf[:pos]
        return count


def echo_once(sock: socket.socket, frame: bytes) -> bool:
    sock.sendall(frame)
    replies = Replies()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if replies.feed(sock.recv(65536)):
            return replies.bad == 0
    return False


# ---- scenarios -----------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def hold(host: str, port: int, offer: str, count: int, frame: bytes) -> tuple[list, str]:
    held, extension = [], ""
    deadline = time.monotonic() + DEADLINE
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        sock, extension = upgrade(host, port, offer)
        held.append(sock)
        if not echo_once(sock, frame):
            raise RuntimeError("a compressed echo failed")
    return held, extension


def measure_idle(name: str, argv: list[str], offer: str, args) -> dict:
    server = benchkit.Server(name, argv, args.server_cpu)
    held: list[socket.socket] = []
    result: dict = {"server": name, "scenario": "idle", "offer": OFFERS[offer]}
    frame = compressed_frame(MESSAGE)
    try:
        port = server.wait_ready()
        warm, _ = hold(args.host, port, OFFERS[offer], args.idle // 10 + 1, frame)
        for sock in warm:
            sock.close()
        time.sleep(SETTLE)
        before = rss_bytes(server.proc.pid)
        held, result["answer"] = hold(args.host, port, OFFERS[offer], args.idle, frame)
        time.sleep(SETTLE)
        grown = rss_bytes(server.proc.pid) - before
        result.update(connections=len(held), bytes_per_connection=round(grown / len(held)))
    finally:
        for sock in held:
            sock.close()
        result["server_exit_status"] = server.stop()
    return result


def measure_echo(name: str, argv: list[str], args) -> dict:
    server = benchkit.Server(name, argv, args.server_cpu)
    result: dict = {"server": name, "scenario": "echo", "size": len(MESSAGE)}
    socks = []
    try:
        port = server.wait_ready()
        frames = [compressed_frame(message) for message in VARIANTS]
        for _ in range(args.connections):
            sock, result["answer"] = upgrade(args.host, port, OFFERS["nct"])
            sock.setblocking(False)
            socks.append(sock)
        result.update(run_echo(socks, frames, args))
    finally:
        for sock in socks:
            sock.close()
        result["server_exit_status"] = server.stop()
    return result


def run_echo(socks: list[socket.socket], frames: list[bytes], args) -> dict:
    """Keep ``args.window`` messages in flight on each connection, message k being
    ``frames[k % len(frames)]``; count the replies of the measured interval."""
    selector = selectors.DefaultSelector()
    replies, sent = {}, {}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
        replies[sock] = Replies(VARIANTS)
        sock.sendall(b"".join(frames[: args.window]))
        sent[sock] = args.window
    start = time.monotonic()
    measured_from, stop = start + args.warmup, start + args.warmup + args.duration
    counted, cpu_start = 0, None
    while (now := time.monotonic()) < stop:
        if cpu_start is None and now >= measured_from:
            cpu_start, counted = time.process_time(), 0
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            data = sock.recv(262144)
            if not data:
                raise ConnectionError("the server closed a connection")
            done = replies[sock].feed(data)
            if done:
                counted += done
                first = sent[sock]
                sock.sendall(b"".join(frames[k % len(frames)] for k in range(first, first + done)))
                sent[sock] = first + done
    cpu = time.process_time() - (cpu_start or 0)
    selector.close()
    return {
        "messages_per_s": round(counted / args.duration),
        "client_cpu": round(cpu / args.duration, 2),
        "bad_replies": sum(r.bad for r in replies.values()),
        "connections": len(socks),
        "window": args.window,
    }


# ---- the run -----------------------------------------------------------------------------


def available(python: str, names: list[str]) -> list[str]:
    import importlib.util

    return [name for name in names if importlib.util.find_spec(REQUIREMENTS[name]) is not None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--quick", action="store_true", help="smoke run: 200 idle connections, 1 s of echo")
    add(
        "--servers", default=",".join(REQUIREMENTS), help="comma list of " + ", ".join(REQUIREMENTS)
    )
    add("--scenarios", default="idle,echo", help="comma list of idle, echo")
    add("--host", default="127.0.0.1")
    add("--idle", type=int, default=2000, help="connections the idle run holds")
    add("--connections", type=int, default=50)
    add("--window", type=int, default=8, help="messages in flight per connection")
    add("--duration", type=float, default=5.0)
    add("--warmup", type=float, default=1.0)
    add("--repeat", type=int, default=3, help="echo runs per server (median kept)")
    add("--server-cpu", type=int, default=0)
    add("--client-cpu", type=int, default=1)
    add("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.idle, args.duration, args.warmup, args.repeat = 200, 1.0, 0.2, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {args.client_cpu})
    commands = server_commands(sys.executable, args.host)
    wanted = [s for s in args.servers.split(",") if s]
    servers = available(sys.executable, wanted)
    for name in sorted(set(wanted) - set(servers)):
        print(f"skipped {name}: not installed", file=sys.stderr)
    scenarios = args.scenarios.split(",")
    results = []
    for name in servers:
        if "idle" in scenarios:
            for offer in OFFERS:
                results.append(measure_idle(name, commands[name], offer, args))
                print(json.dumps(results[-1]), flush=True)
        if "echo" in scenarios:
            runs = [measure_echo(name, commands[name], args) for _ in range(args.repeat)]
            runs.sort(key=lambda r: r["messages_per_s"])
            median = dict(runs[len(runs) // 2], all_runs=[r["messages_per_s"] for r in runs])
            results.append(median)
            print(json.dumps(median), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
