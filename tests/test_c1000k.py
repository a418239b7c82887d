"""The C1000K benchmark works: a 10k stage end to end, the client's checks, the preflight.

Correctness only: nothing here asserts a rate or a latency. The client is checked against our
server (through bench/c1000k.py), against the `websockets` library, and against deliberately
broken servers, so a client that stopped verifying (accept key, echo bytes, close handshake)
would fail here. Nothing changes sysctls; the 10k stage skips only if the preflight refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import benchkit
import c1000k.plan
import c1000k.preflight
import c1000k.procfs
import c1000k.report
import pytest
from testkit import accept_for
from websockets.sync.server import ServerConnection, serve

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "bench" / "c" / "c1000k_client"
DRIVER = REPO / "bench" / "c1000k.py"


@pytest.fixture(scope="module")
def client_built() -> None:
    subprocess.run(["make", "-s", "-C", str(CLIENT.parent), CLIENT.name], check=True, timeout=120)


def run_client(port: int, *args: str, stdin: str | None = None) -> tuple[int, list[dict]]:
    argv = [str(CLIENT), "--port", str(port), "--progress-ms", "100", *args]
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def report_of(lines: list[dict]) -> dict:
    (report,) = [line for line in lines if line["event"] == "report"]
    return report


def pids_gone(pids: list[int]) -> bool:
    return all(not benchkit.alive(pid) for pid in pids)


# ---- the 10k stage through bench/c1000k.py --------------------------------------------------


def driver(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable, str(DRIVER), "--no-build", "--no-plot", "--results-dir", str(tmp_path),
        *args,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stage_10k(client_built: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("c1000k")
    args = ["--connections", "10000", "--workers", "2"]
    pre = subprocess.run(driver(tmp, *args, "--preflight-only"), capture_output=True, text=True)
    if pre.returncode == 2:
        pytest.skip(f"preflight refuses 10k connections here:\n{pre.stdout}")
    done = subprocess.run(driver(tmp, *args), capture_output=True, text=True, timeout=120)
    (result_file,) = tmp.glob("c1000k-10000-*.json")
    record = json.loads(result_file.read_text())
    record["_exit"], record["_stdout"], record["_stderr"] = (
        done.returncode,
        done.stdout,
        done.stderr,
    )
    return record


def test_stage_10k_has_no_failures(stage_10k: dict) -> None:
    result = stage_10k["result"]
    assert stage_10k["_exit"] == 0, stage_10k["_stderr"]
    assert stage_10k["ok"] is True and stage_10k["aborted"] is None
    assert result["failures"] == {} and result["failures_total"] == 0
    assert result["established"] == result["held_at_echo"] == 10_000


def test_stage_10k_echoes_every_connection_byte_exact(stage_10k: dict) -> None:
    result = stage_10k["result"]
    assert result["echo_sent"] == result["echo_ok"] == 10_000
    assert result["closed_clean"] == 10_000  # every close handshake completed
    for client in stage_10k["clients"]:
        assert client["exit_status"] == 0 and client["failures_total"] == 0
        assert client["sources"] == 4 and client["close_mode"] == "handshake"


def test_stage_10k_report_fields_are_sane(stage_10k: dict) -> None:
    result = stage_10k["result"]
    assert result["time_to_full_s"] > 0 and result["connections_per_s"] > 0
    hs, echo = result["handshake_us"], result["echo_us"]
    assert 0 < hs["p50"] <= hs["p90"] <= hs["p99"] <= hs["max"]
    assert 0 < echo["p50"] <= echo["p99"] <= echo["max"]
    assert result["echo_round_s"] > 0 and result["close_round_s"] > 0
    assert result["server_rss_per_conn_b"] > 0 and result["server_uss_per_conn_b"] > 0
    assert result["server_rss_per_conn_from_cold_b"] >= result["server_rss_per_conn_b"]
    assert result["kernel_slab_per_conn_b"] > 1000  # a socket pair costs kilobytes of slab
    assert result["min_mem_available_b"] > 0
    assert stage_10k["snapshots"]["baseline"]["server_processes"] == 2
    assert stage_10k["settings"]["workers"] == 2 and len(stage_10k["clients"]) == 2
    assert {s["stage"] for s in stage_10k["timeline"]} >= {"ramp", "hold", "echo", "close"}
    for line in ("established", "failures", "server RSS / conn (idle)", "kernel slab"):
        assert line in stage_10k["_stdout"]


def test_stage_10k_leaves_no_process(stage_10k: dict) -> None:
    pids = stage_10k["pids"]
    assert len(pids) == 1 + 2 + 2  # supervisor, workers, clients
    assert stage_10k["leftover_pids"] == []
    assert pids_gone(pids)
    assert stage_10k["server_exit_status"] == 0  # stopped gracefully by SIGTERM


def test_interrupted_run_tears_down(client_built: None, tmp_path: Path) -> None:
    bounds = ["--ramp-timeout", "60", "--settle", "60"]
    argv = driver(tmp_path, "--connections", "2000", "--workers", "1", *bounds)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # not a terminal: one line per stage change
            if "] hold" in line:
                break
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)  # keep draining both pipes: a full one would block it
    finally:
        if proc.poll() is None:
            proc.kill()
    (result_file,) = tmp_path.glob("c1000k-2000-*.json")
    record = json.loads(result_file.read_text())
    assert proc.returncode == 1
    assert record["aborted"].startswith("KeyboardInterrupt") and record["ok"] is False
    assert record["leftover_pids"] == [] and pids_gone(record["pids"])
    assert record["result"]["established"] == 2000  # it was holding them when stopped
    (client,) = record["clients"]
    assert client["event"] == "report" and client["aborted"] == "signal"  # its last word
    assert client["failures"]["hold"] == {"aborted": 2000} and client["exit_status"] == 3


def test_target_mode_loads_a_running_server_and_leaves_it_running(
    client_built: None, tmp_path: Path
) -> None:
    base = c1000k.plan.pick_base_port(2, "127.0.0.1")
    server = subprocess.Popen(
        [sys.executable, "-m", "reactor", "--proto", "ws", "--host", "127.0.0.1",
         "--port", str(base), "--workers", "2", "--port-per-worker", "--ping-interval", "0",
         "--log-level", "warning"], cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while (
            not {base, base + 1} <= c1000k.procfs.listening_ports() and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        target = ["--target", f"127.0.0.1:{base}", "--workers", "2", "--connections", "3000"]
        done = subprocess.run(driver(tmp_path, *target, "--settle", "0.5"), timeout=120)
        assert server.poll() is None  # a server we did not start is not ours to stop
    finally:
        server.terminate()
        server.wait(30)
    (result_file,) = tmp_path.glob("c1000k-3000-*.json")
    record = json.loads(result_file.read_text())
    assert done.returncode == 0 and record["ok"] is True
    assert record["result"]["echo_ok"] == 3000
    assert record["snapshots"]["held"]["server_processes"] == 2  # found by its listening sockets
    assert record["result"]["server_rss_per_conn_b"] is not None


# ---- the client against other servers ------------------------------------------------------


def test_client_selftest(client_built: None) -> None:
    done = subprocess.run([str(CLIENT), "selftest"], capture_output=True, text=True, timeout=10)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result.pop("ok") is True
    assert all(value is True for key, value in result.items() if key != "event")


@pytest.fixture
def websockets_server() -> Iterator[Callable[[Callable[[ServerConnection], None]], int]]:
    servers = []

    def start(handler: Callable[[ServerConnection], None]) -> int:
        server = serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.socket.getsockname()[1]

    yield start
    for server in servers:
        server.shutdown()


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def test_client_against_websockets_library_with_commands(client_built, websockets_server) -> None:
    port = websockets_server(echo)
    code, lines = run_client(port, "-c", "300", "-S", "127.1.200.1-2", stdin="echo\nclose\n")
    report = report_of(lines)
    assert code == 0 and report["failures_total"] == 0 and report["aborted"] is None
    assert report["established"] == report["echo_ok"] == report["closed"] == 300
    events = [line["event"] for line in lines if line["event"] != "progress"]
    assert events == ["ramp_done", "echo_done", "close_done", "report"]


def test_client_text_frames_and_plain_close(client_built, websockets_server) -> None:
    port = websockets_server(echo)
    code, lines = run_client(port, "-c", "50", "--auto", "--text", "--close", "plain")
    report = report_of(lines)
    assert code == 0 and report["echo_ok"] == report["closed"] == 50


def test_client_counts_corrupted_echoes(client_built, websockets_server) -> None:
    def corrupt(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(bytes([message[0] ^ 1]) + message[1:])

    code, lines = run_client(websockets_server(corrupt), "-c", "40", "--auto")
    report = report_of(lines)
    assert code == 1 and report["echo_ok"] == 0
    assert report["failures"]["echo"] == {"echo_mismatch": 40}


def test_client_counts_servers_that_drop_held_connections(client_built, websockets_server) -> None:
    port = websockets_server(lambda ws: ws.close(1001))
    code, lines = run_client(port, "-c", "20", "--auto", "--hold-timeout", "30")
    report = report_of(lines)
    # Each connection is dropped right after its handshake: while the ramp is still
    # running for the last ones, or during the hold. Either way it counts, once.
    by_stage = report["failures"]
    assert code == 1 and report["failures_total"] == 20
    assert {cause for causes in by_stage.values() for cause in causes} == {"closed_by_server"}
    assert sum(causes.get("closed_by_server", 0) for causes in by_stage.values()) == 20
    assert by_stage["hold"]["closed_by_server"] > 0


def test_client_counts_refused_connects(client_built) -> None:
    code, lines = run_client(benchkit.free_port(), "-c", "100", "--auto", "-S", "127.1.201.1-4")
    report = report_of(lines)
    assert code == 1 and report["established"] == 0
    assert report["failures"]["ramp"] == {"refused": 100}


def test_client_aborts_when_its_driver_goes_away(client_built, websockets_server) -> None:
    port = websockets_server(echo)
    code, lines = run_client(port, "-c", "30", stdin="")  # stdin at EOF: the driver is gone
    report = report_of(lines)
    assert code == 3 and report["aborted"] == "control input closed"
    assert report["open"] == 0


# ---- the client against a hand-written server: split frames, pings, bad accept keys ---------


class ScriptedServer:
    """A raw-socket WebSocket server that writes every byte of its answers separately (so the
    client must reassemble heads and frames across reads), pings before each echo, and can
    answer with a wrong Sec-WebSocket-Accept."""

    def __init__(self, *, bad_accept: bool = False) -> None:
        self.bad_accept = bad_accept
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pongs = 0
        self.errors: list[str] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, conn.makefile("rb") as reader:
            try:
                self.converse(conn, reader)
            except (OSError, ValueError) as exc:
                self.errors.append(repr(exc))

    def converse(self, conn: socket.socket, reader) -> None:
        key = self.read_head(reader)
        accept = accept_for(key)
        if self.bad_accept:
            accept = base64.b64encode(hashlib.sha1(key).digest())
        head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        self.trickle(conn, head + b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            opcode, payload = read_frame(reader)
            if opcode == 0xA:
                self.pongs += 1
            elif opcode == 0x8:
                self.trickle(conn, frame(0x8, payload))
                return  # the server closes TCP first (RFC 6455 §7.1.1)
            else:
                self.trickle(conn, frame(0x9, b"hi") + frame(opcode, payload))

    def read_head(self, reader) -> bytes:
        key = None
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        if key is None:
            raise ValueError("no Sec-WebSocket-Key")
        return key

    def trickle(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            time.sleep(0.0005)  # separate segments, so separate reads on the client side

    def close(self) -> None:
        self.listener.close()


def read_frame(reader) -> tuple[int, bytes]:
    b0, b1 = reader.read(2)
    if not b1 & 0x80:
        raise ValueError("client frame not masked")  # RFC 6455 §5.3
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", reader.read(2))
    mask = reader.read(4)
    data = reader.read(length)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def frame(opcode: int, payload: bytes) -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(**kwargs) -> ScriptedServer:
        servers.append(ScriptedServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_client_reassembles_byte_by_byte_answers_and_pongs(client_built, scripted) -> None:
    server = scripted()
    code, lines = run_client(server.port, "-c", "3", "--auto", "--size", "125")
    report = report_of(lines)
    assert code == 0, report
    assert report["echo_ok"] == report["closed"] == 3
    assert server.pongs == 3 and server.errors == []


def test_client_rejects_a_wrong_accept_key(client_built, scripted) -> None:
    code, lines = run_client(scripted(bad_accept=True).port, "-c", "3", "--auto")
    report = report_of(lines)
    assert code == 1 and report["established"] == 0
    assert report["failures"]["ramp"] == {"bad_accept": 3}


# ---- the preflight (made-up machines) ------------------------------------------------------


def facts(**overrides) -> object:
    values = dict(
        fd_soft=20_000, fd_hard=20_000, nproc_limit=100_000, processes=100, pid_max=32768,
        port_range=(32768, 60999), somaxconn=4096, syn_backlog=2048, conntrack_max=262_144,
        conntrack_tracks_loopback=False, tcp_mem_high_pages=575_802, mem_total=24 << 30,
        mem_available=23 << 30, load1=0.1, cpus=2, server_bytes_per_conn=512,
        server_bytes_source="test",
    )  # fmt: skip
    values.update(overrides)
    return c1000k.preflight.Facts(**values)


def plan(connections: int, **overrides) -> object:
    workers = c1000k.plan.workers_needed(connections, c1000k.plan.per_process_max(20_000))
    values = dict(connections=connections, workers=workers, per_process_max=19_600, base_port=61000)
    values.update(overrides)
    return c1000k.plan.Plan(**values)


def judged(p, f) -> dict[str, object]:
    return {check.name: check for check in c1000k.preflight.preflight(p, f, 2 << 30)}


def test_preflight_passes_a_million_on_the_reference_machine() -> None:
    p = plan(1_000_000)
    assert p.workers == 52 and max(p.per_client()) <= 19_600 and sum(p.per_client()) == 1_000_000
    assert c1000k.preflight.refusals(c1000k.preflight.preflight(p, facts(), 2 << 30)) == []
    assert p.sources_of(51) == "127.1.51.1-4" and p.sources_of(300) == "127.2.44.1-4"


def test_preflight_refuses_a_stage_that_would_eat_the_safety_margin() -> None:
    check = judged(plan(1_000_000), facts(mem_available=10 << 30))["memory left after the stage"]
    assert not check.ok and check.blocking
    fitting = int(check.fix.rpartition(" ")[2])
    assert 0 < fitting < 1_000_000
    smaller = judged(plan(fitting), facts(mem_available=10 << 30))["memory left after the stage"]
    assert smaller.ok


def test_preflight_gives_the_command_for_each_failing_setting() -> None:
    p = plan(100_000, workers=2)
    bad = facts(somaxconn=128, syn_backlog=256, port_range=(50000, 60999),
                conntrack_tracks_loopback=True, conntrack_max=65536)  # fmt: skip
    checks = judged(p, bad)
    assert "--workers 6" in checks["open files per process (hard limit)"].fix
    assert checks["somaxconn"].fix == "sysctl -w net.core.somaxconn=4096"
    assert checks["tcp_max_syn_backlog"].fix == "sysctl -w net.ipv4.tcp_max_syn_backlog=4096"
    assert "nf_conntrack_max=175536" in checks["nf_conntrack_max"].fix
    assert 'ip_local_port_range="1024 65000"' in checks["ip_local_port_range"].fix
    text = c1000k.preflight.format_checks(list(checks.values()))
    assert text.count("FAIL") == 5 and "fix somaxconn: sysctl -w" in text


def test_preflight_only_warns_about_a_busy_machine() -> None:
    check = judged(plan(10_000), facts(load1=5.0))["machine idle (1-min load)"]
    assert not check.ok and not check.blocking


def test_server_ports_must_stay_out_of_the_ephemeral_range() -> None:
    check = judged(plan(100_000, base_port=40000), facts())[
        "server ports outside the ephemeral range"
    ]
    assert not check.ok and "--base-port 61000" in check.fix


def test_merged_histograms_give_quantiles_over_all_clients() -> None:
    reports = [{"h": [[100, 98], [5000, 1]]}, {"h": [[100, 1], [9000, 1]]}, {}]
    merged = c1000k.report.merge_hist(reports, "h")
    assert merged == [(100, 99), (5000, 1), (9000, 1)]
    assert c1000k.report.quantile(merged, 0.5) == 100
    assert (
        c1000k.report.quantile(merged, 0.98) == 100 and c1000k.report.quantile(merged, 0.99) == 5000
    )  # rank 100
    assert c1000k.report.quantile(merged, 1.0) == 9000 and c1000k.report.quantile([], 0.5) is None


def test_ramp_slope_is_the_marginal_cost() -> None:
    samples = [
        {"stage": "ramp", "open": n, "server_rss": 50_000_000 + 300 * n}
        for n in (0, 10, 20, 30, 40)
    ] + [{"stage": "hold", "open": 40, "server_rss": 99_999_999}]
    assert c1000k.report.ramp_slope(samples, "server_rss") == 300.0
    assert c1000k.report.ramp_slope(samples[:3], "server_rss") is None  # too few points
    assert os.path.exists(DRIVER)
