"""The reactor core in-process: event blocks, masks, output, faults, timers.

Driven with socketpairs and `run_once`, so every step is deterministic.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import time

import pytest
from testkit import segments_in

import reactor.loop as loop_module
from reactor.handler import Handler
from reactor.handlers.echo import EchoHandler
from reactor.loop import (
    BACKPRESSURE,
    BLOCK_SIZE,
    EPOLLIN,
    EPOLLOUT,
    Connection,
    Reactor,
)


class Recorder(Handler):
    """Collects what the reactor tells it."""

    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}
        self.opened: list[Connection] = []
        self.closed: list[tuple[int, BaseException | None]] = []
        self.writable = 0

    def on_open(self, conn, peer):
        self.opened.append(conn)
        self.data[conn.fd] = bytearray()

    def on_data(self, conn, data):
        self.data[conn.fd] += data

    def on_writable(self, conn):
        self.writable += 1

    def on_close(self, conn, error):
        self.closed.append((conn.fd, error))


@pytest.fixture
def reactor():
    r = Reactor()
    yield r
    r.dispose()


def pump(reactor: Reactor, until, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.run_once(0.01)


def pair(reactor: Reactor, handler: Handler, fd: int | None = None):
    """A socketpair: one end adopted by the reactor (optionally at a chosen fd)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    raw = ours.detach()
    assert fd is None or theirs.fileno() != fd
    if fd is not None and fd != raw:
        os.dup2(raw, fd)
        os.close(raw)
        os.set_blocking(fd, False)
        raw = fd
    return reactor.add_connection(raw, handler), theirs


def fill(sock: socket.socket) -> int:
    """Write until the kernel refuses: the next write from the other side blocks."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(b"x" * 65536)
    except BlockingIOError:
        return total


class CountingEpoll:
    """Wraps select.epoll to record epoll_ctl calls, and every poll's timeout
    and event count."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls: list[tuple[str, int, int]] = []
        self.polls: list[tuple[float, int]] = []

    def poll(self, timeout, maxevents):
        events = self.real.poll(timeout, maxevents)
        self.polls.append((timeout, len(events)))
        return events

    def register(self, fd, mask):
        self.calls.append(("register", fd, mask))
        self.real.register(fd, mask)

    def modify(self, fd, mask):
        self.calls.append(("modify", fd, mask))
        self.real.modify(fd, mask)

    def unregister(self, fd):
        self.calls.append(("unregister", fd, 0))
        self.real.unregister(fd)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_event_blocks_cross_block_boundaries(reactor):
    handler = Recorder()
    wanted = [1023, 1024, 2047, 2048, 2049]
    peers = {}
    for fd in wanted:
        conn, peer = pair(reactor, handler, fd)
        assert conn.fd == fd and reactor.slot(fd) is conn
        peers[fd] = peer
    assert reactor.block_count == 3  # grown by whole blocks of 1024
    assert len(reactor._table) == 3 * BLOCK_SIZE
    for fd, peer in peers.items():
        peer.sendall(b"to %d" % fd)
    pump(reactor, lambda: all(handler.data[fd] == b"to %d" % fd for fd in wanted))
    for peer in peers.values():
        peer.close()


def test_slots_are_small_and_dictless(reactor):
    conn = reactor.slot(5)
    assert not hasattr(conn, "__dict__")
    assert sys.getsizeof(conn) <= 100
    assert type(conn).reactor is reactor  # the reactor is a class attribute, not a field


def test_epoll_ctl_only_when_the_mask_changes(reactor):
    reactor._epoll = counting = CountingEpoll(reactor._epoll)
    conn, peer = pair(reactor, Recorder())
    fd = conn.fd
    assert counting.calls == [("register", fd, EPOLLIN)]
    conn.write(b"a" * (2 << 20))  # over the socket buffer, under max_send_buffer
    assert conn.pending() > 0
    conn.write(b"b" * 1000)  # queued behind: no epoll_ctl
    assert counting.calls[1:] == [("modify", fd, EPOLLIN | EPOLLOUT)]
    received = bytearray()
    peer.setblocking(False)

    def drained():
        try:
            received.extend(peer.recv(1 << 20))
        except BlockingIOError:
            pass
        return conn.pending() == 0

    pump(reactor, drained)
    assert counting.calls[2:] == [("modify", fd, EPOLLIN)]
    conn.close()
    assert counting.calls[3:] == []  # closing the fd drops it from epoll: no DEL
    peer.close()


