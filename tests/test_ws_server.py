"""`python -m reactor --proto ws` over real sockets.

Two kinds of peers: the `websockets` library (an independent, conforming
client) for the happy paths, and raw sockets with a frame builder written
here (not the code under test) for byte-exact violations: each asserts the
exact close code on the wire and that TCP is closed afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import signal
import socket
import struct
import threading
import time

import pytest
from testkit import (
    ServerProcess,
    accept_for,
    close_frame,
    frame,
    new_key,
    read_server_frame,
    recv_until_eof,
    rss_bytes,
    segments_in,
    upgrade_request,
    wait_until,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

ZERO_KEY = b"\0\0\0\0"  # a valid masking key that leaves bulk payloads as they are


class Raw:
    """A raw-socket WebSocket client that reads server frames byte-exactly."""

    def __init__(self, port: int, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.key = new_key()

    def request(self, *, path: bytes = b"/", extra: bytes = b"", version: bytes = b"13") -> bytes:
        return upgrade_request(self.key, path=path, extra=extra, version=version)

    def handshake(self, *, after: bytes = b"") -> None:
        self.sock.sendall(self.request() + after)
        status, headers = self.head()
        assert status == 101, (status, headers)
        assert headers["sec-websocket-accept"] == accept_for(self.key).decode()

    def _fill(self, need: int) -> None:
        while len(self.buf) < need:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"EOF with {len(self.buf)} of {need} bytes")
            self.buf += chunk

    def _take(self, size: int) -> bytes:
        self._fill(size)
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"EOF before the response head: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def body(self, headers: dict[str, str]) -> bytes:
        return self._take(int(headers.get("content-length", 0)))

    def recv_frame(self) -> tuple[bool, int, bytes]:
        fin, rsv, opcode, payload = read_server_frame(self._take)
        assert not rsv, "no RSV bits without an extension"
        return fin, opcode, payload

    def recv_close(self) -> tuple[int | None, bytes]:
        fin, opcode, payload = self.recv_frame()
        assert (fin, opcode) == (True, 0x8), (opcode, payload[:60])
        if not payload:
            return None, b""
        return struct.unpack("!H", payload[:2])[0], payload[2:]

    def expect_eof(self) -> None:
        assert self.buf == b"", self.buf[:60]
        try:
            assert recv_until_eof(self.sock) == b""
        except ConnectionResetError:
            pass  # a reset after our unread bytes is still the end

    def close(self) -> None:
        self.sock.close()


def client(port: int, path: str = "/", **kwargs):
    kwargs.setdefault("max_size", None)
    return connect(
        f"ws://127.0.0.1:{port}{path}", proxy=None, compression=None, open_timeout=10, **kwargs
    )


@pytest.fixture
def stack_client():
    """Connect outside a with block; every client is closed after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda *args, **kwargs: stack.enter_context(client(*args, **kwargs))


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(["--proto", "ws", "--subprotocol", "chat", "--subprotocol", "superchat"])
    yield proc
    proc.stop()


@pytest.fixture
def raw(server):
    clients = []

    def make(**kwargs) -> Raw:
        conn = Raw(server.port, **kwargs)
        clients.append(conn)
        return conn

    yield make
    for conn in clients:
        conn.close()


# ---- the websockets library as the peer ------------------------------------------------


def test_messages_of_every_length_encoding_echo_byte_exact(server):
    with client(server.port) as ws:
        for size in (0, 1, 125, 126, 65535, 65536, 10 * 1024 * 1024):
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv() == data, size
        for text in ("", "hello", "é€😀" * 1000, "x" * 65536):
            ws.send(text)
            assert ws.recv() == text


def test_fragmented_messages_are_reassembled(server):
    with client(server.port) as ws:
        ws.send(["frag", "mented ", "text", ""])
        assert ws.recv() == "fragmented text"
        pieces = [os.urandom(n) for n in (1, 0, 70000, 3)]
        ws.send(pieces)
        assert ws.recv() == b"".join(pieces)


def test_ping_gets_a_pong_with_the_same_payload(server):
    with client(server.port) as ws:
        for payload in (b"", b"are you there", os.urandom(125)):
            assert ws.ping(payload).wait(5)


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_close_code_is_echoed(server, code):
    with client(server.port) as ws:
        ws.send("before")
        assert ws.recv() == "before"
        ws.close(code, "bye")
        assert ws.close_code == code  # the server's answer carries our code (§5.5.1)


