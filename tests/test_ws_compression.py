"""permessage-deflate over real sockets: `python -m reactor --proto ws
--compression ...` against the `websockets` client (an independent RFC 7692
implementation) and raw frames built here with zlib, plus the handshake's
C fast path and full check deciding together.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import zlib

import pytest
from testkit import ServerProcess, recv_until_eof
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect

from reactor.http.request import RequestParser
from reactor.ws import deflate
from reactor.ws import handshake as hs

TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1
MAX_MESSAGE = 1 << 20  # the servers' --max-message-size here

MESSAGES = [
    "short",  # under the threshold: sent plain
    '{"user": "ada", "text": "hello", "tags": ["a", "b"]}' * 40,  # JSON-like
    "ünïcödé " * 500,
    bytes(range(256)) * 64,  # 16 KiB, barely compressible
    b"\0" * 300_000,  # spans many reads once inflated
    "",
]


@pytest.fixture(scope="module", params=["shared", "full"])
def server(request):
    proc = ServerProcess(
        ["--proto", "ws", "--compression", request.param, "--max-message-size", str(MAX_MESSAGE)]
    )
    proc.mode = request.param
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def plain_server():
    proc = ServerProcess(["--proto", "ws", "--compression", "off"])
    yield proc
    proc.stop()


def ws_client(port: int, **kwargs):
    kwargs.setdefault("max_size", None)
    return connect(f"ws://127.0.0.1:{port}/", proxy=None, open_timeout=10, **kwargs)


def echo_all(ws) -> None:
    for message in MESSAGES * 2:  # twice: context kept (or not) across messages
        ws.send(message)
        assert ws.recv(timeout=10) == message


# ---- the websockets client ------------------------------------------------------------------


def test_websockets_defaults_negotiate_and_echo(server):
    with ws_client(server.port) as ws:  # compression="deflate" is its default
        answer = ws.response.headers["Sec-WebSocket-Extensions"]
        if server.mode == "shared":
            assert answer == (
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=9"
            )
        else:
            assert answer == "permessage-deflate; client_max_window_bits=15"
        echo_all(ws)


@pytest.mark.parametrize("server_reset", [False, True])
@pytest.mark.parametrize("client_reset", [False, True])
@pytest.mark.parametrize("server_bits", [None, 9, 12, 15])
@pytest.mark.parametrize("client_bits", [None, True, 9, 15])
def test_every_parameter_combination_of_websockets(
    server, server_reset, client_reset, server_bits, client_bits
):
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=server_reset,
        client_no_context_takeover=client_reset,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )
    with ws_client(server.port, compression=None, extensions=[factory]) as ws:
        answer = ws.response.headers["Sec-WebSocket-Extensions"]
        assert answer.startswith("permessage-deflate")
        assert ("server_no_context_takeover" in answer) == (server.mode == "shared" or server_reset)
        echo_all(ws)


def test_without_compression_nothing_is_answered(server, plain_server):
    with ws_client(server.port, compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        echo_all(ws)
    with ws_client(plain_server.port) as ws:  # offered, but the server has it off
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        echo_all(ws)


# ---- raw frames ---------------------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def client_deflate(payload: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


class RawClient:
    def __init__(self, port: int, offer: str | None = "permessage-deflate") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16))
        extension = b"" if offer is None else f"Sec-WebSocket-Extensions: {offer}\r\n".encode()
        self.sock.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n" + extension + b"\r\n"
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.head = head.decode("latin-1").lower()

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("EOF")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = self.take(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.take(8))
        return b0, self.take(n)

    def expect_close(self, code: int) -> None:
        b0, payload = self.recv_frame()
        assert b0 == 0x88, (hex(b0), payload[:40])
        assert struct.unpack("!H", payload[:2])[0] == code, payload
        assert self.buf == b""
        try:
            assert recv_until_eof(self.sock) == b""
        except ConnectionResetError:
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(server):
    clients = []

    def make(offer: str | None = "permessage-deflate") -> RawClient:
        clients.append(RawClient(server.port, offer))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_raw_compressed_echo_sets_rsv1_only_above_the_threshold(raw):
    client = raw()
    assert "sec-websocket-extensions: permessage-deflate" in client.head
    text = b"compress me " * 50
    client.sock.sendall(frame(0x1, client_deflate(text), rsv1=True) + frame(0x1, b"tiny"))
    b0, payload = client.recv_frame()
    assert b0 == 0xC1  # FIN | RSV1 | text
    assert zlib.decompressobj(-15).decompress(payload + TAIL) == text
    assert client.recv_frame() == (0x81, b"tiny")  # under 128 bytes: plain


def test_raw_empty_compressed_message(raw):
    client = raw()
    client.sock.sendall(frame(0x2, b"\x00", rsv1=True))
    assert client.recv_frame() == (0x82, b"")


def test_raw_compressed_message_over_many_fragments(raw):
    text = b"a fragmented compressed message " * 300
    data = client_deflate(text)
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    wire = frame(0x1, pieces[0], fin=False, rsv1=True)
    wire += b"".join(frame(0x0, piece, fin=False) for piece in pieces[1:-1])
    wire += frame(0x0, pieces[-1])
    client = raw()
    client.sock.sendall(wire)
    b0, payload = client.recv_frame()
    assert b0 == 0xC1 and zlib.decompressobj(-15).decompress(payload + TAIL) == text


def test_raw_rsv1_on_a_control_frame_is_1002(raw):
    client = raw()
    client.sock.sendall(frame(0x9, b"ping", rsv1=True))
    client.expect_close(1002)


def test_raw_rsv1_on_a_continuation_is_1002(raw):
    data = client_deflate(b"two fragments " * 40)
    client = raw()
    client.sock.sendall(
        frame(0x1, data[:20], fin=False, rsv1=True) + frame(0x0, data[20:], rsv1=True)
    )
    client.expect_close(1002)


def test_raw_rsv1_without_the_extension_is_1002(raw):
    client = raw(offer=None)
    assert "sec-websocket-extensions" not in client.head
    client.sock.sendall(frame(0x1, client_deflate(b"x" * 200), rsv1=True))
    client.expect_close(1002)


def test_raw_zip_bomb_is_1009(raw, server):
    bomb = client_deflate(b"\0" * (10 << 20))  # 10 MiB inflated, ~10 KB sent
    assert len(bomb) < 12_000
    client = raw()
    client.sock.sendall(frame(0x2, bomb, rsv1=True))
    client.expect_close(1009)
    with ws_client(server.port) as ws:  # the server is fine
        ws.send("still here " * 20)
        assert ws.recv(timeout=10) == "still here " * 20


def test_raw_corrupt_compressed_data_is_1007(raw):
    client = raw()
    client.sock.sendall(frame(0x2, b"\xff\xfe\xfd\xfc", rsv1=True))
    client.expect_close(1007)


# ---- the handshake: the C fast path declines what must be weighed ---------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3


def head_with(*fields: str) -> bytes:
    lines = [
        "GET / HTTP/1.1",
        "Host: h",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *fields,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def both(head: bytes, compression: deflate.Compression):
    request, end = RequestParser().parse(bytearray(head))
    fast = hs.accept_usual(
        request.method, request.http_version, head, end, extensions=compression.enabled
    )
    full = hs.validate(
        request.method, request.http_version, request.headers, compression=compression
    )
    return fast, full


@pytest.mark.skipif(hs._accept_upgrade is None, reason="the C module is not built")
def test_the_fast_path_declines_an_offer_only_when_compression_is_on():
    offer = head_with("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    fast, full = both(offer, deflate.Compression("shared"))
    assert fast is None  # weighed by validate()
    assert b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; " in (
        full.response
    )
    assert full.extension is not None
    fast, full = both(offer, deflate.Compression("off"))
    assert fast == full and full.extension is None  # ignored, as before
    assert b"Extensions" not in full.response
    fast, full = both(head_with(), deflate.Compression("shared"))  # no offer: the fast path
    assert fast is not None and fast == full


# ---- broadcast: compressed once per shared compressor, plain for the others -------------------

BROADCAST_APP = """
from reactor.app import WebSocketApp