def test_partial_writes_keep_their_offset(reactor):
    conn, peer = pair(reactor, Recorder())
    chunks = [struct.pack(">I", i) * 4096 for i in range(600)]  # 9.8 MB, every chunk distinct
    for chunk in chunks:
        conn.write(chunk)
    expected = b"".join(chunks)
    assert conn.pending() > 0
    received = bytearray()
    peer.setblocking(False)

    def got_all():
        try:
            received.extend(peer.recv(1 << 20))
        except BlockingIOError:
            pass
        return len(received) >= len(expected)

    pump(reactor, got_all, timeout=20)
    assert received == expected
    peer.close()


def tcp_pair(reactor: Reactor, handler: Handler):
    """A loopback TCP connection: the accepted end adopted by the reactor."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname(), timeout=5)
        ours, _ = listener.accept()
    ours.setblocking(False)
    return reactor.add_connection(ours.detach(), handler), peer


def read_to_eof(reactor: Reactor, peer: socket.socket) -> bytes:
    received = bytearray()
    peer.setblocking(False)

    def at_eof():
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return False
        received.extend(chunk)
        return not chunk

    pump(reactor, at_eof, timeout=20)
    return bytes(received)


@pytest.mark.parametrize("built", [True, False], ids=["c-helper", "no-helper"])
def test_write_and_close_sends_the_bytes_then_closes(reactor, request, built):
    if not built:
        loop_module.use("python")
        request.addfinalizer(lambda: loop_module.use("c"))
    recorder = Recorder()
    conn, peer = tcp_pair(reactor, recorder)
    conn.write_and_close(b"last words")
    assert conn.closed and len(recorder.closed) == 1  # taken at once: closed at once
    assert read_to_eof(reactor, peer) == b"last words"
    peer.close()


def test_write_and_close_puts_the_fin_in_the_last_segment(reactor):
    assert loop_module.switch.active == "c", "reactor._io is not built"
    segments = {}
    for built in (True, False):
        loop_module.use("c" if built else "python")
        try:
            conn, peer = tcp_pair(reactor, Recorder())
            before = segments_in(peer)
            conn.write_and_close(b"x" * 100)
            assert read_to_eof(reactor, peer) == b"x" * 100
            segments[built] = segments_in(peer) - before
            peer.close()
        finally:
            loop_module.use("c")
    assert segments == {True: 1, False: 2}  # data + FIN together, or data then FIN


def test_write_and_close_with_more_than_the_kernel_takes(reactor):
    recorder = Recorder()
    conn, peer = tcp_pair(reactor, recorder)
    data = b"".join(struct.pack(">I", i) for i in range(2_500_000))  # 10 MB, all distinct
    conn.write_and_close(data)
    assert conn.pending() > 0 and not recorder.closed  # the rest waits for writability
    assert read_to_eof(reactor, peer) == data
    assert len(recorder.closed) == 1
    peer.close()


def test_backpressure_pauses_reading_until_drained():
    reactor = Reactor(max_send_buffer=256 * 1024)
    try:
        conn, peer = pair(reactor, EchoHandler())
        sent = 0

        def peer_keeps_writing():  # ... and never reads
            nonlocal sent
            sent += fill(peer)
            return conn.flags & BACKPRESSURE

        pump(reactor, peer_keeps_writing)
        sent += fill(peer)
        for _ in range(20):  # paused: the server takes nothing more
            reactor.run_once(0.01)
        assert fill(peer) == 0
        assert not conn.mask & EPOLLIN and conn.mask & EPOLLOUT
        assert conn.pending() <= 256 * 1024 + len(reactor.recv_buffer)
        echoed = bytearray()

        def all_back():
            try:
                echoed.extend(peer.recv(1 << 20))
            except BlockingIOError:
                pass
            return len(echoed) >= sent

        pump(reactor, all_back, timeout=20)
        assert len(echoed) == sent and not conn.flags & BACKPRESSURE
        assert conn.mask == EPOLLIN
        peer.close()
    finally:
        reactor.dispose()


class Reuser(Handler):
    """On its first data, closes the other connection and opens a new one
    that takes the freed fd number: all inside one poll batch."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.conns: list[Connection] = []
        self.done = False
        self.new_handler = Recorder()
        self.new_peer: socket.socket | None = None
        self.got: list[int] = []

    def on_data(self, conn, data):
        self.got.append(conn.fd)
        if self.done:
            return
        self.done = True
        other = next(c for c in self.conns if c is not conn)
        freed = other.fd
        other.close()
        _, self.new_peer = pair(self.reactor, self.new_handler, freed)
        self.reused_fd = freed


