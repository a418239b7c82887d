"""Connection.writev and Connection.write_more: the output calls a handler makes
instead of touching the socket itself, under the rules of Connection.write
(order behind buffered output, the rest buffered, a failed peer closed later)."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from testkit import segments_in

import reactor.loop as loop_module
from reactor.handler import Handler
from reactor.loop import IOV_MAX, Reactor


class Closes(Handler):
    def __init__(self) -> None:
        self.closed: list[BaseException | None] = []

    def on_close(self, conn, error):
        self.closed.append(error)


@pytest.fixture
def reactor():
    r = Reactor()
    yield r
    r.dispose()


def tcp_pair(reactor: Reactor, handler: Handler):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    for sock in (ours, peer):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ours.setblocking(False)
    return reactor.add_connection(ours.detach(), handler), peer


def drain(reactor: Reactor, peer: socket.socket, size: int) -> bytes:
    peer.setblocking(False)
    received = bytearray()
    deadline = time.monotonic() + 20
    while len(received) < size:
        assert time.monotonic() < deadline, f"got {len(received)} of {size} bytes"
        reactor.run_once(0.01)
        try:
            received += peer.recv(1 << 20)
        except BlockingIOError:
            pass
    return bytes(received)


def numbered(count: int, start: int = 0) -> bytes:
    return b"".join(struct.pack(">I", i) for i in range(start, start + count))


def test_writev_sends_every_part_in_order(reactor):
    conn, peer = tcp_pair(reactor, Closes())
    parts = [numbered(10), numbered(50_000, 10), b"", numbered(3, 50_010)]
    conn.writev(parts)
    assert drain(reactor, peer, len(b"".join(parts))) == b"".join(parts)


def test_writev_buffers_what_the_kernel_refuses(reactor):
    conn, peer = tcp_pair(reactor, Closes())
    parts = [numbered(1_000_000), numbered(1_000_000, 1_000_000)]  # 8 MB: more than it takes
    conn.writev(parts)
    assert conn.pending() > 0  # the rest waits for writability, from the right offset
    assert drain(reactor, peer, 8_000_000) == b"".join(parts)
    assert conn.pending() == 0


def test_writev_queues_behind_buffered_output(reactor):
    conn, peer = tcp_pair(reactor, Closes())
    first = numbered(2_000_000)
    conn.write(first)
    assert conn.pending() > 0
    conn.writev([b"after", b"-", b"it"])
    assert drain(reactor, peer, len(first) + 8) == first + b"after-it"


def test_writev_takes_more_parts_than_one_syscall_can(reactor):
    conn, peer = tcp_pair(reactor, Closes())
    parts = [struct.pack(">I", i) for i in range(IOV_MAX + 5)]
    conn.writev(parts)
    assert drain(reactor, peer, 4 * len(parts)) == b"".join(parts)


@pytest.mark.parametrize("call", ["writev", "write_more"])
def test_output_to_a_vanished_peer_closes_that_connection_later(reactor, call):
    handler = Closes()
    conn, peer = tcp_pair(reactor, handler)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a reset: the next send fails
    time.sleep(0.05)
    for _ in range(3):
        if call == "writev":
            conn.writev([b"x" * 1000, b"y" * 1000])
        else:
            conn.write_more(b"x" * 1000)
    assert not handler.closed  # never under the caller's feet ...
    reactor.run_once(0.01)
    assert len(handler.closed) == 1 and isinstance(handler.closed[0], OSError)  # ... but soon


@pytest.mark.parametrize("built", [True, False], ids=["c-helper", "no-helper"])
def test_write_more_lets_the_next_write_share_its_segment(reactor, request, built):
    if not built:
        loop_module.use("python")
        request.addfinalizer(lambda: loop_module.use("c"))
    conn, peer = tcp_pair(reactor, Closes())
    before = segments_in(peer)
    conn.write_more(b"HTTP/1.1 200 OK\r\n\r\n")
    conn.write(b"body")
    assert drain(reactor, peer, 23) == b"HTTP/1.1 200 OK\r\n\r\nbody"
    assert segments_in(peer) - before == 1  # the head did not leave as a lone packet


def test_plain_writes_leave_as_two_segments(reactor):
    """The control for the test above: without MSG_MORE, TCP_NODELAY sends each write."""
    conn, peer = tcp_pair(reactor, Closes())
    before = segments_in(peer)
    conn.write(b"HTTP/1.1 200 OK\r\n\r\n")
    conn.write(b"body")
    assert drain(reactor, peer, 23) == b"HTTP/1.1 200 OK\r\n\r\nbody"
    assert segments_in(peer) - before == 2


def test_write_more_queues_behind_buffered_output(reactor):
    conn, peer = tcp_pair(reactor, Closes())
    first = numbered(2_000_000)
    conn.write(first)
    conn.write_more(b"head")
    conn.write(b"body")
    assert drain(reactor, peer, len(first) + 8) == first + b"headbody"
