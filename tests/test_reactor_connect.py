"""Outbound connections in the reactor core: a non-blocking connect completed
on EPOLLOUT, then the same slot and handler model as accepted connections."""

from __future__ import annotations

import socket

from reactor.handler import Handler
from reactor.loop import Reactor


class Recorder(Handler):
    def __init__(self) -> None:
        self.events: list = []

    def on_open(self, conn, peer):
        self.events.append(("open", peer))
        conn.write(b"hello")

    def on_data(self, conn, data):
        self.events.append(("data", bytes(data)))

    def on_close(self, conn, error):
        self.events.append(("close", type(error).__name__ if error else None))


def run_until(reactor: Reactor, predicate, rounds: int = 200) -> None:
    for _ in range(rounds):
        if predicate():
            return
        reactor.run_once(0.01)
    assert predicate()


def test_connect_opens_then_reads_and_writes_like_an_accepted_connection():
    reactor = Reactor()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        handler = Recorder()
        conn = reactor.connect("127.0.0.1", port, handler)
        assert handler.events == []  # nothing until the connect completes
        peer, _ = server.accept()
        run_until(reactor, lambda: handler.events)
        assert handler.events == [("open", ("127.0.0.1", port))]
        assert peer.recv(5) == b"hello"
        peer.sendall(b"world")
        run_until(reactor, lambda: len(handler.events) == 2)
        assert handler.events[1] == ("data", b"world")
        peer.close()
        run_until(reactor, lambda: conn.handler is None)
        assert handler.events[-1] == ("close", None)
    reactor.dispose()


def test_a_refused_connect_closes_with_the_error_and_never_opens():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connects are refused
        reactor = Reactor()
        handler = Recorder()
        reactor.connect("127.0.0.1", port, handler)
        run_until(reactor, lambda: handler.events)
        assert handler.events == [("close", "ConnectionRefusedError")]
        assert reactor.connection_count == 0
        reactor.dispose()


def test_the_idle_sweep_spares_connections_exempted_from_it():
    """Broker links are silent while nothing is published: they are exempt."""
    reactor = Reactor(idle_timeout=10)
    pairs = [socket.socketpair() for _ in range(2)]
    kept, swept = (reactor.add_connection(ours.detach(), Handler()) for ours, _ in pairs)
    kept.exempt_from_idle_timeout()
    for conn in (kept, swept):
        conn.last_active = reactor.tick - 100  # silent far longer than the timeout
    reactor._sweep_idle()
    assert kept.handler is not None and swept.handler is None
    reactor.dispose()
    for _, theirs in pairs:
        theirs.close()
