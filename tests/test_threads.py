"""Work outside the reactor thread: the cross-thread entry of the reactor
(call_soon_threadsafe), the thread pool (run_in_thread, --threads), the
connection methods called from other threads, the graceful stop waiting for
thread work, and flow control (on_drain) for streaming applications.

Unit tests drive a Reactor directly; the rest run real servers with the
applications below (written to a temporary module on PYTHONPATH).
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time

import pytest
from test_ws_server import Raw, client
from testkit import ServerProcess, importable_module, rss_bytes

from reactor.concurrency import ThreadPool, ThreadPoolFull
from reactor.loop import Reactor

APPS = '''
import hashlib
import logging
import threading
import time

from reactor.app import WebSocketApp

log = logging.getLogger("threadapps")
released = threading.Event()


class Hammer(WebSocketApp):
    """"hammer T N": T threads each send N numbered messages (and broadcast every
    16th) while the client keeps echoing through the loop."""

    def on_message(self, conn, data):
        if isinstance(data, str) and data.startswith("hammer "):
            threads, count = map(int, data.split()[1:])
            for t in range(threads):
                threading.Thread(target=self.pound, args=(conn, t, count)).start()
        elif data == "goodbye":
            threading.Thread(target=self.goodbye, args=(conn,)).start()
        elif data == "order":
            threading.Thread(target=self.in_order, args=(conn,)).start()

        else:
            conn.send(data)

    def pound(self, conn, t, count):
        for i in range(count):
            payload = f"t{t}:{i}:" + "x" * (i % 300)
            conn.send(payload if i % 2 else payload.encode())
            if i % 16 == 0:
                self.server.broadcast(f"b{t}:{i}")
        conn.send(f"end {t}")

    def in_order(self, conn):
        for i in range(0, 300, 3):  # direct sends and calls run on the loop, interleaved
            conn.send(str(i))
            self.server.call_soon_threadsafe(conn.send, str(i + 1))
            conn.send(str(i + 2))

    def goodbye(self, conn):
        log.info("event ping from thread %s", conn.ping(b"from-thread"))
        conn.send("bye")
        try:
            conn.close(999)  # not a valid close code: raised here, in the caller's thread
        except ValueError as exc:
            log.info("event bad close refused: %s", exc)
        conn.close(4001, "from a thread")
        log.info("event send after close %s", conn.send("late"))


class Blocking(WebSocketApp):
    """A blocking call per message, in the pool; its result sent from the
    done-callback (reactor thread)."""

    def on_message(self, conn, data):
        if data == "release":
            released.set()
            conn.send("released")
            return
        if data == "threads":
            conn.send(str(len(self.server._handler.pool._threads)))
            return
        future = self.server.run_in_thread(self.work, data)
        future.add_done_callback(lambda f: self.done(conn, f))

    def work(self, data):
        if data == "wait":
            released.wait(30)
        elif data.startswith("sleep "):
            time.sleep(float(data.split()[1]))
            log.info("event job finished %s", data)
        return hashlib.sha256(data.encode()).hexdigest(), threading.current_thread().name

    def done(self, conn, future):
        digest, thread = future.result()
        on_loop = threading.current_thread() is threading.main_thread()
        conn.send(f"{digest} {thread.startswith('reactor-pool')} {on_loop}")


class Streamer(WebSocketApp):
    """"stream N": N bytes in 64 KiB messages, paused by conn.writable, resumed
    by on_drain."""

    def on_message(self, conn, data):
        conn.data = [int(data.split()[1]), 0]
        self.pump(conn)

    def on_drain(self, conn):
        conn.data[1] += 1
        self.pump(conn)

    def pump(self, conn):
        left, drains = conn.data
        chunk = bytes(65536)
        while left > 0 and conn.writable:
            conn.send(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        conn.data[0] = left
        if left <= 0:
            conn.send(f"done {drains}")
'''


@pytest.fixture(scope="module")
def apps_path(tmp_path_factory):
    with importable_module(tmp_path_factory.mktemp("apps"), "threadapps", APPS) as folder:
        yield folder


# ---- the reactor's cross-thread entry ----------------------------------------------------


def test_call_soon_threadsafe_runs_every_call_in_per_thread_order_with_one_wakeup():
    reactor = Reactor()
    ran: list[tuple[int, int, bool]] = []
    loop_thread = threading.get_ident()

    def record(t: int, i: int) -> None:
        ran.append((t, i, threading.get_ident() == loop_thread))

    def post(t: int) -> None:
        for i in range(500):
            reactor.call_soon_threadsafe(record, t, i)

    try:
        threads = [threading.Thread(target=post, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert reactor.run_once(timeout=1.0) == 1  # 2000 calls, one wake-up event
        assert len(ran) == 2000 and all(on_loop for _, _, on_loop in ran)
        for t in range(4):
            assert [i for u, i, _ in ran if u == t] == list(range(500))
        assert reactor.run_once(timeout=0.0) == 0  # the eventfd was drained
    finally:
        reactor.dispose()


def test_call_soon_threadsafe_wakes_a_sleeping_loop_and_survives_a_failing_call():
    reactor = Reactor()
    ran = threading.Event()

    def fail() -> None:
        raise RuntimeError("a bug in the callback")

    try:
        timer = threading.Timer(
            0.05,
            lambda: [reactor.call_soon_threadsafe(fail), reactor.call_soon_threadsafe(ran.set)],
        )
        timer.start()
        events = 0
        deadline = time.monotonic() + 10
        while not ran.is_set() and time.monotonic() < deadline:
            events += reactor.run_once(timeout=5.0)
        timer.join()
        assert ran.is_set() and events in (1, 2)  # one wake-up per call at most
    finally:
        reactor.dispose()
    reactor.call_soon_threadsafe(ran.clear)  # after dispose: dropped, no write to a stale fd


def test_call_soon_threadsafe_from_a_callback_runs_on_the_next_wakeup():
    reactor = Reactor()
    order: list[str] = []
    try:
        reactor.call_soon_threadsafe(
            lambda: (order.append("first"), reactor.call_soon_threadsafe(order.append, "second"))
        )
        reactor.run_once(timeout=1.0)
        assert order == ["first"]  # a call posted while draining does not starve the poll
        reactor.run_once(timeout=1.0)
        assert order == ["first", "second"]
    finally:
        reactor.dispose()


# ---- the thread pool ---------------------------------------------------------------------


def run_until(reactor: Reactor, predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.run_once(timeout=0.05)


def test_pool_done_callbacks_run_on_the_reactor_thread_and_threads_are_bounded():
    reactor = Reactor()
    pool = ThreadPool(reactor, threads=3)
    gate = threading.Event()
    seen: list[tuple[int, bool]] = []
    try:
        assert pool._threads == []  # no thread until the first job
        futures = [pool.submit(lambda n: (gate.wait(10), n * n)[1], n) for n in range(10)]
        for future in futures:
            future.add_done_callback(
                lambda f: seen.append(
                    (f.result(), threading.current_thread() is threading.main_thread())
                )
            )
        gate.set()
        run_until(reactor, lambda: len(seen) == 10)
        assert sorted(seen) == [(n * n, True) for n in range(10)]
        assert len(pool._threads) == 3
        late: list[bool] = []  # added after completion: still on the reactor thread, later
        futures[0].add_done_callback(
            lambda f: late.append(threading.current_thread() is threading.main_thread())
        )
        assert late == []
        run_until(reactor, lambda: late == [True])
    finally:
        assert pool.join(5)
        reactor.dispose()


def test_pool_backlog_is_bounded_and_join_cancels_waiting_jobs():
    reactor = Reactor()
    pool = ThreadPool(reactor, threads=1, backlog=2)
    gate = threading.Event()
    try:
        running = pool.submit(gate.wait, 10)
        deadline = time.monotonic() + 5
        while pool._running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = [pool.submit(time.sleep, 0), pool.submit(time.sleep, 0)]
        with pytest.raises(ThreadPoolFull):
            pool.submit(time.sleep, 0)
        assert not pool.join(0.1)  # the running job outlives the deadline: reported
        assert all(f.cancelled() for f in waiting)
        with pytest.raises(RuntimeError):
            pool.submit(time.sleep, 0)
        gate.set()
        assert pool.join(5) and running.result() is True
    finally:
        gate.set()
        reactor.dispose()


# ---- a server: sends from other threads ---------------------------------------------------


def test_sends_and_broadcasts_from_threads_arrive_whole_and_in_per_thread_order(
    apps_path, server_factory
):
    server = server_factory("--proto", "ws", "--app", "threadapps:Hammer")
    threads, count = 4, 400
    with client(server.port) as ws, client(server.port) as watcher:
        ws.send(f"hammer {threads} {count}")
        for i in range(200):  # the loop keeps serving this connection's echoes meanwhile
            ws.send(f"echo {i}")
        next_index = dict.fromkeys(range(threads), 0)
        ended: set[int] = set()
        echoes = broadcasts = 0
        while len(ended) < threads or echoes < 200:
            message = ws.recv(timeout=30)
            text = message.decode() if isinstance(message, bytes) else message
            if text.startswith("echo "):
                assert text == f"echo {echoes}"
                echoes += 1
            elif text.startswith("end "):
                t = int(text[4:])
                assert next_index[t] == count
                ended.add(t)
            elif text.startswith("b"):
                broadcasts += 1
            else:
                t, i, pad = text[1:].split(":")
                t, i = int(t), int(i)
                assert i == next_index[t] and pad == "x" * (i % 300)  # whole, in order
                assert isinstance(message, str) == bool(i % 2)
                next_index[t] += 1
        assert broadcasts == threads * (count // 16)
        watched = [watcher.recv(timeout=10) for _ in range(threads * (count // 16))]
        for t in range(threads):
            assert [int(m.split(":")[1]) for m in watched if m.startswith(f"b{t}:")] == list(
                range(0, count, 16)
            )
        ws.send("still fine")
        assert ws.recv(timeout=10) == "still fine"


def test_sends_and_call_soon_threadsafe_from_one_thread_keep_its_order(apps_path, server_factory):
    server = server_factory("--proto", "ws", "--app", "threadapps:Hammer")
    with client(server.port) as ws:
        ws.send("order")
        assert [ws.recv(timeout=10) for _ in range(300)] == [str(i) for i in range(300)]


def test_ping_and_close_from_a_thread(apps_path, server_factory):
    server = server_factory("--proto", "ws", "--app", "threadapps:Hammer")
    raw = Raw(server.port)
    raw.handshake()
    raw.sock.sendall(masked_text(b"goodbye"))
    assert raw.recv_frame() == (True, 0x9, b"from-thread")
    assert raw.recv_frame() == (True, 0x1, b"bye")
    fin, opcode, payload = raw.recv_frame()
    assert (opcode, int.from_bytes(payload[:2], "big"), payload[2:]) == (
        0x8,
        4001,
        b"from a thread",
    )
    raw.close()
    server.wait_for_log(r"event ping from thread True")
    server.wait_for_log(r"event bad close refused")
    server.wait_for_log(r"event send after close (True|False)")


def masked_text(payload: bytes) -> bytes:
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + body


def test_run_in_thread_keeps_the_loop_serving_and_calls_back_on_the_reactor_thread(
    apps_path, server_factory
):
    server = server_factory("--proto", "ws", "--app", "threadapps:Blocking", "--threads", "2")
    with client(server.port) as blocked, client(server.port) as other:
        blocked.send("threads")
        assert blocked.recv(timeout=10) == "0"  # no thread before the first job
        blocked.send("wait")  # blocks a pool thread until "release" arrives
        other.send("hello")  # served by the other pool thread meanwhile
        digest, in_pool, on_loop = other.recv(timeout=10).split()
        assert (in_pool, on_loop) == ("True", "True")
        other.send("release")  # the reactor is free: it reads this
        assert other.recv(timeout=10) == "released"
        digest, in_pool, on_loop = blocked.recv(timeout=10).split()
        assert (in_pool, on_loop) == ("True", "True")
        for n in range(8):
            blocked.send(f"job {n}")
        assert len({blocked.recv(timeout=10) for _ in range(8)}) == 8
        blocked.send("threads")
        assert blocked.recv(timeout=10) == "2"  # --threads bounds the pool


@pytest.mark.parametrize(("job", "finished"), [("sleep 1", True), ("sleep 30", False)])
def test_graceful_stop_waits_for_thread_work_up_to_the_shutdown_timeout(apps_path, job, finished):
    server = ServerProcess(
        ["--proto", "ws", "--app", "threadapps:Blocking", "--shutdown-timeout", "3"]
    )
    try:
        with client(server.port) as ws:
            ws.send(job)
            time.sleep(0.2)  # let the job start (not a pass/fail timing)
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(15) == 0
    finally:
        server.stop()
    assert ("event job finished" in server.log_text()) is finished
    assert ("still running at the deadline" in server.log_text()) is not finished


# ---- flow control: on_drain ------------------------------------------------------------


def read_stream(sock, until: bytes, *, pause_every: int, pause: float) -> tuple[int, bytes]:
    """Count binary payload bytes up to the text message starting with ``until``,
    reading slowly; returns (bytes, that text message). A close frame fails."""
    buf = bytearray()
    total = reads = 0
    while True:
        while len(buf) >= 2:
            b1 = buf[1] & 0x7F
            start, size = 2, b1
            if b1 == 126:
                if len(buf) < 4:
                    break
                size, start = struct.unpack_from("!H", buf, 2)[0], 4
            elif b1 == 127:
                if len(buf) < 10:
                    break
                size, start = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < start + size:
                break
            opcode = buf[0] & 0x0F
            payload = bytes(buf[start : start + size]) if opcode != 0x2 else b""
            del buf[: start + size]
            assert opcode != 0x8, f"closed: {payload!r}"
            if opcode == 0x1 and payload.startswith(until):
                return total, payload
            total += size
        chunk = sock.recv(1 << 16)
        assert chunk, "EOF"
        buf += chunk
        reads += 1
        if reads % pause_every == 0:
            time.sleep(pause)  # a slow reader


def test_streaming_100_mib_to_a_slow_reader_with_on_drain_no_1008_bounded_memory(
    apps_path, server_factory
):
    limit = 1 << 20
    server = server_factory(
        "--proto", "ws", "--app", "threadapps:Streamer", "--max-send-buffer", str(limit)
    )
    raw = Raw(server.port, rcvbuf=65536)
    raw.handshake()
    before = rss_bytes(server.pid)
    size = 100 << 20
    raw.sock.sendall(masked_text(f"stream {size}".encode()))
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], rss_bytes(server.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        got, done = read_stream(raw.sock, b"done", pause_every=64, pause=0.01)
    finally:
        stop.set()
        sampler.join()
        raw.close()
    assert got == size
    assert int(done.split()[1]) > 10  # the producer really waited for the reader, many times
    grown = peak[0] - before
    assert grown < 16 * limit, f"server RSS grew {grown >> 20} MiB"
    assert "closing with 1008" not in server.log_text()


def test_on_drain_arrives_when_the_buffer_falls_to_low_water(tmp_path):
    """The reactor half: want_low_water calls on_writable below low_water
    before the buffer is empty."""
    from reactor.handler import Handler

    reactor = Reactor(max_send_buffer=1 << 20)
    a, b = __import__("socket").socketpair()
    a.setblocking(False)
    calls: list[int] = []

    class Producer(Handler):
        def on_writable(self, conn):
            calls.append(conn.pending())

    try:
        conn = reactor.add_connection(a.detach(), Producer())
        conn.write(bytes(4 << 20))  # far more than the socketpair holds
        assert conn.pending() > reactor.high_water
        conn.want_low_water()
        while not calls:
            b.recv(1 << 16)
            reactor.run_once(0.01)
        assert 0 < calls[0] <= reactor.low_water  # before it ran dry
    finally:
        reactor.dispose()
        b.close()