def test_subprotocol_server_preference_and_none_when_none_match(server):
    with client(server.port, subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"  # the server lists chat first
    with client(server.port, subprotocols=["superchat"]) as ws:
        assert ws.subprotocol == "superchat"
    with client(server.port, subprotocols=["other"]) as ws:
        assert ws.subprotocol is None
        ws.send("still works")
        assert ws.recv() == "still works"


def test_origin_allow_list(server_factory):
    server = server_factory("--proto", "ws", "--origin", "https://good.example")
    with client(server.port, origin="https://good.example") as ws:
        ws.send("ok")
        assert ws.recv() == "ok"
    with pytest.raises(InvalidStatus) as info:
        client(server.port, origin="https://evil.example")
    assert info.value.response.status_code == 403
    raw = Raw(server.port)
    raw.sock.sendall(raw.request())  # no Origin at all: not on the list
    assert raw.head()[0] == 403
    raw.close()
    lenient = server_factory("--proto", "ws", "--origin", "https://good.example", "--origin", "")
    raw = Raw(lenient.port)
    raw.handshake()  # '' admits clients without an Origin header (non-browsers)
    raw.close()
    raw = Raw(lenient.port)
    raw.sock.sendall(raw.request(extra=b"Origin: https://evil.example\r\n"))
    assert raw.head()[0] == 403
    raw.close()


def test_max_message_size_closes_with_1009(server_factory):
    server = server_factory("--proto", "ws", "--max-message-size", "1000")
    with client(server.port) as ws:
        ws.send(b"x" * 1000)  # exactly the limit is fine
        assert ws.recv() == b"x" * 1000
        with pytest.raises(ConnectionClosed):  # the close may even beat the 2nd fragment
            ws.send(["y" * 600, "y" * 600])  # fragments add up past it
            ws.recv()
        assert ws.close_code == 1009
    raw = Raw(server.port)
    raw.handshake()
    raw.sock.sendall(frame(0x2, b"", length=1001)[:14])  # the header alone is enough
    assert raw.recv_close()[0] == 1009
    raw.expect_eof()
    raw.close()


# ---- HTTP answers before the upgrade ----------------------------------------------------


@pytest.mark.parametrize("version", [b"8", b"14", None])
def test_wrong_or_missing_version_gets_426(raw, version):
    conn = raw()
    request = conn.request(version=version or b"13")
    if version is None:
        request = request.replace(b"Sec-WebSocket-Version: 13\r\n", b"")
    conn.sock.sendall(request)
    status, headers = conn.head()
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    conn.body(headers)
    conn.expect_eof()


def test_plain_http_request_gets_426_with_upgrade(server):
    http_conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    http_conn.request("GET", "/index.html")
    response = http_conn.getresponse()
    assert response.status == 426
    assert response.getheader("Upgrade") == "websocket"
    assert response.getheader("Connection") == "upgrade, close"  # RFC 9110 §7.8
    assert response.getheader("Sec-WebSocket-Version") == "13"
    assert b"WebSocket" in response.read()
    http_conn.close()


def test_head_request_gets_426_without_body(raw):
    conn = raw()
    conn.sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers = conn.head()
    assert status == 426 and int(headers["content-length"]) > 0
    conn.expect_eof()  # no body after the head


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ],
    ids=["tls", "bad-key", "no-host", "http10", "no-connection-upgrade"],
)
def test_malformed_upgrade_gets_400_and_close(raw, request_bytes):
    conn = raw()
    conn.sock.sendall(request_bytes)
    status, headers = conn.head()
    assert status == 400
    conn.body(headers)
    conn.expect_eof()


def test_handshake_one_byte_per_send(raw):
    conn = raw()
    for byte in conn.request():
        conn.sock.send(bytes([byte]))
        time.sleep(0.0005)  # separate reads on the server side, mostly
    status, headers = conn.head()
    assert status == 101
    conn.sock.sendall(frame(0x1, b"split head"))
    assert conn.recv_frame() == (True, 0x1, b"split head")


