"""The benchmark harness works: C tools build, echoes are verified, errors are caught.

Correctness only, never speed: every run here is short and its figures are not asserted.
The load generator is checked against our echo server, the C reference server, an independent
WebSocket server (the `websockets` library) and deliberately broken servers, so a loadgen that
stopped verifying would fail here.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import echo as echo_bench  # bench/echo.py (bench/ is on pytest's pythonpath)
import pytest
from testkit import run_bench
from websockets.sync.server import ServerConnection, serve

REPO = Path(__file__).resolve().parents[1]
C_DIR = REPO / "bench" / "c"
LOADGEN = C_DIR / "loadgen"
SHORT = "0.3"  # seconds per load generator run: enough for thousands of echoes


@pytest.fixture(scope="module")
def tools() -> None:
    subprocess.run(["make", "-s", "-C", str(C_DIR)], check=True, timeout=120)


def loadgen(mode: str, port: int, *args: str) -> tuple[int, dict]:
    argv = [str(LOADGEN), mode, "--port", str(port), "--duration", SHORT, "--grace", "2", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return done.returncode, json.loads(done.stdout)


def assert_clean(result: dict, connections: int) -> None:
    assert result["errors"] == dict.fromkeys(result["errors"], 0)
    assert result["connected"] >= connections
    assert result["ops"] > 0
    assert result["latency_us"]["samples"] == result["ops"]
    assert 0 < result["latency_us"]["p50"] <= result["latency_us"]["p99"]


# ---- raw TCP: the echo benchmark path -------------------------------------------------------


def test_loadgen_selftest(tools: None) -> None:
    done = subprocess.run([str(LOADGEN), "selftest"], capture_output=True, text=True, timeout=10)
    result = json.loads(done.stdout)
    assert done.returncode == 0
    assert result.pop("ok") is True
    assert all(value is True for key, value in result.items() if key != "mode")


def test_busy_poll_bench_measures_each_configuration(tmp_path: Path) -> None:
    _, record = run_bench(
        REPO / "bench" / "busy_poll.py", "--pauses", "100", "--seconds", "0.3",
        "--config", "off=--busy-poll 0", "--config", "spin=--busy-poll 50",
        results_dir=tmp_path,
    )  # fmt: skip
    runs = record["runs"]
    assert [(run["config"], run["pause_us"]) for run in runs] == [("off", 100), ("spin", 100)]
    for run in runs:
        assert run["exchanges"] > 100 and 0 < run["server_cpu_share"] <= 1.05
        assert run["us_per_exchange"] >= 100  # the pause is part of every exchange


def run_echo_harness(tmp_path: Path, servers: str) -> dict:
    stdout, record = run_bench(
        REPO / "bench" / "echo.py", "--no-build", "--servers", servers, "--duration", "1",
        "--warmup", "0", "--repeat", "1", "--quiet-timeout", "0", results_dir=tmp_path,
    )  # fmt: skip
    assert record["table"] in stdout
    return record


def test_echo_benchmark_against_our_server(tools: None, tmp_path: Path) -> None:
    record = run_echo_harness(tmp_path, "ours")
    (run,) = record["runs"]
    assert run["server"] == "ours" and run["mode"] == "tcp-echo"
    assert (run["connections"], run["window"], run["size"]) == (100, 16, 64)
    assert_clean(run, 100)
    assert run["server_exit_status"] == 0  # stopped gracefully by SIGTERM
    assert 0 < run["cpu_share"]["loadgen"] and 0 < run["cpu_share"]["server"]
    assert run["server_cores"] == [0]  # pinned: the server may run on CPU 0 only
    summary = record["summary"]["ours"]
    assert summary["errors"] == 0 and summary["server_cpu_us_per_op"] > 0
    assert (
        f"| ours | {summary['ops_per_s']:,.0f} | {summary['server_cpu_us_per_op']:.2f} |"
        in (record["table"])
    )


def test_a_saturated_load_generator_is_flagged() -> None:
    assert echo_bench.loadgen_saturated("tcp-echo", {"loadgen_core": 0.95})
    assert not echo_bench.loadgen_saturated("tcp-echo", {"loadgen_core": 0.85})
    assert not echo_bench.loadgen_saturated("ws-rtt", {"loadgen_core": 1.0})  # it spins
    assert echo_bench.bound_by("ws-handshake", 0.5, 0.93) == "loadgen"


# ---- static files: nginx as one pinned process, open_file_cache off and on -----------------


@pytest.mark.skipif(not (shutil.which("wrk") and shutil.which("nginx")), reason="needs wrk, nginx")
def test_http_static_benchmark_pins_single_process_servers(tmp_path: Path) -> None:
    stdout, record = run_bench(
        REPO / "bench" / "http_static.py", "--servers", "reactor,nginx,nginx-ofc",
        "--files", "1k.bin", "--duration", "1", "--repeat", "1", "--quiet-timeout", "0",
        results_dir=tmp_path,
    )  # fmt: skip
    assert record["table"] in stdout
    rows = record["summary"]["1k.bin"]
    assert list(rows) == ["reactor", "nginx", "nginx-ofc"]
    for name, row in rows.items():
        assert row["errors"] == 0 and row["requests_per_s"] > 0, name
        assert row["server_cores"] == [0] and row["server_processes"] == 1, name
        assert row["server_cpu_us_per_request"] > 0 and 0 < row["wrk_cpu"] <= 1.05
    for run in record["runs"]:
        assert run["wrk_saturated"] == (run["cpu"]["wrk_core"] > 0.9)
    assert record["ratios"]["1k_reactor_vs_nginx"] > 0
    assert record["ratios"]["1k_reactor_vs_nginx_ofc"] > 0


def test_c_reference_server_echoes_correctly(tools: None) -> None:
    proc = subprocess.Popen(
        [str(C_DIR / "echo_server"), "127.0.0.1", "0"], stderr=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stderr.readline().split("listening on 127.0.0.1:")[1].split()[0])
        for args in (["-c", "50", "-w", "8"], ["-c", "2", "-w", "4", "-s", "200000"]):
            status, result = loadgen("tcp-echo", port, *args)
            assert status == 0
            assert_clean(result, int(args[1]))
        status, result = loadgen("tcp-rtt", port)
        assert status == 0 and result["unit"] == "round_trips"
        assert_clean(result, 1)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# ---- the load generator notices broken servers ----------------------------------------------


class BrokenTcpServer:
    """A threaded TCP echo server whose ``transform`` can damage the stream."""

    def __init__(self, transform: Callable[[int, bytes], bytes | None]) -> None:
        self.transform = transform
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        offset = 0
        with conn:
            while data := conn.recv(65536):
                out = self.transform(offset, data)
                offset += len(data)
                if out is None:
                    return  # drop the connection
                conn.sendall(out)

    def close(self) -> None:
        self.listener.close()


def flip_byte_at(position: int) -> Callable[[int, bytes], bytes]:
    def transform(offset: int, data: bytes) -> bytes:
        if offset <= position < offset + len(data):
            i = position - offset
            return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        return data

    return transform


def test_loadgen_counts_one_corrupted_byte_as_one_mismatch(tools: None) -> None:
    server = BrokenTcpServer(flip_byte_at(1000))
    try:
        status, result = loadgen("tcp-echo", server.port, "-c", "1", "-w", "4")
    finally:
        server.close()
    assert status == 1
    assert result["errors"]["mismatch"] == 1
    assert result["errors_total"] == 1


def test_loadgen_counts_dropped_connections_and_lost_messages(tools: None) -> None:
    server = BrokenTcpServer(lambda offset, data: None if offset > 5000 else data)
    try:
        status, result = loadgen("tcp-echo", server.port, "-c", "3", "-w", "4")
    finally:
        server.close()
    assert status == 1
    assert result["errors"]["reset"] == 3
    assert result["errors"]["lost"] >= 3  # each connection had messages in flight


def test_loadgen_reports_refused_connections(tools: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    status, result = loadgen("tcp-echo", port, "-c", "5")
    assert status == 1
    assert result["errors"]["connect"] == 5 and result["connected"] == 0


# ---- WebSocket modes against an independent server (the `websockets` library) -------------


@pytest.fixture
def ws_server() -> Iterator[Callable[[Callable[[ServerConnection], None]], int]]:
    servers = []

    def start(handler: Callable[[ServerConnection], None]) -> int:
        server = serve(handler, "127.0.0.1", 0, max_size=None, compression=None)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.socket.getsockname()[1]

    yield start
    for server in servers:
        server.shutdown()


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "4", "-w", "4"],
        ["-c", "2", "-w", "2", "--text", "-s", "300"],
        ["-c", "2", "-w", "2", "-s", "70000"],  # 64-bit length encoding
        ["-c", "2", "-w", "2", "-s", "0"],
    ],
)
def test_ws_echo_against_websockets(tools: None, ws_server, args: list[str]) -> None:
    status, result = loadgen("ws-echo", ws_server(echo), *args)
    assert status == 0
    assert_clean(result, int(args[1]))


def test_ws_rtt_and_handshake_against_websockets(tools: None, ws_server) -> None:
    port = ws_server(echo)
    status, result = loadgen("ws-rtt", port)
    assert status == 0 and result["unit"] == "round_trips"
    assert_clean(result, 1)
    status, result = loadgen("ws-handshake", port, "-c", "4")
    assert status == 0 and result["unit"] == "handshakes"
    assert_clean(result, 4)


def test_ws_handshake_survives_connects_that_complete_late(tools: None) -> None:
    """ws-handshake sends the upgrade right after connect(); a connection still being set
    up (its SYN dropped by a full accept queue, retried a second later) must fall back to
    waiting for writability rather than count an error."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1)
    server = serve(echo, sock=listener, max_size=None, compression=None)

    def serve_late() -> None:
        threading.Event().wait(0.5)  # the accept queue is full until then
        server.serve_forever()

    threading.Thread(target=serve_late, daemon=True).start()
    try:
        argv = [str(LOADGEN), "ws-handshake", "--port", str(listener.getsockname()[1]),
                "-c", "8", "--duration", "2", "--grace", "3"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
    result = json.loads(done.stdout)
    assert done.returncode == 0, result["errors"]
    assert_clean(result, 8)
    assert result["latency_us"]["max"] > 400_000  # some cycles did wait for the queue


def test_ws_handshake_reports_refused_connections(tools: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    status, result = loadgen("ws-handshake", port, "-c", "3")
    assert status == 1
    assert result["errors"]["connect"] >= 3 and result["ops"] == 0
    assert result["errors_total"] == result["errors"]["connect"]


def test_ws_echo_detects_altered_payloads(tools: None, ws_server) -> None:
    def reverse_every_third(ws: ServerConnection) -> None:
        for i, message in enumerate(ws):
            ws.send(message[::-1] if i % 3 == 2 else message)

    status, result = loadgen("ws-echo", ws_server(reverse_every_third), "-c", "1", "-w", "3")
    assert status == 1
    # Every third message comes back reversed; up to a window more are echoed while draining.
    assert result["ops"] // 3 <= result["errors"]["mismatch"] <= (result["ops"] + 3) // 3
    assert result["errors_total"] == result["errors"]["mismatch"]


def test_ws_echo_accepts_fragments_and_answers_pings(tools: None, ws_server) -> None:
    pongs: list[bool] = []

    def ping_then_echo_in_fragments(ws: ServerConnection) -> None:
        pong = ws.ping(b"are you there")
        for message in ws:
            ws.send([message[:1], message[1:40], message[40:]])  # a fragmented message
        pongs.append(pong.wait(2))

    port = ws_server(ping_then_echo_in_fragments)
    status, result = loadgen("ws-echo", port, "-c", "2", "-w", "4", "-s", "100")
    assert status == 0
    assert_clean(result, 2)
    for _ in range(50):  # the handlers finish just after the close handshake
        if len(pongs) == 2:
            break
        threading.Event().wait(0.05)
    assert pongs == [True, True]


def test_ws_handshake_with_a_wrong_accept_key_is_an_error(tools: None) -> None:
    """RFC 6455 §4.1: the client must check Sec-WebSocket-Accept, not just the 101."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_wrongly() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
                    request += chunk
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"  # right format, wrong key
                )

    threading.Thread(target=answer_wrongly, daemon=True).start()
    try:
        status, result = loadgen("ws-echo", listener.getsockname()[1], "-c", "3")
    finally:
        listener.close()
    assert status == 1
    assert result["errors"]["handshake"] == 3 and result["connected"] == 0
