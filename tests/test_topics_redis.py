"""Topics across servers through a REAL redis-server (--broker redis://...): two
servers attached to one Redis, publishes on either reach every subscriber on
both byte-exact and in order; Redis killed and restarted mid-run: local traffic
goes on, the servers reconnect and subscribe again, and count what they dropped.

Every test starts its own redis-server on a free port with its own temporary
directory and stops it by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
from test_topics_workers import APP
from test_ws_server import client
from testkit import ServerProcess

from reactor.brokers.redis import command

pytest.importorskip("hiredis")  # the test extra installs it
REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Redis:
    """A redis-server of our own: its port, its temp dir, stopped by PID."""

    def __init__(self, folder, password: str | None = None) -> None:
        self.port = free_port()
        self.folder = folder
        self.password = password
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        argv = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.folder)]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/3"


@pytest.fixture
def redis(tmp_path):
    server = Redis(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def start(tmp_path, monkeypatch):
    (tmp_path / "roomsapp.py").write_text(APP)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    servers: list[ServerProcess] = []

    def start_server(url: str, *extra: str) -> ServerProcess:
        args = ["--proto", "ws", "--app", "roomsapp:rooms", "--broker", url, *extra]
        server = ServerProcess(args)
        server.wait_for_log(r"redis 127.0.0.1:\d+: connected")
        servers.append(server)
        return server

    yield start_server
    for server in servers:
        server.stop()


def synchronized(publisher, subscribers, topic: str = "/t") -> None:
    """Publish probes until every subscriber got one (their SUBSCRIBE reached
    Redis: pub/sub is at-most-once, nothing waits for a late subscriber), then
    a marker after which each subscriber's stream is clean."""
    seen = [False] * len(subscribers)
    for _ in range(100):
        publisher.send(f"pub {topic} probe")
        for index, ws in enumerate(subscribers):
            with contextlib.suppress(TimeoutError):
                while ws.recv(timeout=0.1) == "probe":
                    seen[index] = True
        if all(seen):
            break
    assert all(seen)
    publisher.send(f"pub {topic} ready")
    for ws in subscribers:
        while (message := ws.recv(timeout=10)) != "ready":
            assert message == "probe"


def test_two_servers_on_one_redis_share_topics_byte_exact_in_order(redis, start):
    one, two = start(redis.url), start(redis.url)
    with contextlib.ExitStack() as stack:
        open_ = lambda server, path="/": stack.enter_context(client(server.port, path))  # noqa: E731
        subscribers = [open_(one, "/t"), open_(one, "/t"), open_(two, "/t"), open_(two, "/t")]
        bystanders = [open_(one, "/elsewhere"), open_(two, "/elsewhere")]
        publishers = [open_(one), open_(two)]
        synchronized(publishers[0], subscribers)
        synchronized(publishers[1], subscribers)
        blobs = [os.urandom(n) for n in (0, 1, 125, 126, 65535, 65536, 200_000)]
        for index, publisher in enumerate(publishers):
            for number in range(30):
                publisher.send(f"pub /t s{index}-{number} \u00e9")
            for blob in blobs:
                publisher.send(f"bin /t {blob.hex()}")
        for ws in subscribers:
            got = [ws.recv(timeout=10) for _ in range(2 * (30 + len(blobs)))]
            for index in range(2):
                texts = [m for m in got if isinstance(m, str) and m.startswith(f"s{index}-")]
                assert texts == [f"s{index}-{n} \u00e9" for n in range(30)]
            binaries = [m for m in got if isinstance(m, bytes)]
            assert sorted(binaries) == sorted(blobs * 2)
        with socket.create_connection(("127.0.0.1", redis.port)) as other_user:
            for junk in (b"", b"x", b"\x09" + b"0" * 20):  # not from a server of ours
                other_user.sendall(command(b"PUBLISH", b"reactor:3:t:/t", junk))
                assert other_user.recv(64).startswith(b":")
        publishers[1].send("all everyone")
        for ws in subscribers + bystanders + publishers:
            assert ws.recv(timeout=10) == "everyone"
        for ws in subscribers + bystanders + publishers:  # nothing twice, nothing extra
            ws.send("pid")
            assert ws.recv(timeout=10).isdigit()


def test_redis_killed_and_restarted_service_continues_and_counts(redis, start):
    one, two = start(redis.url), start(redis.url)
    with (
        client(one.port, "/t") as local_sub,
        client(two.port, "/t") as remote_sub,
        client(one.port) as publisher,
        client(two.port) as remote_publisher,
    ):
        synchronized(publisher, [local_sub, remote_sub])
        redis.kill()
        one.wait_for_log(r"redis 127.0.0.1:\d+: .*serving local traffic")
        two.wait_for_log(r"redis 127.0.0.1:\d+: .*serving local traffic")
        for number in range(5):
            publisher.send(f"pub /t while-down-{number}")
        assert [local_sub.recv(timeout=10) for _ in range(5)] == [
            f"while-down-{n}" for n in range(5)
        ]  # local subscribers are still served
        redis.start()
        back = r"redis 127.0.0.1:\d+: connected again, subscribed to (\d+) topics; (\d+) publishes"
        (line,) = one.wait_for_log(back, timeout=20)
        assert re.search(back, line).groups() == ("1", "5")  # all five counted as dropped
        two.wait_for_log(back, timeout=20)
        synchronized(remote_publisher, [local_sub, remote_sub])  # re-subscribed on both
        publisher.send("pub /t after")
        assert remote_sub.recv(timeout=10) == "after"  # nothing of the outage came late
        assert local_sub.recv(timeout=10) == "after"
        publisher.send("stats")  # the same counters, as the application sees them
        stats = json.loads(publisher.recv(timeout=10))
        assert stats["dropped"] == 5 and stats["reconnects"] >= 1, stats  # attempts
        assert stats["published"] >= 1 and stats["received"] >= 1, stats
    assert one.log_text().count("serving local traffic") == 1  # logged once per outage


def test_password_and_bad_urls(tmp_path, start, monkeypatch):
    secured = Redis(tmp_path, password="s3cret")
    try:
        one, two = start(secured.url), start(secured.url)
        with client(one.port, "/t") as sub, client(two.port) as pub:
            synchronized(pub, [sub])
    finally:
        secured.kill()
    for url, message in [
        ("rediss://127.0.0.1", "not supported yet"),
        ("redis://", "expected redis://"),
        ("redis://127.0.0.1:x", "numbers"),
    ]:
        done = subprocess.run(
            [os.sys.executable, "-m", "reactor", "--proto", "ws", "--broker", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2 and message in done.stderr
        assert "Traceback" not in done.stderr
