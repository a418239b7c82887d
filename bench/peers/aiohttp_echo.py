"""aiohttp echo server: ``web.WebSocketResponse`` on uvloop by default, access log off.

Text comes back as text and binary as binary; aiohttp answers pings and the close handshake.
"""

from __future__ import annotations

import sys

from aiohttp import WSMsgType, web
from peer_cli import MAX_MESSAGE, run_asyncio_peer


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False)
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def start(host: str, port: int):
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return site._server.sockets[0].getsockname()[1], runner.cleanup


if __name__ == "__main__":
    sys.exit(run_asyncio_peer(start, __doc__.split("\n")[0]))
