"""Coroutine callbacks: ``async def`` callbacks run on an asyncio loop in a
companion thread, so they may await asyncio libraries.

From the repository root (``--proto auto`` also serves the HTTP pages that
``fetch`` reads back from this same server):

    python -m reactor --proto auto --app examples.asyncio_app:app
    python examples/asyncio_app.py --port 9501

Messages: ``sleep S`` answers after S seconds (at most 10) without holding
up other connections; ``fetch PATH`` GETs http://<this server>PATH with
aiohttp's client (when aiohttp is installed) and answers status and size;
anything else is echoed. A connection's messages are handled one after the
other, in order.
"""

from __future__ import annotations

import asyncio

from reactor.app import WebSocketApp
from reactor.server import main

try:
    import aiohttp
except ImportError:  # optional: fetch answers that it is unavailable
    aiohttp = None

MAX_SLEEP = 10.0  # seconds


class AsyncDemo(WebSocketApp):
    async def on_open(self, conn, request):
        conn.data = request.get("host")  # where this server is reachable, for fetch

    async def on_message(self, conn, data):
        command, _, argument = data.partition(" ") if isinstance(data, str) else ("", "", "")
        if command == "sleep":
            delay = min(float(argument), MAX_SLEEP)
            await asyncio.sleep(delay)
            conn.send(f"slept {delay:g}")
        elif command == "fetch":
            conn.send(await self.fetch(conn.data, argument or "/"))
        else:
            conn.send(data)

    async def fetch(self, host: str, path: str) -> str:
        if aiohttp is None:
            return "fetch needs aiohttp (pip install aiohttp)"
        if not path.startswith("/"):
            return "fetch takes a path on this server"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"http://{host}{path}") as response:
                body = await response.read()
        return f"{response.status} {len(body)} bytes"


app = AsyncDemo

if __name__ == "__main__":
    raise SystemExit(main(app, proto="auto"))  # every option of python -m reactor
