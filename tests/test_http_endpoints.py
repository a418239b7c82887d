"""HTTP endpoints beside the static files (--proto auto and http), a Router of
applications, request bodies and the handshake API, against real clients:
http.client, curl (chunked upload, --data-binary @file, Expect: 100-continue),
aiohttp's client, the websockets client, and raw sockets for pipelining."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import time

import pytest
from testkit import accept_for, new_key, recv_until_eof
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

APP = """
import asyncio
import hashlib

from reactor.app import Accept, Response, Router, WebSocketApp


class Api(WebSocketApp):
    def on_request(self, request):
        what = request.path_params["what"]
        if what == "echo":
            return Response.json({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": request.body.decode("latin-1"),
                "cookies": request.cookies,
                "params": request.path_params,
                "remote": request.remote_address[0],
                "type": request.headers.get("content-type"),
            })
        if what == "sha":
            return Response(hashlib.sha256(request.body).hexdigest() + f" {len(request.body)}")
        if what == "raise":
            raise RuntimeError("on purpose")
        if what == "junk":
            return 42
        if what == "bad-header":
            return Response(b"x", headers=[("Content-Length", "5")])
        if what == "created":
            return Response(b"made", status=201, headers={"Location": "/api/1"})
        if what == "nothing":
            return Response(b"", status=204)
        return None  # the static files answer


class Slow(WebSocketApp):
    async def on_request(self, request):
        await asyncio.sleep(float(request.query.get("s", ["0"])[0]))
        return Response(f"slow {request.path_params['n']}")


class Room(WebSocketApp):
    def on_upgrade(self, request):
        if request.cookies.get("sid") != "ok":
            return 401, "login first"
        if request.query.get("proto") == ["unoffered"]:
            return Accept(subprotocol="never-offered")
        offered = request.subprotocols
        chosen = offered[-1] if offered else None
        return Accept(headers=[("Set-Cookie", "seen=1")], subprotocol=chosen)

    def on_open(self, conn, request):
        conn.data = request.path_params["name"]
        conn.subscribe(conn.data)

    def on_message(self, conn, data):
        self.server.publish(conn.data, f"{conn.data}: {data}")


class Health:
    def on_request(self, request):
        return Response.json({"ok": True, "connections": len(room.server.connections)})


class AsyncEcho(WebSocketApp):
    async def on_message(self, conn, data):
        await asyncio.sleep(0)
        conn.send(f"async {data} {len(self.server.connections)}")


class Pooled(WebSocketApp):
    def on_message(self, conn, data):
        if data.startswith("broadcast "):
            self.server.broadcast(data)
            return
        future = self.server.run_in_thread(str.upper, data)
        future.add_done_callback(lambda done: conn.send(done.result()))


room = Room()
app = Router(
    {
        "/api/{what}": Api(),
        "/slow/{n}": Slow(),
        "/rooms/{name}": room,
        "/health": Health(),
        "/async": AsyncEcho,
        "/pool": Pooled,
    }
)


class Plain(WebSocketApp):
    def on_request(self, request):
        if request.path == "/hello":
            return Response("hello " + request.method)
        return None


class PlainAsync:
    async def on_request(self, request):
        await asyncio.sleep(0)
        if request.path == "/hello":
            return Response("async hello " + request.method)
        return None