def test_fd_reuse_inside_one_batch_is_not_misrouted(reactor):
    handler = Reuser(reactor)
    a, peer_a = pair(reactor, handler)
    b, peer_b = pair(reactor, handler)
    handler.conns = [a, b]
    peer_a.sendall(b"1")
    peer_b.sendall(b"2")
    time.sleep(0.05)
    reactor.run_once(0.5)  # both events in one batch; the first handled closes the other
    assert handler.done
    assert reactor.slot(handler.reused_fd).handler is handler.new_handler
    assert handler.new_handler.data[handler.reused_fd] == b""  # the stale event was dropped
    assert len(handler.got) == 1
    handler.new_peer.sendall(b"fresh")
    pump(reactor, lambda: handler.new_handler.data[handler.reused_fd] == b"fresh")
    for sock in (peer_a, peer_b, handler.new_peer):
        sock.close()


class Boom(Handler):
    def on_data(self, conn, data):
        if bytes(data) == b"boom":
            raise ValueError("handler bug")
        conn.write(data)


def test_handler_exception_closes_only_that_connection(reactor, caplog):
    caplog.set_level(logging.ERROR, logger="reactor")
    bad, bad_peer = pair(reactor, Boom())
    good, good_peer = pair(reactor, Boom())
    bad_peer.sendall(b"boom")
    good_peer.sendall(b"ping")
    pump(reactor, lambda: bad.handler is None)
    assert bad_peer.recv(10) == b""  # closed: EOF
    assert good_peer.recv(10) == b"ping"
    good_peer.sendall(b"still here")
    good_peer.settimeout(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reactor.run_once(0.01)
        try:
            good_peer.setblocking(False)
            assert good_peer.recv(100) == b"still here"
            break
        except BlockingIOError:
            continue
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1 and "handler bug" in str(records[0].exc_info[1])
    assert reactor.connection_count == 1
    bad_peer.close()
    good_peer.close()


def test_reset_and_eof_close_only_their_connection(reactor):
    listener = reactor.listen("127.0.0.1", 0, EchoHandler())
    address = listener.getsockname()
    clients = [socket.create_connection(address) for _ in range(3)]
    pump(reactor, lambda: reactor.connection_count == 3)
    rst, fin, keep = clients
    rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rst.close()  # RST instead of FIN
    fin.shutdown(socket.SHUT_WR)
    pump(reactor, lambda: reactor.connection_count == 1)
    keep.sendall(b"alive")
    keep.setblocking(False)
    got = bytearray()

    def echoed():
        try:
            got.extend(keep.recv(100))
        except BlockingIOError:
            pass
        return got == b"alive"

    pump(reactor, echoed)
    fin.close()
    keep.close()


def test_write_to_a_vanished_peer_closes_quietly(reactor):
    handler = Recorder()
    conn, peer = pair(reactor, handler)
    peer.close()
    conn.write(b"x" * 100000)  # EPIPE: the close is deferred, write never raises
    conn.write(b"more")  # no-op once dead
    pump(reactor, lambda: handler.closed)
    assert isinstance(handler.closed[0][1], OSError)


def test_timers_fire_in_order_and_cancel(reactor):
    fired = []
    reactor.call_later(0.05, fired.append, "second")
    reactor.call_later(0.01, fired.append, "first")
    cancelled = reactor.call_later(0.02, fired.append, "never")
    cancelled.cancel()
    ticks = reactor.call_every(0.01, fired.append, "tick")
    pump(reactor, lambda: "second" in fired)
    ticks.cancel()
    assert fired.index("first") < fired.index("second")
    assert "never" not in fired and fired.count("tick") >= 2


def run_one_message(busy_poll: float) -> list[tuple[float, int]]:
    """run() while one message arrives and is echoed; the polls it made."""
    reactor = Reactor(busy_poll=busy_poll)
    reactor._epoll = polls = CountingEpoll(reactor._epoll)
    conn, peer = pair(reactor, EchoHandler())
    peer.sendall(b"ping")
    reactor.call_later(0.2, reactor.stop)  # well after the spin window
    try:
        reactor.run()
        assert peer.recv(4) == b"ping"
    finally:
        peer.close()
        reactor.dispose()
    return polls.polls


def test_busy_poll_keeps_polling_after_a_batch_then_sleeps():
    spins = run_one_message(busy_poll=0.005)
    first = next(i for i, (_, count) in enumerate(spins) if count)
    after = spins[first + 1 :]
    nonblocking = [t for t, _ in after if t == 0]
    assert len(nonblocking) > 10, "no busy polling after the batch"
    assert after[-1][0] > 0, "the loop never went back to sleeping"
    assert all(t > 0 for t, _ in after[len(nonblocking) :]), "spun again without events"


def test_busy_poll_is_off_by_default():
    polls = run_one_message(busy_poll=0.0)
    assert [t for t, _ in polls if t == 0] == []


STEP = 2.0**-20  # ~1 µs of fake time per zero-timeout poll: binary, so sums stay exact


class ScriptedEpoll:
    """A fake epoll and clock for the spin policy: one message arrives after
    each of ``gaps`` (in STEPs, counted from the end of the previous batch).
    A zero-timeout poll costs one STEP of fake time; a blocking poll sleeps
    until the next arrival. ``spins_after[i]``: the zero-timeout polls made
    after batch i, the one that finds the next message included."""

    def __init__(self, reactor: Reactor, fd: int, peer: socket.socket, gaps: list[int]):
        self.real, self.reactor, self.fd, self.peer = reactor._epoll, reactor, fd, peer
        self.gaps = list(gaps)
        self.now = 100.0
        self.due: float | None = self.now + self.gaps.pop(0) * STEP
        self.spins_after: list[int] = []
        self.echoed = 0
        reactor._clock = self.clock

    def clock(self) -> float:
        return self.now

    def poll(self, timeout, maxevents):
        if timeout == 0 and self.spins_after:
            self.spins_after[-1] += 1
        if self.due is None:  # the script is over
            self.reactor.stop()
            self.now += STEP
            return []
        if timeout == 0 and self.now < self.due:
            self.now += STEP
            return []
        self.now = max(self.now, self.due)
        self.drain()
        self.peer.sendall(b"x")
        self.due = self.now + self.gaps.pop(0) * STEP if self.gaps else None
        self.spins_after.append(0)
        return [(self.fd, EPOLLIN)]

    def drain(self) -> None:
        """Read the echoes so far (a socketpair buffers ~250 one-byte writes)."""
        try:
            self.echoed += len(self.peer.recv(65536, socket.MSG_DONTWAIT))
        except BlockingIOError:
            pass

    def __getattr__(self, name):
        return getattr(self.real, name)


def spins_for_gaps(gaps: list[int], busy_poll_steps: int) -> list[int]:
    reactor = Reactor(busy_poll=busy_poll_steps * STEP)
    conn, peer = pair(reactor, EchoHandler())
    scripted = ScriptedEpoll(reactor, conn.fd, peer, gaps)
    reactor._epoll = scripted
    try:
        reactor.run()
        scripted.drain()
        assert scripted.echoed == len(gaps)  # every message was echoed
    finally:
        peer.close()
        reactor.dispose()
    return scripted.spins_after[:-1]  # the last batch has no next message


def test_busy_poll_keeps_spinning_while_gaps_are_short():
    spins = spins_for_gaps([0] + [20] * 10, busy_poll_steps=50)
    assert spins == [21] * 10  # each 20-step gap found by the spin: 20 misses + 1 hit


def test_busy_poll_backs_off_exponentially_while_spins_find_nothing():
    spins = spins_for_gaps([0] + [10_000] * 40, busy_poll_steps=40)
    spun = [i for i, count in enumerate(spins) if count]
    # a fruitless spin is the whole window (+1: the first poll); the loop then sleeps
    # after the next 1, 2, 4, 8, 16 batches before it tries again
    assert spun == [0, 2, 5, 10, 19, 36], spins
    assert {spins[i] for i in spun} == {41}


def test_busy_poll_backoff_is_capped():
    spins = spins_for_gaps([0] + [10_000] * 300, busy_poll_steps=4)
    spun = [i for i, count in enumerate(spins) if count]
    assert [b - a for a, b in zip(spun, spun[1:], strict=False)][-2:] == [65, 65]  # 64 sleeps


def test_busy_poll_spin_that_finds_events_resets_the_backoff():
    long_gap, short_gap = 10_000, 10
    gaps = [0] + [long_gap] * 3 + [short_gap] * 3 + [long_gap] * 4
    spins = spins_for_gaps(gaps, busy_poll_steps=40)
    # misses after batches 0 and 2 (then sleeps after 1, then 2 batches); the spin after
    # batch 5 finds the next message, so the miss after batch 6 costs 1 batch, not 4
    assert spins == [41, 0, 41, 0, 0, 11, 41, 0, 41, 0], spins


@pytest.mark.parametrize("busy_poll", [-0.001, 0.011])
def test_busy_poll_is_bounded(busy_poll):
    with pytest.raises(ValueError):
        Reactor(busy_poll=busy_poll)


def test_idle_connections_are_closed():
    reactor = Reactor(idle_timeout=1)
    try:
        handler = Recorder()
        idle, idle_peer = pair(reactor, handler)
        busy, busy_peer = pair(reactor, handler)
        deadline = time.monotonic() + 6
        while not handler.closed and time.monotonic() < deadline:
            busy_peer.sendall(b".")
            reactor.run_once(0.1)
        assert [fd for fd, _ in handler.closed] == [idle.fd]
        assert isinstance(handler.closed[0][1], TimeoutError)
        assert busy.handler is handler
        idle_peer.close()
        busy_peer.close()
    finally:
        reactor.dispose()


def test_lingering_close_delivers_output_then_waits_for_fin(reactor):
    handler = Recorder()
    conn, peer = pair(reactor, handler)
    peer.sendall(b"unread request bytes")
    conn.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    conn.close_after_flush(linger=True)
    peer.settimeout(5)
    assert recv_all(peer) == b"HTTP/1.1 400 Bad Request\r\n\r\n"  # then EOF (SHUT_WR)
    assert conn.handler is handler  # still lingering: reading and discarding
    peer.sendall(b"more junk")
    peer.close()
    pump(reactor, lambda: handler.closed)


def recv_all(sock):
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def test_graceful_shutdown_asks_handlers_then_returns(reactor):
    class Polite(Recorder):
        def on_shutdown(self, conn):
            conn.write(b"bye")
            conn.close_after_flush()

    handler = Polite()
    _, peer = pair(reactor, handler)
    listener = reactor.listen("127.0.0.1", 0, handler)
    port = listener.getsockname()[1]
    reactor.call_later(0.05, reactor.shutdown, 2.0)
    started = time.monotonic()
    reactor.run()
    assert time.monotonic() - started < 2
    peer.settimeout(5)
    assert recv_all(peer) == b"bye"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


ALLOCATION_CHURN = """
import resource, sys
from reactor.allocator import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
live = []
for _ in range(2000):  # 64 KiB messages, a few in flight at once, then all freed
    live.append(bytes(64 * 1024))
    if len(live) > 4:
        live.clear()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_tuned_malloc_reuses_the_heap_for_large_messages():
    def faults(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", ALLOCATION_CHURN, mode],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    default, tuned = faults("default"), faults("tuned")
    assert tuned < 100, f"{tuned} page faults for 2000 reused 64 KiB blocks"
    assert default > 10 * tuned  # the churn the tuning removes (glibc's default trims)


class FaultyHandler(Handler):
    """Echoes; raises in one chosen callback, for the first connection only."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.victim: Connection | None = None
        self.picked = False
        self.closed_fds: list[int] = []

    def _fail_if_victim(self, conn, callback: str) -> None:
        if callback == self.where and conn is self.victim:
            raise RuntimeError(f"bug in {callback}")

    def on_open(self, conn, peer):
        if not self.picked:
            self.victim, self.picked = conn, True
        self._fail_if_victim(conn, "on_open")

    def on_data(self, conn, data):
        if bytes(data) == b"want-writable":
            conn.want_writable()
            return
        self._fail_if_victim(conn, "on_data")
        conn.write(data)

    def on_eof(self, conn):
        self._fail_if_victim(conn, "on_eof")
        conn.close()

    def on_writable(self, conn):
        self._fail_if_victim(conn, "on_writable")

    def on_shutdown(self, conn):
        self._fail_if_victim(conn, "on_shutdown")
        conn.write(b"bye")
        conn.close_after_flush()

    def on_close(self, conn, error):
        self.closed_fds.append(conn.fd)
        if conn is self.victim:
            self.victim = None  # the slot may be reused by a later connection
            if self.where == "on_close":
                raise RuntimeError("bug in on_close")


def echoes(reactor: Reactor, sock: socket.socket, message: bytes) -> bool:
    sock.sendall(message)
    got = bytearray()

    def arrived() -> bool:
        try:
            got.extend(sock.recv(100))
        except BlockingIOError:
            pass
        return bytes(got) == message

    pump(reactor, arrived)
    return True


def sees_eof(reactor: Reactor, sock: socket.socket) -> bool:
    def closed() -> bool:
        try:
            return sock.recv(100) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True

    pump(reactor, closed)
    return True


@pytest.mark.parametrize(
    "where", ["on_open", "on_data", "on_eof", "on_writable", "on_shutdown", "on_close"]
)
def test_an_exception_in_any_callback_costs_only_that_connection(reactor, caplog, where):
    caplog.set_level(logging.ERROR, logger="reactor")
    handler = FaultyHandler(where)
    address = reactor.listen("127.0.0.1", 0, handler).getsockname()

    def client() -> socket.socket:
        sock = socket.create_connection(address)
        sock.setblocking(False)
        count = reactor.connection_count
        pump(reactor, lambda: reactor.connection_count > count or handler.closed_fds)
        return sock

    victim = client()
    bystander = client()
    if where == "on_data":
        victim.sendall(b"boom")
    elif where == "on_eof":
        victim.shutdown(socket.SHUT_WR)
    elif where == "on_writable":
        victim.sendall(b"want-writable")
    elif where == "on_close":
        victim.close()
    if where == "on_shutdown":
        reactor.shutdown(5.0)
        assert sees_eof(reactor, victim)
        got = bytearray()
        pump(reactor, lambda: got.extend(_recv_some(bystander)) or got.endswith(b"bye"))
        pump(reactor, lambda: reactor.connection_count == 0)
    else:
        if where != "on_close":
            assert sees_eof(reactor, victim)
        pump(reactor, lambda: reactor.connection_count == 1)
        assert echoes(reactor, bystander, b"still served")
        newcomer = client()  # the loop still accepts
        assert echoes(reactor, newcomer, b"hello")
        assert reactor.connection_count == 2
        newcomer.close()
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert f"bug in {where}" in str(failures[0].exc_info[1])
    victim.close()
    bystander.close()


def _recv_some(sock: socket.socket) -> bytes:
    try:
        return sock.recv(100)
    except BlockingIOError:
        return b""
