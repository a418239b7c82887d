"""websockets echo server with permessage-deflate on (its defaults), on uvloop by default.

Its server side accepts the client's offer and keeps a compression context per connection
(context takeover both ways, unless the client asks otherwise).
"""

from __future__ import annotations

import sys

from peer_cli import MAX_MESSAGE, run_asyncio_peer
from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def start(host: str, port: int):
    server = await serve(echo, host, port, max_size=MAX_MESSAGE, compression="deflate")

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return server.sockets[0].getsockname()[1], close


if __name__ == "__main__":
    sys.exit(run_asyncio_peer(start, __doc__.split("\n")[0]))