def test_frames_in_the_same_send_as_the_handshake_are_processed(raw):
    conn = raw()
    frames = frame(0x1, b"first") + frame(0x9, b"p") + frame(0x2, b"\x00second")
    conn.handshake(after=frames)
    assert conn.recv_frame() == (True, 0x1, b"first")
    assert conn.recv_frame() == (True, 0xA, b"p")
    assert conn.recv_frame() == (True, 0x2, b"\x00second")


def test_header_timeout_answers_408(server_factory):
    server = server_factory("--proto", "ws", "--header-timeout", "1")
    conn = Raw(server.port)
    conn.sock.sendall(conn.request()[:20])
    status, headers = conn.head()
    assert status == 408
    conn.body(headers)
    conn.expect_eof()
    conn.close()


# ---- raw violations: exact close code, then TCP close ------------------------------------


VIOLATIONS = {
    "unmasked": (frame(0x1, b"hi", masked=False), 1002),
    "rsv1": (frame(0x1, b"hi", rsv=4), 1002),
    "rsv2": (frame(0x2, b"hi", rsv=2), 1002),
    "rsv3": (frame(0x2, b"hi", rsv=1), 1002),
    "opcode-3": (frame(0x3), 1002),
    "opcode-b": (frame(0xB), 1002),
    "fragmented-ping": (frame(0x9, b"p", fin=False), 1002),
    "ping-126": (frame(0x9, b"p" * 126), 1002),
    "close-126": (frame(0x8, b"\x03\xe8" + b"r" * 124), 1002),
    "continuation-first": (frame(0x0, b"orphan"), 1002),
    "new-data-mid-message": (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),
    "invalid-utf8": (frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xed\xa0\x80"), 1007),
    "invalid-utf8-across-fragments": (
        frame(0x1, b"\xce", fin=False) + frame(0x0, b"\xba\xff"),
        1007,
    ),
    "truncated-utf8-at-end": (frame(0x1, b"ok\xe2\x82"), 1007),
    "close-1-byte": (frame(0x8, b"\x03"), 1002),
    "close-1005": (close_frame(1005), 1002),
    "close-999": (close_frame(999), 1002),
    "close-1016": (close_frame(1016), 1002),
    "close-2999": (close_frame(2999), 1002),
    "close-5000": (close_frame(5000), 1002),
    "close-reason-not-utf8": (close_frame(1000, b"\xff\xfe"), 1007),
    "length-msb": (frame(0x2, b"", length=1 << 63)[:14], 1002),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_violation_gets_its_close_code_then_tcp_close(raw, name):
    data, code = VIOLATIONS[name]
    conn = raw()
    conn.handshake()
    conn.sock.sendall(frame(0x1, b"fine") + data)
    assert conn.recv_frame() == (True, 0x1, b"fine")  # what came before is served
    assert conn.recv_close()[0] == code
    conn.expect_eof()  # after a violation the server does not wait for our close


def test_invalid_utf8_fails_before_the_frame_is_complete(raw):
    conn = raw()
    conn.handshake()
    head = frame(0x1, b"", length=1 << 20, key=ZERO_KEY)  # a 1 MiB text frame, declared
    conn.sock.sendall(head + "valid start é".encode() + b"\xff")
    assert conn.recv_close()[0] == 1007  # arrives although 1 MiB - 16 bytes never came
    conn.expect_eof()


def test_text_split_inside_a_character_across_frames(raw):
    conn = raw()
    conn.handshake()
    encoded = "é€😀".encode()
    pieces = [encoded[:1], encoded[1:4], encoded[4:8], encoded[8:]]
    conn.sock.sendall(
        frame(0x1, pieces[0], fin=False)
        + frame(0x0, pieces[1], fin=False)
        + frame(0x0, pieces[2], fin=False)
        + frame(0x0, pieces[3])
    )
    assert conn.recv_frame() == (True, 0x1, encoded)


def test_control_frames_between_fragments(raw):
    conn = raw()
    conn.handshake()
    conn.sock.sendall(
        frame(0x1, b"frag", fin=False) + frame(0x9, b"mid") + frame(0xA, b"unsolicited")
    )
    assert conn.recv_frame() == (True, 0xA, b"mid")
    conn.sock.sendall(frame(0x0, b"ment", fin=False) + frame(0x0, b"ed"))
    assert conn.recv_frame() == (True, 0x1, b"fragmented")


def test_close_is_answered_with_a_close_then_tcp_close(raw):
    conn = raw()
    conn.handshake()
    conn.sock.sendall(close_frame(1000, b"done") + frame(0x1, b"after close: never read"))
    assert conn.recv_close() == (1000, b"")
    conn.expect_eof()
    conn2 = raw()
    conn2.handshake()
    conn2.sock.sendall(close_frame(None))  # an empty close gets an empty close
    assert conn2.recv_close() == (None, b"")
    conn2.expect_eof()


def test_the_reply_to_our_close_carries_the_fin(raw):
    """Nothing follows the reply to a peer's close, so the server closes TCP with it: the
    close frame and the FIN arrive in one segment (Connection.write_and_close). A delayed
    ACK of our close frame could add a segment on a loaded machine, hence three tries."""
    added = []
    for _ in range(3):
        conn = raw()
        conn.handshake()
        before = segments_in(conn.sock)
        conn.sock.sendall(close_frame(1000))
        assert conn.recv_close() == (1000, b"")
        conn.expect_eof()
        added.append(segments_in(conn.sock) - before)
        if added[-1] == 1:
            break
    assert 1 in added, added  # without it: the close frame, then the FIN


# ---- backpressure, keepalive, shutdown ---------------------------------------------------


def push_until_stalled(sock: socket.socket, payload_frame: bytes, cap: int) -> int:
    """Send without reading until the server stops taking bytes; returns bytes sent."""
    sock.setblocking(False)
    sent, stalled_since = 0, None
    view = memoryview(payload_frame)
    offset = 0
    while sent < cap:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.0:
                break
            time.sleep(0.01)
            continue
        stalled_since = None
        sent += n
        offset = (offset + n) % len(payload_frame)
        if offset:
            view = memoryview(payload_frame)
    sock.setblocking(True)
    return sent


def test_a_client_that_never_reads_is_paused_not_buffered(server_factory, stack_client):
    server = server_factory("--proto", "ws", "--max-send-buffer", str(1 << 20))
    other = stack_client(server.port)
    other.send("warm")
    assert other.recv() == "warm"
    before = rss_bytes(server.pid)
    stuck = Raw(server.port)
    stuck.handshake()
    payload = bytes(range(256)) * 256  # 64 KiB
    one = frame(0x2, payload, key=ZERO_KEY)
    cap = 256 << 20
    pushed = push_until_stalled(stuck.sock, one, cap)
    assert pushed < cap, "the server kept reading from a client that never reads"
    grown = rss_bytes(server.pid) - before
    assert grown < 32 << 20, f"server RSS grew {grown >> 20} MiB"
    for i in range(50):  # others are unaffected, byte-exact
        message = os.urandom(1000 + i)
        other.send(message)
        assert other.recv() == message
    other.close()
    echoed = 0
    stuck.sock.settimeout(20)
    while echoed < pushed // len(one):  # everything it sent comes back once it reads
        assert stuck.recv_frame() == (True, 0x2, payload)
        echoed += 1
    stuck.close()


def test_dead_peer_is_detected_by_ping_timeout(server_factory, stack_client):
    server = server_factory("--proto", "ws", "--ping-interval", "1", "--ping-timeout", "1")
    alive = stack_client(server.port, ping_interval=None)  # answers pings, sends none itself
    dead = Raw(server.port)
    dead.handshake()
    dead.sock.settimeout(15)
    pings = 0
    while True:
        fin, opcode, payload = dead.recv_frame()
        if opcode != 0x9:
            break
        pings += 1
    assert pings >= 1
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1011)
    dead.expect_eof()
    alive.send("still here")  # it answered every ping: still open
    assert alive.recv() == "still here"
    alive.close()
    dead.close()


def test_our_close_waits_for_the_peer_but_not_forever(server_factory):
    server = server_factory("--proto", "ws", "--close-timeout", "1", "--shutdown-timeout", "30")
    silent = Raw(server.port)
    silent.handshake()
    server.proc.send_signal(signal.SIGTERM)  # the server closes first: 1001 to everyone
    assert silent.recv_close() == (1001, b"server shutting down")
    silent.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        silent.sock.recv(1)  # TCP stays open: it waits for our close...
    silent.sock.settimeout(10)
    silent.expect_eof()  # ...for --close-timeout, far sooner than --shutdown-timeout
    assert server.proc.wait(10) == 0
    silent.close()


def test_sigterm_sends_1001_to_everyone_and_exits_zero(server_factory, stack_client):
    server = server_factory("--proto", "ws", "--shutdown-timeout", "5")
    clients = [stack_client(server.port) for _ in range(10)]
    for i, ws in enumerate(clients):
        ws.send(f"hello {i}")
        assert ws.recv() == f"hello {i}"
    polite = Raw(server.port)
    polite.handshake()
    server.proc.send_signal(signal.SIGTERM)
    assert polite.recv_close()[0] == 1001
    polite.sock.sendall(close_frame(1001))
    polite.expect_eof()
    for ws in clients:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1001
    assert server.proc.wait(10) == 0
    assert "stopped" in server.log_text()
    polite.close()


# ---- memory and the compiled unmask ------------------------------------------------------


def open_websockets(port: int, count: int) -> list[socket.socket]:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for sock in socks:
        sock.sendall(request)
    for sock in socks:
        sock.settimeout(10)
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        assert response.startswith(b"HTTP/1.1 101 ")
    return socks


def test_idle_websocket_costs_at_most_512_bytes(server_factory):
    """Server RSS growth per handshaken idle connection, event slot included."""
    count = 5000
    server = server_factory("--proto", "ws")
    for sock in open_websockets(server.port, 200):  # warm every path once
        sock.close()
    assert wait_until(lambda: len(os.listdir(f"/proc/{server.pid}/fd")) < 20)
    before = rss_bytes(server.pid)
    socks = open_websockets(server.port, count)
    per_connection = (rss_bytes(server.pid) - before) / count
    for sock in socks:
        sock.close()
    print(f"idle WebSocket connection: {per_connection:.0f} B of server RSS")
    assert per_connection <= 512, f"{per_connection:.0f} B per idle connection"


def test_server_runs_the_compiled_unmask(server):
    line = server.wait_for_log(r"implementations: ")[0]
    assert "websocket=c http-head=c socket-io=c" in line
    assert "not built" not in server.log_text()


def test_fallback_unmask_is_warned_about_at_start(caplog):
    import argparse

    from reactor.handlers import ws as ws_handler
    from reactor.loop import Reactor
    from reactor.ws import native

    parser = argparse.ArgumentParser()
    ws_handler.add_arguments(parser)
    options = parser.parse_args([])
    for impl, warned in (("python", True), ("c", False)):
        native.use(impl)
        reactor = Reactor()
        try:
            caplog.clear()
            with caplog.at_level("WARNING", logger="reactor.ws"):
                ws_handler.make_handler(options, reactor)
            assert any("pure Python" in r.message for r in caplog.records) is warned
        finally:
            native.use("c")
            reactor.dispose()


def test_missing_head_scanner_is_warned_about_at_start(caplog):
    import argparse

    from reactor.handlers import static as static_handler
    from reactor.handlers import ws as ws_handler
    from reactor.http import request as request_module
    from reactor.loop import Reactor

    parser = argparse.ArgumentParser()
    ws_handler.add_arguments(parser)
    static_handler.add_arguments(parser)
    options = parser.parse_args([])
    options.root = "."  # a CLI-wide option
    try:
        for impl, warned in (("python", True), ("c", False)):
            request_module.use(impl)
            for handler in (ws_handler, static_handler):
                reactor = Reactor()
                try:
                    caplog.clear()
                    with caplog.at_level("WARNING"):
                        handler.make_handler(options, reactor)
                    assert any("http._speedups" in r.message for r in caplog.records) is warned
                finally:
                    reactor.dispose()
    finally:
        request_module.use("c")


def test_many_clients_at_once_each_get_their_own_echo(server):
    results: dict[int, bool] = {}

    def run(i: int) -> None:
        with client(server.port) as ws:
            for j in range(20):
                ws.send(f"{i}:{j}")
                assert ws.recv() == f"{i}:{j}"
        results[i] = True

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 20


def test_pipelined_echoes_leave_in_one_write(monkeypatch):
    """16 frames in one read: their 16 echoes (and a pong) leave in one syscall."""
    import reactor.handlers.ws as ws_handler
    from reactor.loop import Reactor

    reactor = Reactor()
    handler = ws_handler.WebSocketHandler(reactor, ping_interval=0)
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    conn = reactor.add_connection(ours.detach(), handler)
    writes: list[int] = []
    real_write, real_writev = os.write, os.writev

    def counting_write(fd, data):
        if fd == conn.fd:
            writes.append(len(data))
        return real_write(fd, data)

    def counting_writev(fd, buffers):
        if fd == conn.fd:
            writes.append(sum(map(len, buffers)))
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "write", counting_write)
    monkeypatch.setattr(os, "writev", counting_writev)
    try:
        raw = Raw.__new__(Raw)
        raw.sock, raw.buf, raw.key = peer, b"", base64.b64encode(os.urandom(16))
        peer.settimeout(10)
        burst = b"".join(frame(0x1, b"m%02d" % i) for i in range(16)) + frame(0x9, b"p")
        peer.sendall(raw.request() + burst)  # handshake and frames in one read
        deadline = time.monotonic() + 20
        while not writes and time.monotonic() < deadline:
            reactor.run_once(0.05)
        assert len(writes) == 1, writes  # the 101, 16 echoes and the pong together
        assert raw.head()[0] == 101
        for i in range(16):
            assert raw.recv_frame() == (True, 0x1, b"m%02d" % i)
        assert raw.recv_frame() == (True, 0xA, b"p")
        big = os.urandom(300_000)  # the writev path, cut short by a full socketpair
        sender = threading.Thread(target=peer.sendall, args=(frame(0x2, big, key=ZERO_KEY) * 2,))
        sender.start()
        expected = 2 * (10 + len(big))
        peer.settimeout(0.01)
        deadline = time.monotonic() + 20
        while len(raw.buf) < expected and time.monotonic() < deadline:
            reactor.run_once(0.01)
            with contextlib.suppress(TimeoutError):
                raw.buf += peer.recv(1 << 20)
        sender.join()
        assert raw.recv_frame() == (True, 0x2, big)
        assert raw.recv_frame() == (True, 0x2, big)
    finally:
        peer.close()
        reactor.dispose()


