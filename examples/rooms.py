"""Chat rooms by path: ``ws://host/rooms/<name>`` joins room <name>.

A Router sends every upgrade to ``/rooms/{name}`` to one ChatRooms app; the
captured name is ``request.path_params["name"]``, and each room is a topic,
so a message reaches the members of its room only, on every worker
(``--workers N``) and, with ``--broker redis://...``, on every server.
``GET /rooms`` (an HTTP endpoint on the same port) lists the rooms this
worker has members in.

From the repository root:

    python -m reactor --proto auto --app examples.rooms:app
    python examples/rooms.py --port 9501

    python -m websockets ws://127.0.0.1:9501/rooms/lobby
    curl http://127.0.0.1:9501/rooms
"""

from __future__ import annotations

from reactor.app import Response, Router, WebSocketApp
from reactor.server import main

MAX_LINE = 1000  # characters per chat line: longer ones are refused, not published
MAX_ROOM = 32  # characters of a room name: keeps topics and lines short


class ChatRooms(WebSocketApp):
    def __init__(self) -> None:
        self.rooms: dict[str, int] = {}  # room -> members on this worker

    def on_upgrade(self, request):
        name = request.path_params["name"]
        if len(name) > MAX_ROOM or not name.isprintable():
            return 400, f"a room name is at most {MAX_ROOM} printable characters"
        return None

    def on_open(self, conn, request):
        conn.data = room = request.path_params["name"]
        conn.subscribe(room)
        self.rooms[room] = self.rooms.get(room, 0) + 1
        self.server.publish(room, f"* someone joined {room}")

    def on_message(self, conn, data):
        if not isinstance(data, str) or len(data) > MAX_LINE:
            conn.send(f"* text lines of at most {MAX_LINE} characters only")
            return
        self.server.publish(conn.data, f"{conn.data}: {data}")

    def on_close(self, conn, code, reason):
        room = conn.data
        if room is None:
            return
        self.rooms[room] -= 1
        if not self.rooms[room]:
            del self.rooms[room]
        self.server.publish(room, f"* someone left {room}")


class RoomList:
    def __init__(self, chat: ChatRooms) -> None:
        self.chat = chat

    def on_request(self, request):
        return Response.json(sorted(self.chat.rooms))


def make_router() -> Router:
    """One instance of each per worker: the room list reads its worker's rooms."""
    chat = ChatRooms()
    return Router({"/rooms/{name}": chat, "/rooms": RoomList(chat)})


app = make_router()

if __name__ == "__main__":
    raise SystemExit(main(app, proto="auto"))
