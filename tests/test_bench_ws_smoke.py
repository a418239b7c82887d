"""The WebSocket benchmark harness works: servers echo correctly, figures are computed.

Correctness only, never speed: runs are short and no figure is compared with a threshold.
Checked here: the minimal C WebSocket server (against the load generator and the independent
`websockets` client), every installed peer echo server, bench/ws.py end to end (JSON, ratio
table, idle-memory accounting), its idle-connection client against good and broken servers,
and bench/unmask.py (every implementation verified, a wrong one flagged).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import benchkit
import pytest
from testkit import run_bench
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
C_DIR = BENCH / "c"
LOADGEN = C_DIR / "loadgen"
SHORT = "0.3"  # seconds per load generator run: thousands of echoes, no figure asserted


def load_bench_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# bench/ is on sys.path (pytest's `pythonpath`), as a script's own folder is when it runs.
ws_bench = load_bench_module("bench_ws", BENCH / "ws.py")
unmask_bench = load_bench_module("bench_unmask", BENCH / "unmask.py")


@pytest.fixture(scope="module")
def tools() -> None:
    subprocess.run(["make", "-s", "-C", str(C_DIR)], check=True, timeout=120)


def loadgen(mode: str, port: int, *args: str) -> tuple[int, dict]:
    argv = [str(LOADGEN), mode, "--port", str(port), "--duration", SHORT, "--grace", "2", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return done.returncode, json.loads(done.stdout)


def assert_clean(result: dict) -> None:
    assert result["errors"] == dict.fromkeys(result["errors"], 0)
    assert result["ops"] > 0


def start(name: str) -> tuple[object, int]:
    argv = ws_bench.server_commands(sys.executable, "127.0.0.1", "uvloop")[name]
    server = benchkit.Server(name, argv, cpu=0)
    try:
        return server, server.wait_ready()
    except RuntimeError:
        server.stop()
        raise


@pytest.fixture
def c_server(tools: None) -> Iterator[int]:
    server, port = start("c")
    yield port
    assert server.stop() == 0  # SIGTERM is a clean stop


# ---- the minimal C WebSocket echo server ---------------------------------------------------


@pytest.mark.parametrize(
    "mode,args",
    [
        ("ws-echo", ["-c", "20", "-w", "8"]),
        ("ws-echo", ["-c", "2", "-w", "2", "-s", "70000", "--text"]),  # 64-bit lengths
        ("ws-echo", ["-c", "2", "-w", "2", "-s", "0"]),
        ("ws-rtt", []),
        ("ws-handshake", ["-c", "10"]),  # includes the close handshake and the TCP close
    ],
)
def test_c_ws_server_under_the_load_generator(c_server: int, mode: str, args: list[str]) -> None:
    status, result = loadgen(mode, c_server, *args)
    assert status == 0
    assert_clean(result)


def test_c_ws_server_with_an_independent_client(c_server: int) -> None:
    with connect(f"ws://127.0.0.1:{c_server}", compression=None, max_size=None) as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(bytes(range(256)) * 1000)  # spans many reads
        assert ws.recv() == bytes(range(256)) * 1000
        ws.send(["frag", "mented"])  # echoed fragment by fragment
        assert ws.recv() == "fragmented"
        assert ws.ping(b"p").wait(5)
        ws.close(4001, "bye")
    assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4001, "bye")


def test_c_ws_server_refuses_unmasked_frames(c_server: int) -> None:
    """RFC 6455 §5.1: a client frame without the mask bit gets close 1002, then TCP close."""
    request, _ = ws_bench.upgrade_request("127.0.0.1", c_server)
    with socket.create_connection(("127.0.0.1", c_server), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        sock.sendall(b"\x82\x02hi")  # binary, unmasked
        rest = reply.split(b"\r\n\r\n", 1)[1]
        while chunk := sock.recv(4096):
            rest += chunk
    assert rest == b"\x88\x02" + struct.pack("!H", 1002)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(1 << 20, size - len(data)))
        assert chunk, "connection closed early"
        data += chunk
    return bytes(data)


def test_c_ws_server_keeps_what_a_slow_reader_cannot_take(c_server: int) -> None:
    """Echoes pile up while the client is not reading: the server's partial writes and kept
    remainders (large payloads sent from where they lie) must still return every byte."""
    from reactor.ws import frames

    messages = [bytes([i]) * (100_000 + i) for i in range(40)]  # ~4 MB: beyond socket buffers
    wire = b"".join(frames.serialize_masked_frame(frames.OP_BINARY, m, i) for i, m in
                    enumerate(messages))  # fmt: skip
    request, _ = ws_bench.upgrade_request("127.0.0.1", c_server)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # fills quickly
        sock.settimeout(10)
        sock.connect(("127.0.0.1", c_server))
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        sender = threading.Thread(target=sock.sendall, args=(wire,))
        sender.start()  # the server fills its send buffer and stops reading until it drains
        threading.Event().wait(0.5)
        expected = b"".join(frames.serialize_frame(frames.OP_BINARY, m) for m in messages)
        assert read_exactly(sock, len(expected)) == expected
        sender.join(10)


# ---- the peers -----------------------------------------------------------------------------


def peer_missing(name: str) -> bool:
    needs = [ws_bench.REQUIREMENTS[name]] + (["uvloop"] if name in ws_bench.ASYNCIO_PEERS else [])
    return any(importlib.util.find_spec(module) is None for module in needs)


@pytest.mark.parametrize("name", ["picows", "aiohttp", "websockets", "socketify"])
def test_peer_echo_servers(tools: None, name: str) -> None:
    if peer_missing(name):
        pytest.skip(f"{name} is not installed (see bench/README.md)")
    server, port = start(name)
    try:
        for mode, args in [("ws-echo", ["-c", "4", "-w", "4", "-s", "70000"]),
                           ("ws-handshake", ["-c", "4"])]:  # fmt: skip
            status, result = loadgen(mode, port, *args)
            assert status == 0, result["errors"]
            assert_clean(result)
    finally:
        assert server.stop() == 0


# ---- bench/ws.py end to end ----------------------------------------------------------------


def test_ws_benchmark_end_to_end(tools: None, tmp_path: Path) -> None:
    """Ours and the reference peer (or the C server without picows), two scenarios."""
    servers = ["ours", "c" if peer_missing("picows") else "picows"]
    stdout, record = run_bench(
        BENCH / "ws.py", "--no-build", "--quick", "--servers", ",".join(servers),
        "--scenarios", "echo64,idle", "--duration", "0.3", "--idle-connections", "300",
        "--idle-settle", "0.2", "--quiet-timeout", "0", results_dir=tmp_path,
    )  # fmt: skip
    assert record["table"] in stdout
    assert record["servers"] == servers
    assert [(r["scenario"], r["server"]) for r in record["runs"]] == [
        (scenario, name) for scenario in ("echo64", "idle") for name in servers
    ]
    for run in record["runs"]:
        assert run["errors_total"] == 0 and run["server_exit_status"] == 0
    for run in (r for r in record["runs"] if r["scenario"] == "echo64"):
        assert run["server_cores"] == [0]  # the server and all its threads pinned to CPU 0
        assert run["loadgen_saturated"] == (run["cpu_share"]["loadgen_core"] > 0.9)
    for name in servers:
        echo64 = record["summary"]["echo64"][name]
        assert echo64["value"] == echo64["ops_per_s"] > 0
        assert echo64["server_cpu_us_per_op"] > 0  # shown next to the rate
        assert f"{echo64['server_cpu_us_per_op']:.2f} µs" in record["table"]
        idle = record["summary"]["idle"][name]
        assert idle["rss_loaded"] >= idle["rss_baseline"] > 0
        idle_run = next(
            r for r in record["runs"] if r["scenario"] == "idle" and r["server"] == name
        )
        assert idle_run["alive_at_sample"] == idle_run["opened"] == 300
    goals = ws_bench.goal_lines(record["summary"])
    assert goals and "\n".join(goals) in stdout  # the goal lines for ours are printed
    if "picows" in servers:
        assert "(1.00x)" in record["table"]  # the reference against itself
        assert "not measured" not in stdout  # every goal of these scenarios has a ratio


def test_ws_benchmark_rejects_unknown_names() -> None:
    with pytest.raises(SystemExit):
        ws_bench.parse_args(["--servers", "ours,nginx"])
    args = ws_bench.parse_args(["--quick", "--large-window", "2", "--scenarios", "echo64k"])
    (scenario,) = ws_bench.chosen_scenarios(args)
    assert (scenario.size, scenario.window, args.repeat) == (65536, 2, 1)


def test_ratio_table_and_goals() -> None:
    summaries = {
        "echo64": {"ours": {"value": 150.0}, "picows": {"value": 100.0}},
        "handshake": {"ours": {"value": 150.0}, "picows": {"value": 100.0}},
        "idle": {"ours": {"value": 600.0}, "picows": {"value": 30000.0}},
    }
    table = ws_bench.summary_table(summaries, ["ours", "picows"])
    assert "| ours | 150 (1.50x) | 150 (1.50x) | 600 (0.02x) |" in table
    summaries["handshake"]["ours"].update(
        server_cpu_us_per_op=12.345, loadgen_saturated_runs=1, loadgen_core_busy=0.97
    )
    table = ws_bench.summary_table(summaries, ["ours", "picows"])
    assert "| 150 (1.50x), 12.35 µs, loadgen core 97% |" in table
    goals = ws_bench.goal_lines(summaries)
    assert goals[0].endswith("1.50x -> met")  # echo64 >= 1.0x
    assert goals[1].endswith("1.50x -> NOT met")  # handshakes >= 2x
    assert goals[2].endswith("600 B -> NOT met")  # idle <= 512 B


# ---- the idle-connection client ------------------------------------------------------------


def test_idle_clients_hold_upgraded_connections(c_server: int) -> None:
    clients = ws_bench.IdleClients("127.0.0.1", c_server)
    try:
        clients.open(100, timeout=20)
        assert (len(clients.held), clients.failed) == (100, 0)
        assert clients.still_open() == 100
        clients.held[0].sendall(b"\x88\x80" + b"\0\0\0\0")  # masked close: the server closes
        clients.held[0].settimeout(5)
        while clients.held[0].recv(4096):
            pass
        assert clients.still_open() == 99
    finally:
        clients.close()


@pytest.fixture
def wrong_accept_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            )
            threading.Timer(5, conn.close).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_idle_clients_check_the_accept_key(wrong_accept_server: int) -> None:
    clients = ws_bench.IdleClients("127.0.0.1", wrong_accept_server)
    try:
        clients.open(5, timeout=10)
        assert (len(clients.held), clients.failed) == (0, 5)
    finally:
        clients.close()


# ---- bench/unmask.py -----------------------------------------------------------------------


def test_unmask_benchmark_runs_and_verifies(tmp_path: Path) -> None:
    stdout, record = run_bench(
        BENCH / "unmask.py", "--quick", "--repeat", "1", "--sizes", "125,5000", "--cpu", "-1",
        "--quiet-timeout", "0", results_dir=tmp_path,
    )  # fmt: skip
    assert record["impl"] == "c"
    names = {r["implementation"] for r in record["results"]}
    assert {"cffi window (hot path)", "cffi unmask()", "python fallback", "memory copy"} <= names
    assert all(r["correct"] and r["bytes_per_s"] > 0 for r in record["results"])
    assert {r["size"] for r in record["results"]} == {125, 5000}
    assert record["table"] in stdout


def test_unmask_benchmark_flags_a_wrong_implementation(monkeypatch) -> None:
    def off_by_one_key(data: bytes):
        buf = bytearray(data)

        def check() -> bytes:
            work = bytearray(data)
            unmask_bench.ws_unmask.unmask_python(work, b"\x37\xfa\x21\x3e")
            return bytes(work)

        return "f(buf, k)", {"f": lambda b, k: None, "buf": buf, "k": b""}, check

    monkeypatch.setitem(unmask_bench.IMPLEMENTATIONS, "broken", off_by_one_key)
    result = unmask_bench.time_one("broken", 125, repeat=1, target=0.001)
    assert result["correct"] is False
    assert "WRONG" in unmask_bench.table([result], [125])


def test_scanner_frames_carry_the_same_bytes() -> None:
    """The scanner's input is built so its result compares with the other implementations'."""
    data = unmask_bench.payload(300)
    buf, count = unmask_bench.masked_frames(data)
    assert count > 1
    descriptors = unmask_bench.frames.scan_frames(buf, max_size=1000)
    assert len(descriptors) == 3 * count
    start, end = descriptors[1], descriptors[2]
    assert bytes(buf[start:end]) == unmask_bench.expected(data)


def test_disturbed_repetitions_are_measured_again() -> None:
    outcomes = iter([True, True, False, True])  # noisy, noisy, clean, (never reached)

    def fake_measure(name, argv, scenario, args) -> dict:
        return {"server": name, "noisy": next(outcomes), "ops_per_s": 1.0, "errors_total": 0}

    args = ws_bench.parse_args(["--noisy-retries", "3"])
    result = ws_bench.measure_until_clean(fake_measure, "c", [], ws_bench.SCENARIOS["rtt"], args)
    assert (result["noisy"], result["attempt"], len(result["disturbed_attempts"])) == (False, 2, 2)
    args = ws_bench.parse_args(["--noisy-retries", "0"])
    outcomes = iter([True])
    result = ws_bench.measure_until_clean(fake_measure, "c", [], ws_bench.SCENARIOS["rtt"], args)
    assert (result["noisy"], result["attempt"], result["disturbed_attempts"]) == (True, 0, [])


def test_no_spin_variant_is_judged_on_its_own_server() -> None:
    summaries = {"rtt": {"ours": {"value": 180.0}, "ours-no-spin": {"value": 90.0},
                         "picows": {"value": 100.0}}}  # fmt: skip
    goals = ws_bench.goal_lines(summaries)
    assert goals[0].endswith("1.80x -> met")  # ours as started by default
    assert "--busy-poll 0" in goals[1] and goals[1].endswith("0.90x -> NOT met")
    assert len(ws_bench.goal_lines({"rtt": {"ours": {"value": 90.0}}})) == 1  # not in the run


def test_inprocess_echo_bench_reports_a_figure():
    done = subprocess.run(
        [sys.executable, str(BENCH / "ws_inprocess.py"), "--trials", "2", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("ns per message (best of 2 trials)")


def test_async_echo_app_echoes_through_the_companion_loop():
    """bench/ws.py's ours-async server: the same echo, from an async def."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor", "--host", "127.0.0.1", "--port", "0", "--proto",
         "ws", "--app", "bench.peers.ours_async_echo:app"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        for line in proc.stderr:
            if "listening on" in line:
                port = int(line.rsplit("127.0.0.1:", 1)[1].split()[0])
                break
        with connect(f"ws://127.0.0.1:{port}/", proxy=None, open_timeout=10) as ws:
            for size in (0, 64, 70000):
                ws.send(bytes(size))
                assert ws.recv(timeout=10) == bytes(size)
    finally:
        proc.terminate()
        proc.wait(15)