def test_accept_upgrade_takes_over_from_the_http_handler(tmp_path):
    """What --proto auto does: the static handler parses the head and hands the
    connection, with the bytes that followed it, to accept_upgrade."""
    import reactor.handlers.ws as ws_handler
    from reactor.handlers.static import HttpHandler
    from reactor.loop import Reactor

    (tmp_path / "index.html").write_text("home\n")
    reactor = Reactor()
    handler = ws_handler.WebSocketHandler(reactor, ping_interval=0)
    statuses: list[int] = []

    def upgrade(conn, request, buf, pos):
        statuses.append(handler.accept_upgrade(conn, request, buf, pos))
        return statuses[-1]

    http = HttpHandler(reactor, tmp_path, access_log_enabled=False, upgrade=upgrade)
    peers = []
    try:
        for version, after in ((b"13", frame(0x1, b"in the same read")), (b"8", b"")):
            ours, peer = socket.socketpair()
            ours.setblocking(False)
            reactor.add_connection(ours.detach(), http)
            peers.append(peer)
            raw = Raw.__new__(Raw)
            raw.sock, raw.buf, raw.key = peer, b"", base64.b64encode(os.urandom(16))
            peer.settimeout(0.01)
            peer.sendall(raw.request(version=version) + after)
            deadline = time.monotonic() + 10
            while b"\r\n\r\n" not in raw.buf and time.monotonic() < deadline:
                reactor.run_once(0.01)
                with contextlib.suppress(TimeoutError):
                    raw.buf += peer.recv(65536)
            status, _ = raw.head()
            if version == b"13":
                assert status == 101
                while len(raw.buf) < 2 + 16 and time.monotonic() < deadline:
                    reactor.run_once(0.01)
                    with contextlib.suppress(TimeoutError):
                        raw.buf += peer.recv(65536)
                assert raw.recv_frame() == (True, 0x1, b"in the same read")
            else:
                assert status == 426
        assert statuses == [101, 426]
        assert len(handler.server.connections) == 1
    finally:
        for peer in peers:
            peer.close()
        reactor.dispose()
