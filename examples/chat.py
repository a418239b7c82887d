"""A chat room: every text message goes to everyone connected (broadcast).

From the repository root:

    python -m reactor --proto ws --app examples.chat:app
    python examples/chat.py --port 9501

Join with any WebSocket client, choosing a name in the query string:

    python -m websockets 'ws://127.0.0.1:9501/?name=ann'

With --workers N each worker is its own room (connections are per process).
"""

from __future__ import annotations

import itertools
from urllib.parse import parse_qs, urlsplit

from reactor.app import WebSocketApp
from reactor.server import main

MAX_NAME = 24  # characters: keeps every line short
MAX_LINE = 1000  # characters per chat line: longer ones are refused, not broadcast


class ChatRoom(WebSocketApp):
    def __init__(self) -> None:
        self.guests = itertools.count(1)

    def on_upgrade(self, request):
        if len(self.server.connections) >= 1000:
            return 503, "the room is full"
        return None

    def on_open(self, conn, request):
        conn.data = name_from(request.target) or f"guest-{next(self.guests)}"
        online = len(self.server.connections)
        self.server.broadcast(f"* {conn.data} joined ({online} online)")

    def on_message(self, conn, data):
        if not isinstance(data, str):
            conn.send("* text messages only")
        elif len(data) > MAX_LINE:
            conn.send(f"* lines are limited to {MAX_LINE} characters")
        else:
            self.server.broadcast(f"{conn.data}: {data}")  # one frame, written to everyone

    def on_close(self, conn, code, reason):
        if conn.data is not None:
            self.server.broadcast(f"* {conn.data} left")


def name_from(target: str) -> str | None:
    """``?name=...`` from the request target, printable and bounded."""
    names = parse_qs(urlsplit(target).query).get("name")
    if not names:
        return None
    name = "".join(c for c in names[0] if c.isprintable() and not c.isspace())[:MAX_NAME]
    return name or None


app = ChatRoom()

if __name__ == "__main__":
    raise SystemExit(main(app))  # every option of python -m reactor
