"""Topics across workers with the local broker (--workers N, --broker local):
clients on every worker (--port-per-worker tells them apart), publishes and
broadcasts from any worker reach every subscriber exactly once and in order,
and a worker killed and restarted by the supervisor re-joins.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket

import pytest
from test_ws_server import client
from testkit import ServerProcess, wait_until

from reactor.brokers import local

APP = """  # also the application behind nginx (tests/test_topics_nginx.py)
import json
import os

from reactor.app import WebSocketApp


class Rooms(WebSocketApp):
    def on_open(self, conn, request):
        if request.target != "/":
            conn.subscribe(request.target)

    def on_message(self, conn, data):
        verb, _, rest = data.partition(" ")
        if verb == "pub":
            topic, _, message = rest.partition(" ")
            self.server.publish(topic, message)
        elif verb == "bin":
            topic, _, hexed = rest.partition(" ")
            self.server.publish(topic, bytes.fromhex(hexed))
        elif verb == "all":
            self.server.broadcast(rest)
        elif verb == "local":
            self.server.broadcast(rest, local=True)
        elif verb == "pid":
            conn.send(str(os.getpid()))
        elif verb == "addr":
            conn.send(repr(conn.remote_address))
        elif verb == "stats":
            conn.send(json.dumps(self.server.broker_stats, sort_keys=True))
        else:
            conn.send(data)  # the echo page of html/ (the Chromium test through nginx)


