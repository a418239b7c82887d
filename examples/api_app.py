"""A small JSON API, a WebSocket feed and a health check on one port.

    GET    /api/items          the list
    POST   /api/items          {"name": ...} adds one (201), announced on the feed
    GET    /api/items/{id}     one item, or 404
    DELETE /api/items/{id}     removes it (204), announced on the feed
    GET    /health             {"status": "ok", "feed": <listeners on this worker>}
    ws://host/feed             every change, as JSON text messages
    anything else              the static files of --root

The items live in this worker's memory: run it with one worker (the default).

From the repository root:

    python -m reactor --proto auto --app examples.api_app:app
    python examples/api_app.py --port 9501

    curl -d '{"name": "tea"}' http://127.0.0.1:9501/api/items
    curl http://127.0.0.1:9501/api/items
"""

from __future__ import annotations

import itertools
import json

from reactor.app import Response, Router, WebSocketApp
from reactor.server import main

MAX_NAME = 100  # characters of an item name


class Feed(WebSocketApp):
    """Listeners only: what they send is ignored."""

    def on_open(self, conn, request):
        conn.subscribe("changes")

    def on_message(self, conn, data):
        pass

    def announce(self, change: dict) -> None:
        self.server.publish("changes", json.dumps(change))


class Items:
    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.items: dict[int, dict] = {}
        self.ids = itertools.count(1)

    def on_request(self, request):
        item_id = request.path_params.get("id")
        if item_id is None:
            if request.method == "GET":
                return Response.json(list(self.items.values()))
            if request.method == "POST":
                return self.create(request)
        elif request.method in ("GET", "DELETE"):
            return self.one(request.method, item_id)
        return Response.json({"error": "method not allowed"}, status=405,
                             headers=[("Allow", "GET, POST, DELETE")])  # fmt: skip

    def create(self, request):
        try:
            name = json.loads(request.body)["name"]
        except (ValueError, KeyError, TypeError):
            return Response.json({"error": 'send {"name": "..."}'}, status=400)
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            return Response.json({"error": f"a name is 1 to {MAX_NAME} characters"}, status=400)
        item = {"id": next(self.ids), "name": name}
        self.items[item["id"]] = item
        self.feed.announce({"added": item})
        return Response.json(item, status=201, headers=[("Location", f"/api/items/{item['id']}")])

    def one(self, method: str, item_id: str):
        item = self.items.get(int(item_id)) if item_id.isdigit() else None
        if item is None:
            return Response.json({"error": "no such item"}, status=404)
        if method == "DELETE":
            del self.items[item["id"]]
            self.feed.announce({"removed": item["id"]})
            return Response(b"", status=204)
        return Response.json(item)


class Health:
    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def on_request(self, request):
        return Response.json({"status": "ok", "feed": len(self.feed.server.connections)})


def make_router() -> Router:
    feed = Feed()
    items = Items(feed)
    return Router(
        {"/api/items": items, "/api/items/{id}": items, "/feed": feed, "/health": Health(feed)}
    )


app = make_router()

if __name__ == "__main__":
    raise SystemExit(main(app, proto="auto"))
