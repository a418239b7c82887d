"""The 64 B WebSocket echo in one process, without a network client: the
server's cost per message, steady enough to compare two checkouts on a busy
machine (the best of many short trials filters out interference).

A reactor and the WebSocket handler (default echo app) serve one end of a
socketpair; the other end sends 16 masked 64 B frames per round and reads
the 16 echoes back. Prints nanoseconds per message (client side included).

    .venv/bin/python bench/ws_inprocess.py                 # this checkout
    .venv/bin/python bench/ws_inprocess.py --root OTHER    # another checkout (built)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
FRAME = bytes([0x82, 0x80 | 64]) + b"\x01\x02\x03\x04" + bytes(64)  # masked, 64 B binary
PER_ROUND = 16  # frames per read, as bench/ws.py's window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50, help="rounds per trial")
    options = parser.parse_args()
    sys.path.insert(0, str(options.root))
    os.chdir(options.root)
    from reactor.handlers.ws import WebSocketHandler
    from reactor.loop import Reactor

    reactor = Reactor(idle_timeout=None)
    handler = WebSocketHandler(reactor, None, ping_interval=0, header_timeout=0)
    server, peer = socket.socketpair()
    server.setblocking(False)
    reactor.add_connection(server.detach(), handler)
    peer.sendall(HANDSHAKE)
    reactor.run_once(1.0)  # reads the head, answers 101
    peer.settimeout(10)
    assert peer.recv(4096).startswith(b"HTTP/1.1 101")
    batch, expect = FRAME * PER_ROUND, PER_ROUND * 66  # 2-byte header + 64 B per echo
    best = float("inf")
    for _ in range(options.trials):
        start = time.perf_counter()
        for _ in range(options.rounds):
            peer.sendall(batch)
            reactor.run_once(0)
            got = 0
            while got < expect:
                got += len(peer.recv(65536))
        best = min(best, (time.perf_counter() - start) / (options.rounds * PER_ROUND))
    reactor.dispose()
    peer.close()
    print(f"{options.root}: {best * 1e9:.0f} ns per message (best of {options.trials} trials)")


if __name__ == "__main__":
    main()
