"""The routing examples (examples/rooms.py, api_app.py, cookie_auth.py), each
started as a user would (``--proto auto --app examples.x:app``) and driven
with real clients."""

from __future__ import annotations

import contextlib
import http.client
import json

import pytest
from test_ws_app import Embedded
from testkit import REPO
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def request(server, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def test_rooms_by_path(server_factory):
    server = server_factory("--proto", "auto", "--app", "examples.rooms:app")
    url = f"ws://127.0.0.1:{server.port}/rooms"
    with connect(f"{url}/tea") as ann, connect(f"{url}/tea") as bob, connect(f"{url}/coffee") as cy:
        assert ann.recv(timeout=10) == "* someone joined tea"
        assert ann.recv(timeout=10) == "* someone joined tea"  # bob's
        assert bob.recv(timeout=10) == "* someone joined tea"
        assert cy.recv(timeout=10) == "* someone joined coffee"
        ann.send("hi")
        assert bob.recv(timeout=10) == "tea: hi" and ann.recv(timeout=10) == "tea: hi"
        with pytest.raises(TimeoutError):
            cy.recv(timeout=0.3)  # another room
        response, body = request(server, "GET", "/rooms")
        assert response.status == 200 and json.loads(body) == ["coffee", "tea"]
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{url}/{'x' * 40}")
    assert refused.value.response.status_code == 400


def test_json_api_websocket_feed_and_health_on_one_port(server_factory):
    server = server_factory("--proto", "auto", "--app", "examples.api_app:app")
    with connect(f"ws://127.0.0.1:{server.port}/feed") as feed:
        response, body = request(server, "GET", "/health")
        assert json.loads(body) == {"status": "ok", "feed": 1}
        response, body = request(server, "POST", "/api/items", body=b'{"name": "tea"}')
        assert response.status == 201 and response.getheader("Location") == "/api/items/1"
        assert json.loads(feed.recv(timeout=10)) == {"added": {"id": 1, "name": "tea"}}
        assert json.loads(request(server, "GET", "/api/items")[1]) == [{"id": 1, "name": "tea"}]
        assert request(server, "GET", "/api/items/1")[0].status == 200
        assert request(server, "DELETE", "/api/items/1")[0].status == 204
        assert json.loads(feed.recv(timeout=10)) == {"removed": 1}
        assert request(server, "GET", "/api/items/1")[0].status == 404
        assert request(server, "POST", "/api/items", body=b"not json")[0].status == 400
        assert request(server, "PATCH", "/api/items")[0].status == 405
    response, body = request(server, "GET", "/")  # the static files still answer
    assert response.status == 200 and b"<" in body


def test_cookie_authenticated_upgrade(server_factory):
    server = server_factory("--proto", "auto", "--app", "examples.cookie_auth:app")
    url = f"ws://127.0.0.1:{server.port}/ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(url)
    assert refused.value.response.status_code == 401
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response, _ = request(server, "POST", "/login", body=b"user=ann&password=wrong", headers=form)
    assert response.status == 403
    response, _ = request(server, "POST", "/login", body=b'{"user": "ann", "password": "secret"}',
                          headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status == 204
    set_cookie = response.getheader("Set-Cookie")
    assert "HttpOnly" in set_cookie and set_cookie.startswith("session=")
    token = set_cookie.split(";")[0]
    with connect(url, additional_headers={"Cookie": token}) as ws:
        assert ws.response.headers["Set-Cookie"].split(";")[0] == token  # refreshed by Accept
        assert ws.recv(timeout=10) == "hello ann"
        ws.send("hi")
        assert ws.recv(timeout=10) == "ann: hi"
    assert request(server, "POST", "/logout", headers={"Cookie": token})[0].status == 204
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers={"Cookie": token})


def test_a_router_runs_from_a_script_with_main(tmp_path):
    """``python examples/api_app.py``: reactor.server.main(router) takes the command line."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['api_app.py', '--port', '0']\n"
        f"runpy.run_path({str(REPO / 'examples' / 'api_app.py')!r}, run_name='__main__')\n"
    )
    embedded = Embedded(code, cwd=tmp_path)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", embedded.port, timeout=10)
        conn.request("GET", "/health")
        assert json.loads(conn.getresponse().read()) == {"status": "ok", "feed": 0}
    finally:
        assert embedded.stop() == 0


def test_a_router_is_served_by_serve(tmp_path):
    """reactor.server.serve(Router(...)) with a class per route (one instance per worker)."""
    code = (
        "from reactor.app import Response, Router, WebSocketApp\n"
        "from reactor.server import serve\n"
        "class Hello:\n"
        "    def on_request(self, request):\n"
        "        return Response('hello ' + request.path_params['who'])\n"
        "class Echo(WebSocketApp):\n"
        "    pass\n"
        "serve(Router({'/hello/{who}': Hello, '/echo': Echo}), port=0, proto='auto')\n"
    )
    embedded = Embedded(code, cwd=tmp_path)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", embedded.port, timeout=10)
        conn.request("GET", "/hello/ann")
        assert conn.getresponse().read() == b"hello ann"
        with connect(f"ws://127.0.0.1:{embedded.port}/echo") as ws:
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
    finally:
        assert embedded.stop() == 0


def test_rooms_span_workers(server_factory):
    """--workers 2: each worker has its own Router instances; a room is a topic (every
    worker gets every publish), so its members hear each other whichever worker
    accepted them."""
    server = server_factory(
        "--proto", "auto", "--workers", "2", "--app", "examples.rooms:app", workers=2
    )
    url = f"ws://127.0.0.1:{server.port}/rooms/tea"
    with contextlib.ExitStack() as stack:
        members = [stack.enter_context(connect(url)) for _ in range(16)]  # both workers
        members[0].send("hello")
        for member in members:
            line = member.recv(timeout=10)
            while line.startswith("* "):  # joins, as many as came after its own
                line = member.recv(timeout=10)
            assert line == "tea: hello"
    pids = {line.split()[2] for line in server.wait_for_log("reactor.access.*101", count=16)}
    assert len(pids) == 2, "all members landed on one worker: the test proves nothing"
