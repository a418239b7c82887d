"""`python -m reactor --proto echo` as a subprocess, over real TCP sockets."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from testkit import (
    REPO,
    children,
    cpu_seconds,
    fd_count,
    recv_exactly,
    recv_until_eof,
    rss_bytes,
    wait_until,
)


def echo_once(sock: socket.socket, payload: bytes) -> bytes:
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    echoed = recv_exactly(sock, len(payload))
    sender.join()
    return echoed


def test_echo_one_byte_and_ten_mebibytes(server_factory):
    server = server_factory("--proto", "echo")
    with server.connect() as sock:
        assert echo_once(sock, b"x") == b"x"
        big = os.urandom(10 * 1024 * 1024)  # far beyond socket buffers: partial writes, EPOLLOUT
        assert echo_once(sock, big) == big
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_eof(sock) == b""  # the server finishes and closes after our FIN


def test_thousand_concurrent_connections_each_echo(server_factory):
    server = server_factory("--proto", "echo")
    socks = [server.connect() for _ in range(1000)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"message %04d" % i)
        for i, sock in enumerate(socks):
            assert recv_exactly(sock, 12) == b"message %04d" % i
    finally:
        for sock in socks:
            sock.close()


def test_idle_connections_time_out(server_factory):
    server = server_factory("--proto", "echo", "--idle-timeout", "1")
    idle = server.connect()
    busy = server.connect()
    started = time.monotonic()
    idle.settimeout(0.2)
    closed = False
    while time.monotonic() - started < 8 and not closed:
        busy.sendall(b"k")
        assert recv_exactly(busy, 1) == b"k"
        try:
            closed = idle.recv(1) == b""
        except TimeoutError:
            pass
    assert closed, "the idle connection was not closed"
    assert time.monotonic() - started >= 1  # not before its timeout
    busy.sendall(b"still")
    assert recv_exactly(busy, 5) == b"still"


def low_fd_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def test_emfile_pauses_accepting_without_spinning_then_recovers(server_factory):
    # --max-connections above the fd limit: the kernel, not the cap, says no.
    server = server_factory(
        "--proto", "echo", "--max-connections", "1000", preexec_fn=low_fd_limit(64)
    )
    flood = []
    for _ in range(150):  # far more than 64 fds: the accept queue stays non-empty
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", server.port))
        flood.append(sock)
    server.wait_for_log("pausing accepts")
    before = cpu_seconds(server.pid)
    time.sleep(2)
    burned = cpu_seconds(server.pid) - before
    assert burned < 1.0, f"server burned {burned:.2f}s of CPU in 2s while out of fds"
    assert server.proc.poll() is None
    for sock in flood:
        sock.close()
    with server.connect() as sock:  # accepting resumes by itself
        assert echo_once(sock, b"back") == b"back"


def test_busy_poll_answers_and_does_not_spin_while_idle(server_factory):
    server = server_factory("--proto", "echo", "--busy-poll", "10000")
    with server.connect() as sock:
        for i in range(200):  # one at a time: every message lands in a spin window
            assert echo_once(sock, b"%d" % i) == b"%d" % i
        time.sleep(0.1)  # the last spin window (10 ms) is over
        before = cpu_seconds(server.pid)
        time.sleep(1.5)
        burned = cpu_seconds(server.pid) - before
        assert burned < 0.5, f"an idle server burned {burned:.2f}s of CPU in 1.5s"
        assert echo_once(sock, b"again") == b"again"


def test_busy_poll_stops_spinning_for_sparse_traffic(server_factory):
    # A fixed 10 ms spin after each of 40 messages 30 ms apart would burn 0.4 s of CPU;
    # backing off, the loop spins after 6 of them (0, 2, 5, 10, 19, 36): 0.06 s.
    server = server_factory("--proto", "echo", "--busy-poll", "10000")
    with server.connect() as sock:
        assert echo_once(sock, b"warm") == b"warm"
        before = cpu_seconds(server.pid)
        for i in range(40):
            time.sleep(0.03)
            sock.sendall(b"%02d" % i)
            assert recv_exactly(sock, 2) == b"%02d" % i
        burned = cpu_seconds(server.pid) - before
    assert burned < 0.15, f"{burned:.2f}s of CPU for 40 sparse messages: the spin did not adapt"


def test_busy_poll_is_on_by_default_for_a_worker_per_cpu(server_factory):
    server = server_factory("--proto", "echo")
    server.wait_for_log(r"busy_poll=50us")


def test_busy_poll_default_is_off_when_workers_outnumber_cpus(monkeypatch):
    from reactor import cli, workers

    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 1})
    assert [workers.default_busy_poll(n) for n in (1, 2, 3)] == [50, 50, 0]
    assert cli.build_parser().parse_args([]).busy_poll is None  # auto: decided by serve()
    assert cli.build_parser().parse_args(["--busy-poll", "0"]).busy_poll == 0


def test_busy_poll_option_is_checked():
    out = subprocess.run(
        [sys.executable, "-m", "reactor", "--busy-poll", "20000"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert out.returncode == 2 and "--busy-poll: must be 0..10000" in out.stderr


def test_sigterm_stops_gracefully_with_open_connections(server_factory):
    server = server_factory("--proto", "echo", "--shutdown-timeout", "3")
    socks = [server.connect() for _ in range(20)]
    for sock in socks:
        assert echo_once(sock, b"hi") == b"hi"
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    for sock in socks:
        sock.settimeout(5)
        assert recv_until_eof(sock) == b""  # closed by the server, not left hanging
        sock.close()
    assert "stopped" in server.log_text()


def test_two_workers_share_the_port_and_are_supervised(server_factory):
    server = server_factory("--proto", "echo", "--workers", "2", workers=2)
    workers = children(server.pid)
    assert len(workers) == 2
    baseline = {pid: fd_count(pid) for pid in workers}
    socks = [server.connect() for _ in range(200)]
    for sock in socks:
        assert echo_once(sock, b"w") == b"w"
    grown = {pid: fd_count(pid) - baseline[pid] for pid in workers}
    assert sum(grown.values()) == 200
    assert all(count > 0 for count in grown.values()), grown  # both processes serve
    for sock in socks:
        sock.close()
    # A worker that dies is restarted; the other keeps its connections.
    keep = server.connect()
    assert echo_once(keep, b"before") == b"before"
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(children(server.pid)) == 2 and victim not in children(server.pid))
    server.wait_for_log(r"worker 0 \(pid \d+\) exited: killed by signal 9")
    for _ in range(20):
        with server.connect() as sock:
            assert echo_once(sock, b"after") == b"after"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    assert all(not os.path.exists(f"/proc/{pid}") for pid in children(server.pid))


def test_no_fd_leak_after_ten_thousand_connect_close_cycles(server_factory):
    server = server_factory("--proto", "echo")
    baseline = fd_count(server.pid)  # ready: stdio, epoll, listener, signal wakeup pair
    for i in range(10_000):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            if i % 100 == 0:
                assert echo_once(sock, b"c") == b"c"
    assert wait_until(lambda: fd_count(server.pid) == baseline, timeout=15), (
        f"{fd_count(server.pid)} fds open, {baseline} before"
    )


def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        socks.append(socket.create_connection(("127.0.0.1", port)))
    return socks


def test_idle_echo_connection_costs_at_most_256_bytes(server_factory):
    """Server RSS growth per idle connection, event-block growth included."""
    count = 8000
    server = server_factory("--proto", "echo")
    with server.connect() as sock:  # warm the accept and read paths once
        echo_once(sock, b"warm")
    before = rss_bytes(server.pid)
    socks = open_idle_connections(server.port, count)
    assert wait_until(lambda: fd_count(server.pid) >= count)
    per_connection = (rss_bytes(server.pid) - before) / count
    for sock in socks:
        sock.close()
    print(f"idle echo connection: {per_connection:.0f} B of server RSS")
    assert per_connection <= 256, f"{per_connection:.0f} B per idle connection"


def test_help_explains_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "reactor", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    for option in (
        "--host",
        "--port",
        "--proto",
        "--root",
        "--backlog",
        "--idle-timeout",
        "--max-connections",
        "--workers",
        "--log-level",
        "--shutdown-timeout",
    ):
        assert option in out


def test_max_connections_refuses_cleanly(server_factory):
    server = server_factory("--proto", "echo", "--max-connections", "3")
    held = [server.connect() for _ in range(3)]
    for sock in held:
        assert echo_once(sock, b"in") == b"in"
    extra = server.connect()
    extra.settimeout(5)
    try:
        assert extra.recv(1) == b""  # accepted and closed at once, not left hanging
    except ConnectionResetError:
        pass
    server.wait_for_log("at max connections")
    full = fd_count(server.pid)
    held[0].close()
    assert wait_until(lambda: fd_count(server.pid) == full - 1)
    with server.connect() as sock:
        assert echo_once(sock, b"room") == b"room"


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_starts_from_any_folder(where, tmp_path, server_factory):
    server = server_factory("--proto", "echo", cwd=REPO if where == "repo" else tmp_path)
    with server.connect() as sock:
        assert echo_once(sock, b"cwd") == b"cwd"