"""

INDEX = b"<h1>static</h1>"


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "endpoints_app.py").write_text(APP)
    root = tmp_path / "root"
    root.mkdir()
    (root / "index.html").write_bytes(INDEX)
    return tmp_path


@pytest.fixture
def server(server_factory, app_dir):
    return server_factory(
        "--proto", "auto", "--root", str(app_dir / "root"), "--app", "endpoints_app:app",
        "--max-body-size", "300000", "--header-timeout", "2",
        "--forwarded-allow-ips", "127.0.0.1", cwd=app_dir,
    )  # fmt: skip


def get_json(conn: http.client.HTTPConnection, method: str, url: str, **kw) -> dict:
    conn.request(method, url, **kw)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type") == "application/json"
    return json.loads(response.read())


def test_a_request_object_in_full(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    got = get_json(
        conn, "GET", "/api/echo?a=1&a=2&b=%26", headers={"Cookie": "sid=abc; theme=dark"}
    )
    assert got == {
        "method": "GET",
        "path": "/api/echo",
        "query": {"a": ["1", "2"], "b": ["&"]},
        "body": "",
        "cookies": {"sid": "abc", "theme": "dark"},
        "params": {"what": "echo"},
        "remote": "127.0.0.1",
        "type": None,
    }


def test_remote_address_behind_a_trusted_proxy(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    assert get_json(conn, "GET", "/api/echo", headers=forwarded)["remote"] == "203.0.113.9"


def test_every_method_reaches_on_request_on_one_keep_alive_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.connect()
    sock = conn.sock
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "GET"):
        got = get_json(conn, method, "/api/echo", body=b"data of " + method.encode(),
                       headers={"Content-Type": "text/plain"})  # fmt: skip
        assert (got["method"], got["body"], got["type"]) == (
            method,
            f"data of {method}",
            "text/plain",
        )
    conn.request("HEAD", "/api/echo")
    head = conn.getresponse()
    assert head.status == 200 and int(head.getheader("Content-Length")) > 0
    assert head.read() == b""  # HEAD: no body, the length it would have
    conn.request("GET", "/")  # on_request returned None: the static file
    static = conn.getresponse()
    assert (static.status, static.read()) == (200, INDEX)
    conn.request("GET", "/api/created")
    created = conn.getresponse()
    assert (created.status, created.getheader("Location"), created.read()) == (
        201,
        "/api/1",
        b"made",
    )
    conn.request("DELETE", "/api/nothing")
    nothing = conn.getresponse()
    assert (nothing.status, nothing.getheader("Content-Length"), nothing.read()) == (204, None, b"")
    assert conn.sock is sock  # all on one connection


def test_a_post_the_endpoints_leave_to_the_static_files_is_405(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/index.html", body=b"x")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "GET, HEAD"
    response.read()
    conn.request("GET", "/api/echo")  # the connection persists
    assert conn.getresponse().status == 200


@pytest.mark.parametrize(
    ("what", "logged"),
    [
        ("raise", "application on_request failed for /api/raise; answering 500"),
        ("junk", "returned 42; it must return a reactor.app.Response"),
        ("bad-header", "Content-Length is set by the server; answering 500"),
    ],
)
def test_an_application_mistake_is_a_500_logged_once_and_the_connection_persists(
    server, what, logged
):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", f"/api/{what}", body=b"abc")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 500 and b"internal error" in body and len(body) < 300
    conn.request("GET", "/api/echo")
    assert conn.getresponse().status == 200  # well framed: the connection goes on
    server.wait_for_log("reactor.access.*GET /api/echo")
    assert server.log_text().count(logged) == 1
    if what == "raise":
        assert server.log_text().count("RuntimeError: on purpose") == 1


def test_http_client_chunked_upload(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    parts = [b"a" * 1000, b"b" * 70000, b"c"]
    conn.request("POST", "/api/sha", body=iter(parts), encode_chunked=True)
    response = conn.getresponse()
    data = b"".join(parts)
    assert response.read().decode() == f"{hashlib.sha256(data).hexdigest()} {len(data)}"


# ---- curl ---------------------------------------------------------------------------

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def curl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-s", "--max-time", "20", *args], input=data, capture_output=True, timeout=30
    )


@needs_curl
def test_curl_chunked_upload_from_stdin(server):
    data = bytes(range(256)) * 800  # 200 KiB through a pipe: curl sends it chunked
    done = curl("-v", "-T", "-", f"http://127.0.0.1:{server.port}/api/sha", data=data)
    assert b"Transfer-Encoding: chunked" in done.stderr
    assert done.stdout.decode() == f"{hashlib.sha256(data).hexdigest()} {len(data)}"


@needs_curl
def test_curl_data_binary_from_a_file_with_expect_100_continue(server, tmp_path):
    data = b"\x00\xff binary \r\n" * 10000
    (tmp_path / "upload.bin").write_bytes(data)
    done = curl(
        "-v", "-H", "Expect: 100-continue", "--data-binary", f"@{tmp_path / 'upload.bin'}",
        f"http://127.0.0.1:{server.port}/api/sha",
    )  # fmt: skip
    assert b"HTTP/1.1 100 Continue" in done.stderr
    assert done.stdout.decode() == f"{hashlib.sha256(data).hexdigest()} {len(data)}"


@needs_curl
def test_curl_body_over_the_limit_is_413_before_it_is_sent(server, tmp_path):
    (tmp_path / "big.bin").write_bytes(b"x" * 300001)
    done = curl(
        "-v", "-H", "Expect: 100-continue", "--data-binary", f"@{tmp_path / 'big.bin'}",
        "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{server.port}/api/sha",
    )  # fmt: skip
    assert done.stdout == b"413"
    assert b"100 Continue" not in done.stderr  # refused on the head: the body never left


# ---- raw sockets: limits, timeouts, pipelining -----------------------------------


def test_a_content_length_over_the_limit_is_413_at_once_then_close(server):
    with server.connect() as sock:
        sock.sendall(b"POST /api/sha HTTP/1.1\r\nHost: x\r\nContent-Length: 300001\r\n\r\n")
        answer = recv_until_eof(sock)  # not a byte of the body was sent
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer


@pytest.mark.parametrize(
    ("chunks", "status"),
    [
        (b"zz\r\n", b"400"),
        (b"5\r\nhelloXX", b"400"),
        (b"493E1\r\n", b"413"),  # 300001 announced by a chunk size
        (b"4\r\nabcd\r\n" + b"1\r\nx\r\n" * 10 + b"FFFFFFFFFFFFFFFFFF\r\n", b"413"),
    ],
)
def test_bad_or_too_large_chunks_are_answered_then_closed(server, chunks, status):
    with server.connect() as sock:
        sock.sendall(b"POST /api/sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(chunks)
        answer = recv_until_eof(sock)
    assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 3\r\nContent-Length: 3\r\n",
    ],
)
def test_smuggling_signatures_stay_400(server, fields):
    with server.connect() as sock:
        sock.sendall(b"POST /api/sha HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\nabc")
        assert recv_until_eof(sock).startswith(b"HTTP/1.1 400 ")


def test_an_unknown_expectation_is_417(server):
    with server.connect() as sock:
        sock.sendall(
            b"POST /api/sha HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: magic\r\n\r\n"
        )
        assert recv_until_eof(sock).startswith(b"HTTP/1.1 417 ")


def test_a_body_that_stops_arriving_is_408_after_the_header_timeout(server):
    with server.connect(timeout=15) as sock:
        sock.sendall(b"POST /api/sha HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        started = time.monotonic()
        answer = recv_until_eof(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request body not received in time" in answer
    assert time.monotonic() - started >= 1  # --header-timeout 2, swept every half second


def responses(data: bytes) -> list[tuple[int, bytes]]:
    """Split pipelined HTTP responses (Content-Length framed) up to a 101."""
    out, pos = [], 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos) + 4
        head = data[pos:end]
        status = int(head[9:12])
        if status == 101:
            out.append((101, head))
            break
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        out.append((status, data[end : end + length]))
        pos = end + length
    return out


def test_pipelined_endpoint_static_async_and_upgrade_requests_are_answered_in_order(server):
    key = new_key()
    pipeline = (
        b"POST /api/sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"GET /slow/1?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"  # a coroutine that takes its time
        b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
        b"PUT /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /slow/2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /rooms/lobby HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\nCookie: sid=ok\r\n\r\n"
    )
    with server.connect() as sock:
        sock.sendall(pipeline)
        data = b""
        while b" 101 " not in data or not data.endswith(b"\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    got = responses(data)
    assert [status for status, _ in got] == [200, 200, 200, 200, 200, 101]
    assert got[0][1].decode() == f"{hashlib.sha256(b'abc').hexdigest()} 3"
    assert got[1][1] == b"slow 1" and got[2][1] == INDEX and got[4][1] == b"slow 2"
    assert json.loads(got[3][1])["body"] == "hi"
    assert b"Sec-WebSocket-Accept: " + accept_for(key) in got[5][1]
    assert b"Set-Cookie: seen=1" in got[5][1]


# ---- WebSocket routes and the handshake API ---------------------------------------


def test_rooms_by_path_publish_to_their_own_room_only(server):
    url = f"ws://127.0.0.1:{server.port}/rooms"
    cookie = {"Cookie": "sid=ok"}
    with (
        connect(f"{url}/red", additional_headers=cookie) as red1,
        connect(f"{url}/red", additional_headers=cookie) as red2,
        connect(f"{url}/blue", additional_headers=cookie) as blue,
    ):
        red1.send("hello")
        assert red2.recv(timeout=10) == "red: hello"
        assert red1.recv(timeout=10) == "red: hello"
        blue.send("ping")
        assert blue.recv(timeout=10) == "blue: ping"
        with pytest.raises(TimeoutError):
            red2.recv(timeout=0.3)  # nothing of the blue room
        health = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        assert get_json(health, "GET", "/health") == {"ok": True, "connections": 3}


def test_routed_apps_keep_async_callbacks_threads_and_broadcast(server):
    base = f"ws://127.0.0.1:{server.port}"
    with (
        connect(f"{base}/async") as coroutine,
        connect(f"{base}/pool") as pooled,
        connect(f"{base}/rooms/r", additional_headers={"Cookie": "sid=ok"}) as member,
    ):
        coroutine.send("hi")
        assert coroutine.recv(timeout=10) == "async hi 1"  # its own app's connections only
        pooled.send("shout")
        assert pooled.recv(timeout=10) == "SHOUT"
        pooled.send("broadcast all")  # every WebSocket connection of the server
        for ws in (coroutine, pooled, member):
            assert ws.recv(timeout=10) == "broadcast all"


def test_accept_adds_headers_and_chooses_an_offered_subprotocol(server):
    with connect(
        f"ws://127.0.0.1:{server.port}/rooms/x",
        additional_headers={"Cookie": "sid=ok"},
        subprotocols=["v1", "v2"],
    ) as ws:
        assert ws.subprotocol == "v2"  # the application's choice, not a configured list
        assert ws.response.headers["Set-Cookie"] == "seen=1"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/nowhere", {"Cookie": "sid=ok"}, 404),  # no route
        ("/health", {"Cookie": "sid=ok"}, 404),  # an HTTP-only app: no on_message
        ("/rooms/x", {}, 401),  # the application's refusal
        ("/rooms/x?proto=unoffered", {"Cookie": "sid=ok"}, 500),  # an Accept it cannot honour
    ],
)
def test_upgrades_the_routes_do_not_accept(server, path, headers, status):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}{path}", additional_headers=headers, open_timeout=10)
    assert refused.value.response.status_code == status
    if status == 500:
        server.wait_for_log("subprotocol 'never-offered' was not offered by the client")


# ---- aiohttp's client, --proto http, --proto ws --------------------------------------


def test_aiohttp_client(server):
    aiohttp = pytest.importorskip("aiohttp")

    async def exchange():
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{server.port}"
            async with session.post(f"{base}/api/echo?x=1", json={"a": 1}) as response:
                posted = await response.json()
            async with session.get(f"{base}/health") as response:
                health = await response.json()
            return posted, health

    posted, health = asyncio.run(exchange())
    assert posted["body"] == '{"a": 1}' and posted["type"] == "application/json"
    assert posted["query"] == {"x": ["1"]} and health["ok"] is True


@pytest.mark.parametrize(("app", "prefix"), [("Plain", b""), ("PlainAsync", b"async ")])
def test_proto_http_serves_an_apps_endpoints(server_factory, app_dir, app, prefix):
    server = server_factory(
        "--proto", "http", "--root", str(app_dir / "root"), "--app", f"endpoints_app:{app}",
        cwd=app_dir,
    )  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("PATCH", "/hello", body=b"x")
    assert conn.getresponse().read() == prefix + b"hello PATCH"
    conn.request("GET", "/")
    assert conn.getresponse().read() == INDEX


def test_proto_ws_logs_every_handshake_outcome(server_factory, app_dir):
    server = server_factory("--proto", "ws", "--app", "endpoints_app:app", cwd=app_dir)
    with connect(f"ws://127.0.0.1:{server.port}/rooms/a", additional_headers={"Cookie": "sid=ok"}):
        pass
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.port}/nowhere")
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.port}/rooms/a")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_until_eof(sock).startswith(b"HTTP/1.1 426 ")
    for line in ('"GET /rooms/a HTTP/1.1" 101', '"GET /nowhere HTTP/1.1" 404',
                 '"GET /rooms/a HTTP/1.1" 401', '"GET /plain HTTP/1.1" 426'):  # fmt: skip
        server.wait_for_log("reactor.access: 127.0.0.1 .*" + line.replace("?", r"\?"))
