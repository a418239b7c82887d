"""Our server's echo as a coroutine callback (``ours-async`` in bench/ws.py):
every message goes through the asyncio companion thread and back, the cost
an application pays for ``async def on_message``."""

from reactor.app import WebSocketApp


class AsyncEcho(WebSocketApp):
    async def on_message(self, conn, data):
        conn.send(data)


app = AsyncEcho
