"""`--proto auto`: static files and WebSocket upgrades on one port."""

from __future__ import annotations

import asyncio
import http.client

import testkit
import websockets
from testkit import REPO, frame, new_key, recv_exactly, upgrade_request


def upgrade_head() -> bytes:
    return upgrade_request(new_key(), host=b"localhost")


def read_head(sock) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"EOF inside a response head: {head!r}"
        head += chunk
    return head


def read_server_frame(sock) -> tuple[int, bytes]:
    fin, rsv, opcode, payload = testkit.read_server_frame(lambda n: recv_exactly(sock, n))
    return (fin << 7) | (rsv << 4) | opcode, payload


def test_page_and_websocket_share_the_port(server_factory):
    server = server_factory("--proto", "auto", "--quiet")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    page = response.read()
    assert response.status == 200
    assert page == (REPO / "html" / "index.html").read_bytes()
    conn.close()

    async def talk() -> list:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00\x01binary")
            return [text, await ws.recv()]

    assert asyncio.run(talk()) == ["hello", b"\x00\x01binary"]


def test_frames_in_the_same_read_as_the_upgrade_are_not_lost(server_factory):
    server = server_factory("--proto", "auto", "--quiet")
    with server.connect() as sock:
        frames = frame(0x1, b"first") + frame(0x2, b"second")
        sock.sendall(upgrade_head() + frames)  # one send: head and two frames
        assert read_head(sock).startswith(b"HTTP/1.1 101 ")
        assert read_server_frame(sock) == (0x81, b"first")
        assert read_server_frame(sock) == (0x82, b"second")


def test_keep_alive_request_then_upgrade_on_one_connection(server_factory):
    server = server_factory("--proto", "auto", "--quiet")
    index = (REPO / "html" / "index.html").read_bytes()
    with server.connect() as sock:
        pipelined = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n" + upgrade_head()
        sock.sendall(pipelined + frame(0x1, b"after a page"))
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert recv_exactly(sock, len(index)) == index
        assert read_head(sock).startswith(b"HTTP/1.1 101 ")
        assert read_server_frame(sock) == (0x81, b"after a page")


def test_bad_upgrade_gets_an_http_answer(server_factory):
    server = server_factory("--proto", "auto", "--quiet")
    with server.connect() as sock:
        sock.sendall(upgrade_head().replace(b"Version: 13", b"Version: 8"))
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 426 ")
        assert b"Sec-WebSocket-Version: 13" in head
