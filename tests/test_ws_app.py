"""The application API (reactor/app.py) through real servers: callbacks and their
order, per-connection data, broadcast, the 1011 and 1008 policies, --app
loading, reactor.server.serve embedding, and the examples.

The test applications live in a module written to a temporary folder on
PYTHONPATH; they log each callback, and the tests read the server's log.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_ws_server import Raw, client, frame
from testkit import LISTENING, REPO, ServerProcess, rss_bytes, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

APPS = '''
import logging

from reactor.app import WebSocketApp
from reactor.ws.frames import ProtocolError

log = logging.getLogger("wsapps")


class Recorder(WebSocketApp):
    def on_start(self, server):
        log.info("event start %s", server is self.server)

    def on_upgrade(self, request):
        if request.target == "/private":
            return 401, "login first", [("WWW-Authenticate", "Bearer")]
        if request.target == "/banned":
            return 403, "banned"
        if request.target == "/crash-upgrade":
            raise RuntimeError("upgrade bug")
        return None

    def on_open(self, conn, request):
        if request.target == "/crash-open":
            raise RuntimeError("open bug")
        if request.target != "/nodata":
            conn.data = request.target
        log.info("event open %s %s", conn.data, conn.subprotocol)

    def on_message(self, conn, data):
        log.info("event message %s %r", conn.data, data)
        if data == "whoami":
            host, port = conn.remote_address[:2]
            conn.send(f"{conn.data} {host} {port} {conn.subprotocol}")
        elif data == "boom":
            raise ValueError("application bug")
        elif data == "protocol-error":
            raise ProtocolError(1002, "raised by the app, not the peer")
        elif data == "close":
            conn.close(4000, "as you wish")
            log.info("event send-after-close %s %s", conn.data, conn.send("late"))
        elif data == "count":
            conn.send(str(len(self.server.connections)))
        elif data == "list":
            conn.send(" ".join(sorted(str(c.data) for c in self.server.connections)))
        elif isinstance(data, str) and data.startswith("all:"):
            sent = self.server.broadcast(data[4:])
            conn.send(f"sent {sent}")
        elif data == "ping":
            conn.send(f"pinged {conn.ping(b'app')}")
        else:
            conn.send(data)

    def on_close(self, conn, code, reason):
        log.info("event close %s %d %s", conn.data, code, reason)


recorder = Recorder()


def make_recorder():
    return Recorder()


class Broadcaster(WebSocketApp):
    """On "go COUNT SIZE": numbered messages to everyone from a timer, then "done"."""

    def on_message(self, conn, data):
        if isinstance(data, str) and data.startswith("go "):
            count, size = map(int, data.split()[1:])
            self.sent = 0
            self.timer = self.server.call_every(0.001, self.burst, count, size)

    def burst(self, count, size):
        for _ in range(4):
            if self.sent == count:
                self.timer.cancel()
                self.server.broadcast("done")
                return
            self.server.broadcast(self.sent.to_bytes(4, "big") * (size // 4))
            self.sent += 1

    def on_close(self, conn, code, reason):
        log.info("event close %d", code)
'''


@pytest.fixture(scope="module")
def apps_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apps")
    (folder / "wsapps.py").write_text(APPS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(folder))  # the server subprocesses import wsapps
        yield folder


@pytest.fixture(scope="module")
def server(apps_path):
    proc = ServerProcess(["--proto", "ws", "--app", "wsapps:recorder", "--subprotocol", "chat"])
    yield proc
    proc.stop()


def events(server: ServerProcess, path: str) -> list[str]:
    pattern = re.compile(r"wsapps: event (\S+) " + re.escape(path) + r"(?: (.*))?$")
    return [" ".join(filter(None, m.groups())) for m in map(pattern.search, server.lines) if m]


def test_callbacks_in_order_with_their_arguments(server):
    with client(server.port, "/order", subprotocols=["chat"]) as ws:
        ws.send("one")
        assert ws.recv() == "one"
        ws.send(b"\x00two")
        assert ws.recv() == b"\x00two"
        ws.close(4001, "my reason")
    server.wait_for_log("event close /order")
    assert events(server, "/order") == [
        "open chat",
        "message 'one'",
        "message b'\\x00two'",
        "close 4001 my reason",
    ]
    assert server.wait_for_log("event start True")  # on_start ran, with app.server set


def test_conn_data_remote_address_and_subprotocol(server):
    with client(server.port, "/me") as ws:
        ws.send("whoami")
        host, port = ws.local_address[:2]
        assert ws.recv() == f"/me {host} {port} None"
    with client(server.port, "/nodata", subprotocols=["chat"]) as ws:
        ws.send("whoami")
        assert ws.recv().startswith("None ")  # conn.data is None until the app sets it
        ws.send("whoami")
        assert ws.recv().endswith(" chat")


def test_app_close_send_after_close_and_conn_ping(server):
    with client(server.port, "/closing") as ws:
        ws.send("ping")
        assert ws.recv() == "pinged True"
        ws.send("close")
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert (ws.close_code, ws.close_reason) == (4000, "as you wish")
    server.wait_for_log("event close /closing 4000")
    assert "send-after-close False" in " ".join(events(server, "/closing"))


def test_connections_and_broadcast_reach_every_client(server):
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(client(server.port, f"/b{i}")) for i in range(5)]
        clients[0].send("count")
        assert int(clients[0].recv()) >= 5
        clients[0].send("list")
        assert {f"/b{i}" for i in range(5)} <= set(clients[0].recv().split())
        clients[2].send("all:hello everyone")
        received = [ws.recv() for ws in clients]
        assert received == ["hello everyone"] * 5
        sent = int(clients[2].recv().split()[1])
        assert sent >= 5  # (clients of other tests may be connected too)


def test_app_exception_closes_only_that_connection_with_1011(server):
    with client(server.port, "/victim") as victim, client(server.port, "/bystander") as other:
        victim.send("boom")
        with pytest.raises(ConnectionClosed):
            victim.recv()
        assert victim.close_code == 1011
        other.send("still fine")
        assert other.recv() == "still fine"
    server.wait_for_log("event close /victim")
    failures = [line for line in server.lines if "application on_message failed" in line]
    assert len(failures) == 1
    assert server.log_text().count("ValueError: application bug") == 1  # one traceback


def test_protocol_error_raised_by_the_app_is_not_blamed_on_the_peer(server):
    with client(server.port, "/pe") as ws:
        ws.send("protocol-error")
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.close_code == 1011  # not 1002: the peer did nothing wrong


def test_on_open_exception_closes_with_1011(server):
    with client(server.port, "/crash-open") as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.close_code == 1011
    server.wait_for_log("application on_open failed")


@pytest.mark.parametrize(
    ("path", "status"), [("/private", 401), ("/banned", 403), ("/crash-upgrade", 500)]
)
def test_on_upgrade_refuses(server, path, status):
    with pytest.raises(InvalidStatus) as info:
        client(server.port, path)
    response = info.value.response
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("spec", ["wsapps:Recorder", "wsapps:make_recorder", "wsapps:recorder"])
def test_app_option_takes_a_class_a_factory_or_an_instance(apps_path, server_factory, spec):
    server = server_factory("--proto", "ws", "--app", spec)
    with client(server.port, "/loaded") as ws:
        ws.send("whoami")
        assert ws.recv().startswith("/loaded ")
    server.wait_for_log(r"websocket: app=Recorder ")


@pytest.mark.parametrize("spec", ["nosuchmodule:app", "wsapps:missing", "no-colon"])
def test_bad_app_option_is_a_usage_error(apps_path, spec):
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "--proto", "ws", "--port", "0", "--app", spec],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--app" in result.stderr


def test_default_app_echoes(server_factory):
    server = server_factory("--proto", "ws")
    with client(server.port) as ws:
        ws.send("echo me")
        assert ws.recv() == "echo me"
    server.wait_for_log(r"websocket: app=WebSocketApp ")


# ---- broadcast to a client that never reads: 1008, bounded memory -----------------------


def test_broadcast_closes_a_stuck_client_with_1008_and_memory_stays_bounded(
    apps_path, server_factory
):
    limit = 1 << 20
    server = server_factory(
        "--proto", "ws", "--app", "wsapps:Broadcaster", "--max-send-buffer", str(limit)
    )
    count, size = 1536, 16384  # 24 MiB to each: far past the stuck client's kernel buffers
    stuck = Raw(server.port, rcvbuf=65536)
    stuck.handshake()
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(client(server.port)) for _ in range(3)]
        before = rss_bytes(server.pid)
        results: dict[int, int] = {}

        def read_all(index: int, ws) -> None:
            expected = 0
            for message in ws:
                if message == "done":
                    break
                assert message == expected.to_bytes(4, "big") * (size // 4)
                expected += 1
            results[index] = expected

        threads = [threading.Thread(target=read_all, args=item) for item in enumerate(readers)]
        for thread in threads:
            thread.start()
        readers[0].send(f"go {count} {size}")
        for thread in threads:
            thread.join(60)
        grown = rss_bytes(server.pid) - before
    assert results == {0: count, 1: count, 2: count}  # the others got all, in order
    assert grown < 8 << 20, f"server RSS grew {grown >> 20} MiB"
    got = 0
    while True:  # the stuck one: an in-order prefix, then the 1008 close
        fin, opcode, payload = stuck.recv_frame()
        if opcode == 0x8:
            break
        assert payload == got.to_bytes(4, "big") * (size // 4)
        got += 1
    assert int.from_bytes(payload[:2], "big") == 1008
    assert 0 < got < count
    stuck.expect_eof()
    stuck.close()
    server.wait_for_log(r"over --max-send-buffer: closing with 1008")


# ---- embedding and the examples ----------------------------------------------------------


class Embedded:
    """A Python program that embeds the server with reactor.server.serve()."""

    def __init__(self, code: str, cwd: Path = REPO) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=cwd
        )
        self.lines: list[str] = []
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        found: list[int] = []

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                match = LISTENING.search(line)
                if match and not found:
                    found.append(int(match.group(2)))

        threading.Thread(target=read, daemon=True).start()
        assert wait_until(lambda: found or self.proc.poll() is not None, timeout=15)
        assert found, "".join(self.lines)
        return found[0]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_serve_embeds_the_server_in_a_few_lines(apps_path):
    embedded = Embedded(
        "import wsapps\n"
        "from reactor.server import serve\n"
        "raise SystemExit(serve(wsapps.Recorder(), port=0, ping_interval=0, busy_poll='auto'))\n"
    )
    try:
        with client(embedded.port, "/embedded") as ws:
            ws.send("whoami")
            assert ws.recv().startswith("/embedded 127.0.0.1 ")
        assert any("busy_poll=50us" in line for line in embedded.lines)  # auto, one worker
    finally:
        assert embedded.stop() == 0


def test_serve_rejects_unknown_options():
    from reactor.server import serve

    with pytest.raises(TypeError, match="no_such_option"):
        serve(no_such_option=1)
    with pytest.raises(ValueError):
        serve(proto="gopher")


def test_chat_example_broadcasts_to_everyone(server_factory):
    server = server_factory("--proto", "ws", "--app", "examples.chat:app")
    with client(server.port, "/?name=ann") as ann:
        assert ann.recv() == "* ann joined (1 online)"
        with client(server.port, "/?name=bob") as bob:
            assert ann.recv() == "* bob joined (2 online)"
            assert bob.recv() == "* bob joined (2 online)"
            bob.send("hi all")
            assert ann.recv() == "bob: hi all"
            assert bob.recv() == "bob: hi all"
            bob.send(b"\x00")
            assert bob.recv() == "* text messages only"
        assert ann.recv() == "* bob left"


def test_examples_run_as_scripts(tmp_path):
    for script in ("echo_app.py", "chat.py"):
        code = (
            "import runpy, sys\n"
            f"sys.argv = ['{script}', '--port', '0']\n"
            f"runpy.run_path({str(REPO / 'examples' / script)!r}, run_name='__main__')\n"
        )
        embedded = Embedded(code, cwd=tmp_path)  # not the repository root: only the install
        try:
            with client(embedded.port, "/?name=zoe") as ws:
                if script == "chat.py":
                    assert ws.recv() == "* zoe joined (1 online)"
                ws.send("round trip")
                expected = "zoe: round trip" if script == "chat.py" else "round trip"
                assert ws.recv() == expected
        finally:
            assert embedded.stop() == 0


def test_raw_frames_reach_the_app_in_the_handshake_read(server):
    conn = Raw(server.port)
    conn.sock.sendall(conn.request(path=b"/raw") + frame(0x1, b"whoami"))
    assert conn.head()[0] == 101
    fin, opcode, payload = conn.recv_frame()
    assert payload.startswith(b"/raw 127.0.0.1 ")
    conn.close()


def test_peer_vanishing_without_a_close_frame_reports_1006(server):
    conn = Raw(server.port)
    conn.sock.sendall(conn.request(path=b"/vanish") + frame(0x1, b"last words"))
    assert conn.head()[0] == 101
    assert conn.recv_frame() == (True, 0x1, b"last words")
    conn.sock.shutdown(socket.SHUT_WR)  # FIN instead of a close frame
    conn.expect_eof()
    conn.close()
    server.wait_for_log("event close /vanish")
    assert events(server, "/vanish")[-1] == "close 1006 connection lost"