rooms = Rooms()
"""

MESSAGES = 40  # per publisher


def free_port_range(count: int) -> int:
    """A base port with ``count`` consecutive free ports (for --port-per-worker),
    outside the ephemeral range (never handed to a client's connect) and from a
    random start (other test runs may be looking at the same time)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    candidates = list(range(high + 1, 65536 - count)) or list(range(1024, low - count))
    offset = random.randrange(len(candidates))
    for base in candidates[offset:] + candidates[:offset]:
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free port range")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def start(tmp_path, monkeypatch):
    (tmp_path / "roomsapp.py").write_text(APP)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    servers: list[ServerProcess] = []

    def start_server(workers: int) -> tuple[ServerProcess, int]:
        base = free_port_range(workers)
        args = ["--proto", "ws", "--app", "roomsapp:rooms", "--workers", str(workers)]
        args += ["--port-per-worker", "--port", str(base)]
        servers.append(ServerProcess(args, workers=workers))
        return servers[-1], base

    yield start_server
    for server in servers:
        server.stop()


def worker_pid(ws) -> int:
    ws.send("pid")
    return int(ws.recv(timeout=10))


def read_messages(ws, count: int) -> list:
    return [ws.recv(timeout=10) for _ in range(count)]


def assert_nothing_more(ws, pid: int) -> None:
    """Exactly once: after what was expected, the next message is the answer
    to a question asked now."""
    assert worker_pid(ws) == pid


@pytest.mark.parametrize("workers", [2, 4])
def test_publish_and_broadcast_reach_every_worker_once_in_order(start, workers):
    server, base = start(workers)
    with contextlib.ExitStack() as stack:
        open_ = lambda port, path="/": stack.enter_context(client(port, path))  # noqa: E731
        subscribers = [open_(base + i, "/t") for i in range(workers) for _ in range(2)]
        others = [open_(base + i, "/other") for i in range(workers)]
        publishers = [open_(base + i) for i in range(workers)]
        pids = {id(ws): worker_pid(ws) for ws in subscribers + others + publishers}
        assert len(set(pids.values())) == workers  # one process per port
        for index, publisher in enumerate(publishers):  # all publishing at once
            for number in range(MESSAGES):
                publisher.send(f"pub /t w{index}-{number}")
        for ws in subscribers:
            got = read_messages(ws, MESSAGES * workers)
            assert sorted(got) == sorted(
                f"w{i}-{n}" for i in range(workers) for n in range(MESSAGES)
            )
            for index in range(workers):  # each publisher's messages in its order
                mine = [m for m in got if m.startswith(f"w{index}-")]
                assert mine == [f"w{index}-{n}" for n in range(MESSAGES)]
        publishers[-1].send("bin /t 00ff")
        for ws in subscribers:
            assert ws.recv(timeout=10) == b"\x00\xff"
        publishers[0].send("all everyone")
        for ws in subscribers + others + publishers:
            assert ws.recv(timeout=10) == "everyone"
        publishers[-1].send("local only-here")
        assert publishers[-1].recv(timeout=10) == "only-here"
        for ws in subscribers + others + publishers:
            if pids[id(ws)] == pids[id(publishers[-1])] and ws is not publishers[-1]:
                assert ws.recv(timeout=10) == "only-here"
            assert_nothing_more(ws, pids[id(ws)])
        for publisher in publishers:  # the counters the application can read
            publisher.send("stats")
            stats = json.loads(publisher.recv(timeout=10))
            assert stats["published"] >= MESSAGES and stats["dropped"] == 0, stats
            assert stats["received"] >= MESSAGES * (workers - 1), stats


def test_a_restarted_worker_rejoins(start):
    server, base = start(2)
    started = re.compile(r"worker (\d) started \(pid (\d+)\)")
    with client(base + 1, "/t") as victim_client:
        victim = worker_pid(victim_client)
    assert any(f"worker 1 started (pid {victim})" in line for line in server.lines)
    with client(base, "/t") as survivor, client(base) as publisher:
        publisher.send("pub /t before")
        assert survivor.recv(timeout=10) == "before"
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log(r"worker 1 \(pid \d+\) exited: killed by signal 9")
        assert wait_until(
            lambda: any(
                (m := started.search(line)) and m.group(1) == "1" and int(m.group(2)) != victim
                for line in server.lines
            ),
            timeout=15,
        )
        server.wait_for_log(rf"listening on 127.0.0.1:{base + 1}", count=2, timeout=15)
        with client(base + 1, "/t") as newcomer:
            assert worker_pid(newcomer) != victim
            publisher.send("pub /t after")
            assert survivor.recv(timeout=10) == "after"
            assert newcomer.recv(timeout=10) == "after"
            with client(base + 1) as other_publisher:
                other_publisher.send("pub /t from-the-new-one")
                assert survivor.recv(timeout=10) == "from-the-new-one"
                assert newcomer.recv(timeout=10) == "from-the-new-one"


def test_a_full_outbox_drops_and_counts(monkeypatch):
    """A worker that stops reading: its link's unsent output stops at the
    bound; what does not fit is dropped and counted, nothing blocks."""
    from reactor.loop import Reactor

    monkeypatch.setattr(local, "OUTBOX_LIMIT", 256 * 1024)
    group = f"test-{os.getpid()}"
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # worker 1: never reads
    stuck.bind(local.address(group, 1))
    stuck.listen()
    reactor = Reactor()

    class Nowhere:
        def hold(self): ...
        def receive(self, topic, opcode, payload): ...
        def release(self): ...

    broker = local.LocalBroker(reactor, Nowhere(), group, 0, 2)
    try:
        payload = b"x" * 65536
        for _ in range(100):  # 6.5 MB: far past the socket buffers and the bound
            broker.publish("t", 2, payload)
            broker.flush()
            reactor.run_once(0)
        link = broker._links[1]
        assert link.pending() <= local.OUTBOX_LIMIT + len(payload) + 16
        assert broker.stats["dropped"] > 0
        assert broker.stats["published"] == 100
        peer, _ = stuck.accept()
        peer.close()
    finally:
        reactor.dispose()
        stuck.close()


def test_record_encoding_round_trips():
    record = local.encode("t\u00e9", 1, b"payload")
    length, kind, topic_size = local.HEADER.unpack_from(record)
    assert length == len(record) - 4 and kind == 1 and topic_size == 3
    broadcast = local.encode(None, 2, b"")
    assert local.HEADER.unpack_from(broadcast)[1] == local.BROADCAST | 2


class FakeLink:
    """What _LinkReceiver uses of a connection."""

    def __init__(self) -> None:
        self.ctx = None
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.ctx = None


class Collect:
    def __init__(self) -> None:
        self.got: list = []
        self.batches = 0

    def hold(self) -> None:
        self.batches += 1

    def receive(self, topic, opcode, payload) -> None:
        self.got.append((topic, opcode, payload))

    def release(self) -> None: ...


def test_records_cut_anywhere_by_reads_are_delivered_whole_and_in_order():
    records = [("t", 1, b"one"), (None, 2, os.urandom(70_000)), ("\u00e9t\u00e9", 1, b"")]
    stream = b"".join(local.encode(*record) for record in records)
    for step in (1, 7, 4096, len(stream)):
        sink, link = Collect(), FakeLink()
        receiver = local._LinkReceiver(sink, {"received": 0})
        for start in range(0, len(stream), step):
            receiver.on_data(link, memoryview(stream[start : start + step]))
        assert sink.got == records and link.ctx is None


def test_a_malformed_record_drops_the_link():
    sink, link = Collect(), FakeLink()
    receiver = local._LinkReceiver(sink, {"received": 0})
    receiver.on_data(link, memoryview(local.HEADER.pack(1, 1, 5) + b"xxxxx"))
    assert link.closed and link.ctx is None and sink.got == []