class Shout(WebSocketApp):
    def on_message(self, conn, data):
        conn.send(str(self.server.broadcast(data)))


shout = Shout()
"""


@pytest.mark.parametrize("mode", ["shared", "full"])
def test_broadcast_reaches_plain_and_compressed_clients(
    server_factory, tmp_path, monkeypatch, mode
):
    (tmp_path / "shoutapp.py").write_text(BROADCAST_APP)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    server = server_factory("--proto", "ws", "--compression", mode, "--app", "shoutapp:shout")
    factories = [
        None,
        ClientPerMessageDeflateFactory(client_max_window_bits=True),
        ClientPerMessageDeflateFactory(client_no_context_takeover=True),
        ClientPerMessageDeflateFactory(server_max_window_bits=10),
    ]
    text = '{"event": "news", "body": "' + "all the news that fits " * 20 + '"}'
    inflater = zlib.decompressobj(-15)  # the raw client's, kept across messages
    with contextlib.ExitStack() as stack:
        raw_plain = stack.enter_context(contextlib.closing(RawClient(server.port, None)))
        raw_deflate = stack.enter_context(contextlib.closing(RawClient(server.port)))
        clients = [
            stack.enter_context(
                ws_client(server.port, compression=None, extensions=[f] if f else None)
            )
            for f in factories
        ]
        for round_ in range(3):  # kept contexts (full mode) must stay in step
            message = f"{round_} {text}"
            clients[round_].send(message)
            for ws in clients:
                assert ws.recv(timeout=10) == message
            assert clients[round_].recv(timeout=10) == str(len(clients) + 2)
            assert raw_plain.recv_frame() == (0x81, message.encode())
            b0, payload = raw_deflate.recv_frame()
            assert b0 == 0xC1  # compressed for the client that negotiated it
            assert inflater.decompress(payload + TAIL) == message.encode()


# ---- memory: an idle connection with the extension ------------------------------------------


def open_compressed(port: int, count: int, offer: str) -> list[RawClient]:
    """``count`` connections that negotiated ``offer`` and echoed one compressed
    message each (so whatever a connection allocates lazily exists)."""
    message = b'{"user": "ada", "text": "hello there"} ' * 20
    clients = []
    for _ in range(count):
        client = RawClient(port, offer)
        client.sock.sendall(frame(0x1, client_deflate(message), rsv1=True))
        b0, _ = client.recv_frame()
        assert b0 == 0xC1
        clients.append(client)
    return clients


def test_idle_connection_in_shared_mode_costs_at_most_512_bytes(server_factory):
    """Server RSS growth per idle connection whose client keeps no context."""
    from testkit import rss_bytes, wait_until

    count, offer = 3000, "permessage-deflate; client_no_context_takeover"
    server = server_factory("--proto", "ws", "--compression", "shared")
    for client in open_compressed(server.port, 200, offer):  # warm every path once
        client.close()
    assert wait_until(lambda: len(os.listdir(f"/proc/{server.pid}/fd")) < 20)
    before = rss_bytes(server.pid)
    clients = open_compressed(server.port, count, offer)
    per_connection = (rss_bytes(server.pid) - before) / count
    for client in clients:
        client.close()
    print(f"idle compressed connection (shared): {per_connection:.0f} B of server RSS")
    assert per_connection <= 512, f"{per_connection:.0f} B per idle connection"


# ---- the benchmark runs (bench/ws_compression.py, smoke size) ------------------------------


def test_compression_bench_smoke(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "ws_compression.py"
    out = tmp_path / "results.json"
    subprocess.run(
        [sys.executable, str(script), "--quick", "--servers", "ours-shared", "--idle", "50",
         "--duration", "0.5", "--json", str(out)],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert [r["scenario"] for r in results] == ["idle", "idle", "echo"]
    echo = results[-1]
    assert echo["bad_replies"] == 0 and echo["messages_per_s"] > 0
    assert "server_no_context_takeover" in echo["answer"]


def test_a_message_inflating_past_the_read_budget_is_delivered_in_order(server_factory):
    """3 MiB from one small frame: the server inflates it 1 MiB per loop turn
    (reading paused meanwhile), then answers the ping that followed it."""
    server = server_factory("--proto", "ws", "--max-message-size", str(8 << 20))
    text = b"budgeted line of text " * ((3 << 20) // 22)
    client = RawClient(server.port)
    try:
        client.sock.sendall(frame(0x1, client_deflate(text), rsv1=True) + frame(0x9, b"after"))
        b0, payload = client.recv_frame()
        assert b0 == 0xC1
        assert zlib.decompressobj(-15).decompress(payload + TAIL) == text
        assert client.recv_frame() == (0x8A, b"after")
        client.sock.sendall(frame(0x1, b"still reading"))  # reading resumed
        assert client.recv_frame() == (0x81, b"still reading")
    finally:
        client.close()
