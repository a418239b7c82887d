"""Topics in one worker: conn.subscribe/unsubscribe/topics, server.publish and
broadcast, driven in process on a real reactor over socketpairs (so writes can
be counted), plus one run through a server subprocess and the websockets client.
"""

from __future__ import annotations

import base64
import os
import socket
import threading

import pytest
from test_ws_server import Raw, client, frame
from testkit import ServerProcess

from reactor.app import WebSocketApp
from reactor.handlers.ws import WebSocketHandler
from reactor.loop import Reactor


class Commands(WebSocketApp):
    """Text commands: "sub T", "unsub T", "pub T MSG", "bin T HEX", "topics",
    "all MSG", "local MSG", "tell FD MSG" (a direct send to another connection),
    "pubtell T FD MSG" (a publish, then a direct send)."""

    def on_message(self, conn, data):
        verb, _, rest = data.partition(" ")
        server = self.server
        if verb == "sub":
            conn.send(f"sub {conn.subscribe(rest)}")
        elif verb == "unsub":
            conn.send(f"unsub {conn.unsubscribe(rest)}")
        elif verb == "pub":
            topic, _, message = rest.partition(" ")
            server.publish(topic, message)
        elif verb == "bin":
            topic, _, hexed = rest.partition(" ")
            server.publish(topic, bytes.fromhex(hexed))
        elif verb == "topics":
            conn.send(" ".join(sorted(conn.topics)) or "-")
        elif verb == "all":
            server.broadcast(rest)
        elif verb == "local":
            server.broadcast(rest, local=True)
        elif verb == "pubtell":
            topic, target, message = rest.split(" ", 2)
            server.publish(topic, message)
            self.by_name[target].send("direct " + message)
        elif verb == "name":
            self.by_name = getattr(self, "by_name", {})
            self.by_name[rest] = conn
        elif verb == "bad-topic":
            conn.subscribe(42)
        elif verb == "bad-message":
            server.publish("t", 42)
        elif verb == "long-topic":
            conn.subscribe("x" * 1025)

    def on_close(self, conn, code, reason):
        for topic in conn.topics:  # still known here: tell the others who left
            self.server.publish(topic, f"left {topic}")


