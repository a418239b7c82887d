"""What every peer echo server in bench/peers shares: options, start-up line, clean stop.

A peer is started by bench/ws.py as ``python bench/peers/<name>.py --host H --port 0``. It
prints ``listening on HOST:PORT`` to stderr once it accepts connections (the harness learns
the port from that line, as with our server) and exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

MAX_MESSAGE = 16 * 1024 * 1024  # same message limit as our server's default
LOOPS = ("uvloop", "asyncio")

# start() opens the server and returns (bound port, coroutine function that closes it).
Starter = Callable[[str, int], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]]


def parse_args(description: str, loops: tuple[str, ...] = LOOPS) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--loop", choices=loops, default=loops[0], help="event loop")
    return parser.parse_args()


def announce(host: str, port: int) -> None:
    print(f"listening on {host}:{port}", file=sys.stderr, flush=True)


def free_port(host: str) -> int:
    """A port nobody listens on now, for servers that cannot report the one they bound."""
    with socket.create_server((host, 0)) as probe:
        return probe.getsockname()[1]


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def serve_until_signal(start: Starter, host: str, port: int) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    bound, close = await start(host, port)
    announce(host, bound)
    await stopped.wait()
    await close()


def port_and_closer(server: asyncio.AbstractServer) -> tuple[int, Callable[[], Awaitable[None]]]:
    """What ``start`` returns for a server object with asyncio's interface."""

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return server.sockets[0].getsockname()[1], close


def run_asyncio_peer(start: Starter, description: str) -> int:
    """Parse the command line and run ``start``'s server on the chosen loop until SIGTERM."""
    args = parse_args(description)
    with asyncio.Runner(loop_factory=lambda: new_loop(args.loop)) as runner:
        runner.run(serve_until_signal(start, args.host, args.port))
    return 0
