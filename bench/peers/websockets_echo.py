"""websockets echo server (its asyncio implementation, on uvloop by default), no compression.

Messages come back whole with their type; the library answers pings and the close handshake.
"""

from __future__ import annotations

import sys

from peer_cli import MAX_MESSAGE, port_and_closer, run_asyncio_peer
from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def start(host: str, port: int):
    server = await serve(echo, host, port, max_size=MAX_MESSAGE, compression=None)
    return port_and_closer(server)


if __name__ == "__main__":
    sys.exit(run_asyncio_peer(start, __doc__.split("\n")[0]))