class Harness:
    """One reactor and WebSocket handler; clients on socketpairs."""

    def __init__(self, app=None, **reactor_options) -> None:
        self.reactor = Reactor(**reactor_options)
        self.handler = WebSocketHandler(self.reactor, app or Commands(), ping_interval=0)
        self.clients: list[Raw] = []

    def open(self) -> Raw:
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        conn = self.reactor.add_connection(ours.detach(), self.handler)
        raw = Raw.__new__(Raw)
        raw.sock, raw.buf, raw.key = peer, b"", base64.b64encode(os.urandom(16))
        raw.fd = conn.fd
        peer.settimeout(5)
        peer.sendall(raw.request())
        self.run()
        assert raw.head()[0] == 101
        self.clients.append(raw)
        return raw

    def run(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            self.reactor.run_once(0.01)

    def say(self, raw: Raw, *texts: str) -> None:
        """Send text frames in ONE write (so the server reads them at once)."""
        raw.sock.sendall(b"".join(frame(0x1, t.encode()) for t in texts))
        self.run()

    def ask(self, raw: Raw, text: str) -> str:
        self.say(raw, text)
        return raw.recv_frame()[2].decode()

    def pump_until_eof(self, raw: Raw) -> bytes:
        """Run the reactor while reading everything ``raw`` gets until EOF."""
        chunks = [raw.buf]
        raw.sock.settimeout(0.01)
        for _ in range(1000):
            self.reactor.run_once(0.001)
            try:
                chunk = raw.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        raise AssertionError("no EOF")

    def close(self) -> None:
        for raw in self.clients:
            raw.sock.close()
        self.reactor.dispose()


def nothing_waiting(raw: Raw) -> bool:
    raw.sock.setblocking(False)
    try:
        return not raw.buf and not raw.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        raw.sock.settimeout(5)


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(*args, **kwargs) -> Harness:
        made.append(Harness(*args, **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


def test_publish_reaches_every_subscriber_once_in_order_text_and_binary(harness):
    h = harness()
    alice, bob, carol = h.open(), h.open(), h.open()
    assert h.ask(alice, "sub room") == "sub True"
    assert h.ask(bob, "sub room") == "sub True"
    assert h.ask(bob, "sub room") == "sub False"  # already in it
    assert h.ask(carol, "sub other") == "sub True"
    h.say(carol, "pub room one", "bin room 00ff10", "pub room three")
    for raw in (alice, bob):
        assert raw.recv_frame() == (True, 0x1, b"one")
        assert raw.recv_frame() == (True, 0x2, b"\x00\xff\x10")
        assert raw.recv_frame() == (True, 0x1, b"three")
    assert nothing_waiting(carol)  # not in the topic, although it published
    assert h.handler.topics.subscriber_count("room") == 2


def test_a_publisher_in_its_own_topic_gets_its_messages_in_order_with_its_replies(harness):
    h = harness()
    alice = h.open()
    h.say(alice, "sub t", "pub t a", "topics", "pub t b")
    assert [alice.recv_frame()[2] for _ in range(4)] == [b"sub True", b"a", b"t", b"b"]


def test_unsubscribe_topics_and_close_leave_nothing_behind(harness):
    h = harness()
    alice, bob = h.open(), h.open()
    h.say(alice, "sub a", "sub b")
    assert [alice.recv_frame()[2] for _ in range(2)] == [b"sub True", b"sub True"]
    assert h.ask(alice, "topics") == "a b"
    assert h.ask(alice, "unsub a") == "unsub True"
    assert h.ask(alice, "unsub a") == "unsub False"
    assert h.ask(alice, "topics") == "b"
    h.say(bob, "pub a gone", "pub b kept")
    assert alice.recv_frame() == (True, 0x1, b"kept")
    alice.sock.close()  # no close frame: the TCP close alone unsubscribes
    h.run()
    topics = h.handler.topics
    assert topics.subscriber_count("b") == 0
    assert topics.topic_count == 0 and not topics._topics_of  # nothing per closed connection
    h.say(bob, "pub b nobody")  # publishing to a topic without subscribers is fine
    assert h.ask(bob, "topics") == "-"


def test_publishes_from_one_read_leave_in_one_write_per_subscriber(harness, monkeypatch):
    """Sixteen publishes in one read: every other subscriber gets them in one
    syscall (the frames joined once, the same bytes written to each)."""
    h = harness()
    publisher = h.open()
    subscribers = [h.open() for _ in range(3)]
    for raw in subscribers:
        assert h.ask(raw, "sub t") == "sub True"
    writes: dict[int, int] = {}
    real_write = os.write

    def counting_write(fd, data):
        writes[fd] = writes.get(fd, 0) + 1
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    h.say(publisher, *(f"pub t m{i:02d}" for i in range(16)))
    for raw in subscribers:
        assert [raw.recv_frame()[2] for _ in range(16)] == [b"m%02d" % i for i in range(16)]
        assert writes[raw.fd] == 1, writes
    assert publisher.fd not in writes  # it published, nothing came back to it


def test_held_publishes_go_before_a_later_direct_send(harness):
    h = harness()
    alice, bob = h.open(), h.open()
    h.say(bob, "name bob", "sub t")
    assert bob.recv_frame()[2] == b"sub True"
    h.say(alice, "name alice", "pubtell t bob hello")
    assert bob.recv_frame()[2] == b"hello"  # the publish came first
    assert bob.recv_frame()[2] == b"direct hello"


def test_subscribing_after_a_publish_in_the_same_read_does_not_receive_it(harness):
    h = harness()
    alice, bob = h.open(), h.open()
    h.say(bob, "sub t")
    assert bob.recv_frame()[2] == b"sub True"
    h.say(alice, "pub t before", "sub t", "pub t after")
    assert bob.recv_frame()[2] == b"before"
    assert bob.recv_frame()[2] == b"after"
    assert [alice.recv_frame()[2] for _ in range(2)] == [b"sub True", b"after"]
    h.run()
    assert nothing_waiting(alice) and nothing_waiting(bob)


def test_publish_walks_the_topic_not_the_reactor(harness, monkeypatch):
    """The cost of a publish depends on the topic's subscribers only: it never
    walks the reactor's slots, whatever else is connected."""
    h = harness()
    alice, bob = h.open(), h.open()
    idle = [h.open() for _ in range(20)]
    assert h.ask(bob, "sub t") == "sub True"
    walked = []
    real = h.reactor.connections
    monkeypatch.setattr(h.reactor, "connections", lambda: walked.append(1) or real())
    h.say(alice, "pub t x")
    assert bob.recv_frame()[2] == b"x"
    assert walked == []
    h.say(alice, "all y")  # a broadcast does reach everyone, by walking the slots
    assert walked
    for raw in [alice, bob, *idle]:
        assert raw.recv_frame()[2] == b"y"


def test_broadcast_local_reaches_every_connection_of_the_worker(harness):
    h = harness()
    clients = [h.open() for _ in range(4)]
    h.say(clients[0], "local hi")
    for raw in clients:
        assert raw.recv_frame() == (True, 0x1, b"hi")


def test_a_subscriber_over_the_send_buffer_is_closed_with_1008(harness):
    limit = 64 * 1024
    h = harness(max_send_buffer=limit)
    publisher, stuck, reader = h.open(), h.open(), h.open()
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for raw in (stuck, reader):
        assert h.ask(raw, "sub t") == "sub True"
    payload = "x" * 16000
    for _ in range(40):  # 640 KB: far past the stuck peer's socket buffers and the limit
        h.say(publisher, f"pub t {payload}")
        assert reader.recv_frame()[2] == payload.encode()  # the reader keeps up
    stuck.buf = h.pump_until_eof(stuck)
    got = 0
    while True:
        fin, opcode, data = stuck.recv_frame()
        if opcode == 0x8:
            break
        assert data == payload.encode()
        got += 1
    assert int.from_bytes(data[:2], "big") == 1008
    assert 0 < got < 40


def test_on_close_still_sees_the_topics_and_can_tell_the_others(harness):
    h = harness()
    alice, bob = h.open(), h.open()
    for raw in (alice, bob):
        assert h.ask(raw, "sub lobby") == "sub True"
    alice.sock.close()
    h.run()
    assert bob.recv_frame()[2] == b"left lobby"
    assert h.handler.topics.subscriber_count("lobby") == 1


def test_mistakes_are_one_clear_type_error(harness, caplog):
    h = harness()
    alice = h.open()
    h.say(alice, "bad-topic")
    assert alice.recv_close()[0] == 1011
    assert "a topic is a str, not int" in caplog.text
    bob = h.open()
    h.say(bob, "bad-message")
    assert bob.recv_close()[0] == 1011
    assert "publish() takes str (text) or bytes (binary), not int; use json.dumps()" in caplog.text
    carol = h.open()
    h.say(carol, "long-topic")
    assert carol.recv_close()[0] == 1011
    assert "a topic is at most 1024 characters, not 1025" in caplog.text


TOPIC_APP = """
from reactor.app import WebSocketApp

class Rooms(WebSocketApp):
    def on_open(self, conn, request):
        conn.subscribe(request.target)

    def on_message(self, conn, data):
        self.server.publish(conn.data or next(iter(conn.topics)), data)

rooms = Rooms()
"""


def test_rooms_through_a_server_and_the_websockets_client(tmp_path, monkeypatch):
    (tmp_path / "roomapp.py").write_text(TOPIC_APP)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    server = ServerProcess(["--proto", "ws", "--app", "roomapp:rooms"])
    try:
        with (
            client(server.port, "/a") as a1,
            client(server.port, "/a") as a2,
            client(server.port, "/b") as b1,
        ):
            a1.send("hello a")
            a1.send(b"\x00\x01")
            b1.send("hello b")
            assert [a2.recv(), a2.recv()] == ["hello a", b"\x00\x01"]
            assert [a1.recv(), a1.recv()] == ["hello a", b"\x00\x01"]
            assert b1.recv() == "hello b"
    finally:
        server.stop()


def test_a_bad_forwarded_allow_ips_is_a_usage_error():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "reactor", "--forwarded-allow-ips", "127.0.0.1,proxy"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "'proxy' is not an IP address" in done.stderr
    assert "Traceback" not in done.stderr


def test_publishes_to_several_topics_in_one_read_keep_their_order(harness):
    h = harness()
    publisher, both, only_a = h.open(), h.open(), h.open()
    h.say(both, "sub a", "sub b")
    assert [both.recv_frame()[2] for _ in range(2)] == [b"sub True", b"sub True"]
    assert h.ask(only_a, "sub a") == "sub True"
    h.say(publisher, "pub a 1", "pub b 2", "pub a 3", "pub a 4", "local 5")
    assert [both.recv_frame()[2] for _ in range(5)] == [b"1", b"2", b"3", b"4", b"5"]
    assert [only_a.recv_frame()[2] for _ in range(4)] == [b"1", b"3", b"4", b"5"]
    assert publisher.recv_frame()[2] == b"5"


def test_a_publish_from_another_thread_is_written_by_the_reactor_thread(harness):
    """Another thread's publish is handed to the reactor thread: nothing is
    written until the loop runs, then every subscriber gets it whole and in that
    thread's order (its buffer copied at the call, whatever the caller does next)."""
    h = harness()
    alice, bob = h.open(), h.open()
    for raw in (alice, bob):
        assert h.ask(raw, "sub news") == "sub True"

    def publisher() -> None:
        for i in range(50):
            news = bytearray(f"n{i}".encode())
            h.handler.server.publish("news", news)
            news[:] = b"overwritten"  # the caller reuses its buffer at once

    thread = threading.Thread(target=publisher)
    thread.start()
    thread.join()
    assert nothing_waiting(alice) and nothing_waiting(bob)  # not written from that thread
    h.run()
    for raw in (alice, bob):
        assert [raw.recv_frame()[2] for _ in range(50)] == [f"n{i}".encode() for i in range(50)]
