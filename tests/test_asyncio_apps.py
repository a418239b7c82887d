"""Coroutine callbacks (reactor/handlers/ws_async.py) through real servers:
per-connection order, concurrency across connections, 1011 on an exception,
a coroutine on_upgrade that does not block the reactor, back-pressure from a
slow coroutine, shutdown, mixed sync/async apps, and a sync app paying nothing.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_ws_server import Raw, client
from testkit import ServerProcess, importable_module
from websockets.exceptions import ConnectionClosed, InvalidStatus

APPS = """
import asyncio
import logging
import threading

from reactor.app import WebSocketApp

log = logging.getLogger("asyncapps")


class AsyncApp(WebSocketApp):
    def __init__(self):
        self.gates = {}
        self.handled = 0

    def gate(self, name):
        return self.gates.setdefault(name, asyncio.Event())

    async def on_upgrade(self, request):
        if request.target == "/slow":
            await self.gate("upgrade").wait()
        if request.target == "/deny":
            await asyncio.sleep(0.01)
            return 403, "not you"
        if request.target == "/crash":
            raise RuntimeError("upgrade bug")
        return None

    async def on_open(self, conn, request):
        await asyncio.sleep(0.01)
        conn.data = request.target
        log.info("event open %s %s", conn.data, threading.current_thread().name)

    async def on_message(self, conn, data):
        self.handled += 1
        words = data.split() if isinstance(data, str) else [b"bytes"]
        if words[0] == "sleep":
            await asyncio.sleep(float(words[1]))
            conn.send(f"slept {words[2]}")
        elif words[0] == "wait":
            await self.gate(words[1]).wait()
            conn.send(f"passed {words[1]}")
        elif words[0] == "open":
            self.gate(words[1]).set()
            conn.send(f"opened {words[1]}")
        elif words[0] == "handled":
            conn.send(str(self.handled))
        elif words[0] == "boom":
            raise ValueError("coroutine bug")
        elif words[0] == "nap":
            try:
                await asyncio.sleep(float(words[1]))
                log.info("event nap done %s", words[1])
            except asyncio.CancelledError:
                log.info("event nap cancelled %s", words[1])
                raise
        else:
            conn.send(data)

    async def on_close(self, conn, code, reason):
        log.info("event close %s %d", conn.data, code)


class Mixed(WebSocketApp):
    async def on_open(self, conn, request):
        await asyncio.sleep(0.01)
        conn.send("welcome")

    def on_message(self, conn, data):
        conn.send(f"sync {data} {threading.current_thread() is threading.main_thread()}")
"""


@pytest.fixture(scope="module")
def apps_path(tmp_path_factory):
    with importable_module(tmp_path_factory.mktemp("apps"), "asyncapps", APPS) as folder:
        yield folder


@pytest.fixture(scope="module")
def server(apps_path):
    proc = ServerProcess(["--proto", "ws", "--app", "asyncapps:AsyncApp"])
    yield proc
    proc.stop()


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_messages_of_one_connection_complete_in_arrival_order(server):
    with client(server.port, "/order") as ws:
        for delay, tag in ((0.3, "a"), (0.0, "b"), (0.1, "c"), (0.0, "d")):
            ws.send(f"sleep {delay} {tag}")
        assert [ws.recv(timeout=10) for _ in range(4)] == [
            "slept a",
            "slept b",
            "slept c",
            "slept d",
        ]
    server.wait_for_log(r"event open /order reactor-asyncio")


def test_different_connections_run_concurrently(server):
    with client(server.port) as waiting, client(server.port) as opener:
        waiting.send("wait concurrent")  # its coroutine awaits the other connection
        waiting.send("echo after")  # queued behind it: per-connection order
        opener.send("open concurrent")
        assert opener.recv(timeout=10) == "opened concurrent"
        assert waiting.recv(timeout=10) == "passed concurrent"
        assert waiting.recv(timeout=10) == "echo after"


def test_a_coroutine_exception_is_logged_once_and_closes_with_1011(server):
    with client(server.port, "/boom") as ws:
        ws.send("boom")
        ws.send("never handled")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1011
    server.wait_for_log(r"event close /boom 1011")
    assert server.log_text().count("ValueError: coroutine bug") == 1
    with client(server.port) as ws:  # others are unaffected
        ws.send("fine")
        assert ws.recv(timeout=10) == "fine"


def test_a_coroutine_on_upgrade_completes_the_handshake_when_it_returns(server):
    slow = Raw(server.port)
    slow.sock.sendall(slow.request(path=b"/slow"))
    with client(server.port) as other:  # the reactor is not blocked by the pending upgrade
        other.send("ping-through")
        assert other.recv(timeout=10) == "ping-through"
        other.send("open upgrade")
        assert other.recv(timeout=10) == "opened upgrade"
    status, _ = slow.head()
    assert status == 101
    slow.close()
    with pytest.raises(InvalidStatus) as denied:
        client(server.port, "/deny")
    assert denied.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as crashed:
        client(server.port, "/crash")
    assert crashed.value.response.status_code == 500


def test_a_stuck_coroutine_pauses_reading_instead_of_queueing(server):
    raw = Raw(server.port)
    raw.handshake()
    raw.sock.sendall(masked(b"wait backpressure"))
    frame = masked(bytes(16384), opcode=0x2)
    raw.sock.setblocking(False)
    accepted = 0
    deadline = time.monotonic() + 20
    for _ in range(10000):  # 160 MiB offered; a bounded server stops taking it
        try:
            accepted += raw.sock.send(frame)
        except BlockingIOError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
            try:
                accepted += raw.sock.send(frame)
            except BlockingIOError:
                break
    assert accepted < 32 << 20, f"the server took {accepted >> 20} MiB for a stuck coroutine"
    with client(server.port) as opener:
        opener.send("open backpressure")
        assert opener.recv(timeout=10) == "opened backpressure"
    raw.sock.settimeout(10)
    fin, opcode, payload = raw.recv_frame()
    assert payload == b"passed backpressure"
    raw.close()


def test_mixed_sync_and_async_callbacks(apps_path, server_factory):
    server = server_factory("--proto", "ws", "--app", "asyncapps:Mixed")
    with client(server.port) as ws:
        assert ws.recv(timeout=10) == "welcome"
        ws.send("hi")
        assert ws.recv(timeout=10) == "sync hi True"  # the sync callback stays on the reactor


def test_a_sync_app_starts_no_companion_thread(server_factory):
    server = server_factory("--proto", "ws")
    with client(server.port) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        assert thread_count(server.pid) == 1
    assert "companion thread" not in server.log_text()


@pytest.mark.parametrize(("nap", "done"), [("0.5", True), ("30", False)])
def test_shutdown_awaits_then_cancels_coroutines_within_the_shutdown_timeout(apps_path, nap, done):
    server = ServerProcess(
        ["--proto", "ws", "--app", "asyncapps:AsyncApp", "--shutdown-timeout", "2"]
    )
    try:
        with client(server.port) as ws:
            ws.send(f"nap {nap}")
            time.sleep(0.1)  # the nap has started (not a pass/fail timing)
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(15) == 0
    finally:
        server.stop()
    text = server.log_text()
    assert (f"event nap done {nap}" in text) is done
    assert (f"event nap cancelled {nap}" in text) is not done


def masked(payload: bytes, *, opcode: int = 0x1) -> bytes:
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body
