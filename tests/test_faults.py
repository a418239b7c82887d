"""Faults injected into real servers (``python -m reactor`` subprocesses).

Every test checks the same promise: a fault costs the faulty connection only.
*Bystanders* (WebSocket clients of the independent ``websockets`` library,
HTTP keep-alive and raw echo connections) exchange byte-exact traffic before
and after each fault on the SAME sockets; the server's fd count returns to
what it was; nothing hangs (every wait is bounded).

Faults: clients SIGKILLed mid-handshake, mid-fragmented message, mid large
upload/download and mid sendfile body; RST instead of FIN (SO_LINGER 0);
half-closed connections; silent connections (timeouts); a peer that stops
reading while 100 MiB are sent to it (RSS stays bounded); 25,000 connection
attempts against the 20,000-fd limit (no CPU spin, recovery); a worker
SIGKILLed under load in --workers mode; SIGTERM under load.

Victim clients run as ``python tests/test_faults.py victim KIND PORT`` so they
can be SIGKILLed like any real client. Set REACTOR_FAULT_STATS=path to get the
counts of faults injected and of messages/bytes checked as JSON (added to the
file's counts if it exists), REACTOR_FAULT_ROUNDS=N for N rounds (default 3)
of the SIGKILL and RST faults, REACTOR_HOSTILE_SECONDS=N to keep sending fresh
mutations of hostile HTTP requests for N seconds (default 0: one fixed batch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from pathlib import Path

import pytest
from testkit import (
    REPO,
    accept_for,
    children,
    cpu_seconds,
    fd_count,
    frame,
    new_key,
    read_server_frame,
    recv_exactly,
    rss_bytes,
    upgrade_request,
    wait_until,
)

MIB = 1 << 20
BIG_SIZE = 100 * MIB  # "a peer that stops reading while the server sends 100 MiB"
MEDIUM_SIZE = 200 * 1024  # past the static handler's 32 KiB small-file cache: sendfile
# RSS growth allowed while 100 MiB wait for a stalled reader: the output bound
# (--max-send-buffer, 4 MiB) + one 256 KiB read + one 1 MiB message in assembly +
# allocator slack. Buffering the 100 MiB would exceed it three times over.
RSS_BOUND = 32 * MIB
FD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the hard limit: 20,000 here
ATTEMPTS = FD_LIMIT + 5_000  # connection attempts in the fd-exhaustion test: 25,000 here
# Rounds of the SIGKILL and RST faults (7 and 6 kinds each); more for a report run.
ROUNDS = int(os.environ.get("REACTOR_FAULT_ROUNDS", "3"))
# Seconds of extra hostile HTTP requests over the wire (a report run: 600).
HOSTILE_SECONDS = float(os.environ.get("REACTOR_HOSTILE_SECONDS", "0"))

FAULTS: Counter[str] = Counter()
CHECKED: Counter[str] = Counter()  # "messages" and "bytes" compared byte-exact
MEASURED: dict[str, float] = {}  # figures worth reporting (CPU seconds, RSS growth)


@pytest.fixture(scope="module", autouse=True)
def fault_stats():
    yield
    path = os.environ.get("REACTOR_FAULT_STATS")
    if path:
        previous = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        faults = Counter(previous.get("faults", {})) + FAULTS
        checked = Counter(previous.get("checked", {})) + CHECKED
        measured = {**previous.get("measured", {}), **MEASURED}
        record = {
            "faults": dict(sorted(faults.items())),
            "checked": dict(checked),
            "measured": measured,
        }
        Path(path).write_text(json.dumps(record, indent=1) + "\n")


def checked(data: bytes | str) -> None:
    CHECKED["messages"] += 1
    CHECKED["bytes"] += len(data)


# ---- the site ------------------------------------------------------------------------------


class Site:
    """Files served by the HTTP side; each MiB of the big one differs."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root = root
        self.files = {
            "small.txt": b"small file\n",
            "medium.bin": os.urandom(MEDIUM_SIZE),
        }
        for name, content in self.files.items():
            (root / name).write_bytes(content)
        block = os.urandom(MIB)
        digest = hashlib.sha256()
        with open(root / "big.bin", "wb") as f:
            for i in range(BIG_SIZE // MIB):
                chunk = struct.pack(">Q", i) + block[8:]
                f.write(chunk)
                digest.update(chunk)
        self.big_chunk = block[8:]
        self.big_sha256 = digest.hexdigest()

    def big_slice(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of big.bin, rebuilt without reading the file."""
        out = bytearray()
        for i in range(start // MIB, (end - 1) // MIB + 1):
            chunk = struct.pack(">Q", i) + self.big_chunk
            lo, hi = max(start - i * MIB, 0), min(end - i * MIB, MIB)
            out += chunk[lo:hi]
        return bytes(out)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    return Site(tmp_path_factory.mktemp("faults") / "root")


# ---- raw clients (written here, independent of reactor.ws) ---------------------------------


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    return frame(opcode, payload, fin=fin)


def ws_open(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = new_key()
    sock.sendall(upgrade_request(key, host=b"127.0.0.1:%d" % port))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing after the head may be consumed
        if not chunk:
            raise ConnectionError(f"EOF during the handshake: {head!r}")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Accept: " + accept_for(key) in head
    return sock


def ws_read(sock: socket.socket) -> tuple[int, bool, bytes]:
    """One server frame: (opcode, fin, payload); server frames are never masked."""
    fin, _, opcode, payload = read_server_frame(lambda n: recv_exactly(sock, n))
    return opcode, fin, payload


def ws_read_message(sock: socket.socket) -> tuple[int, bytes]:
    """The next data message (pings answered, fragments joined)."""
    parts, kind = [], None
    while True:
        opcode, fin, payload = ws_read(sock)
        if opcode == 0x9:
            sock.sendall(ws_frame(0xA, payload))
            continue
        if opcode == 0x8:
            raise ConnectionError(f"close frame {payload[:2].hex()} while reading a message")
        if opcode != 0xA:
            kind = kind if opcode == 0 else opcode
            parts.append(payload)
            if fin:
                return kind, b"".join(parts)


def ws_close_code(sock: socket.socket) -> int:
    """Read until the server's close frame; answer it; return its code."""
    while True:
        opcode, _, payload = ws_read(sock)
        if opcode == 0x8:
            with contextlib.suppress(OSError):
                sock.sendall(ws_frame(0x8, payload[:2]))
            return struct.unpack("!H", payload[:2])[0] if payload else 1005
        if opcode == 0x9:
            sock.sendall(ws_frame(0xA, payload))


def http_get(path: str, extra: str = "") -> bytes:
    return f"GET /{path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def http_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One response with a Content-Length body."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"EOF in a response head: {head!r}")
        head += chunk
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    return status, fields, recv_exactly(sock, int(fields.get("content-length", 0)))


def rst_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def poll_recv(sock: socket.socket) -> bytes | None:
    """What the socket has now: bytes, b"" at EOF (or reset), None if nothing yet."""
    sock.setblocking(False)
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""


def read_until_eof(sock: socket.socket, limit: float = 10) -> bytes:
    sock.settimeout(limit)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


# ---- servers and bystanders ------------------------------------------------------------------


class Stack:
    """An echo server, and one `auto` server for HTTP and WebSocket (an `http`
    server alone when the stack needs no WebSocket)."""

    def __init__(self, server_factory, site: Site, *args: str, ws: bool = True) -> None:
        common = ("--quiet", "--root", str(site.root), *args)
        self.echo = server_factory("--proto", "echo", *args)
        if ws:
            self.http = self.ws = server_factory("--proto", "auto", *common)
        else:
            self.http = server_factory("--proto", "http", *common)
            self.ws = None
        self.servers = list({id(s): s for s in (self.echo, self.http, self.ws) if s}.values())

    def fds(self) -> list[int]:
        return [fd_count(s.pid) for s in self.servers]

    def settle(self, expected: list[int], timeout: float = 15) -> None:
        """Wait until every server is back to ``expected`` fds."""
        assert wait_until(lambda: self.fds() == expected, timeout), (self.fds(), expected)

    def alive(self) -> None:
        for server in self.servers:
            assert server.proc.poll() is None, server.log_text()[-3000:]


class Bystanders:
    """Connections that keep working, byte-exact, whatever the faults."""

    def __init__(self, stack: Stack, site: Site, count: int = 4) -> None:
        from websockets.sync.client import connect

        self.site = site
        self.rng = random.Random(7)
        self.echo = [stack.echo.connect() for _ in range(count)]
        self.http = [stack.http.connect() for _ in range(count)]
        self.websockets = contextlib.ExitStack()
        self.ws = []
        if stack.ws:
            url = f"ws://127.0.0.1:{stack.ws.port}/"
            for _ in range(count):
                client = connect(url, max_size=None, compression=None, proxy=None)
                self.ws.append(self.websockets.enter_context(client))

    def exercise(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            for sock in self.echo:
                payload = os.urandom(self.rng.choice((1, 1000, 300_000)))
                sender = threading.Thread(target=sock.sendall, args=(payload,))
                sender.start()
                assert recv_exactly(sock, len(payload)) == payload
                sender.join()
                checked(payload)
            for sock in self.http:
                name = self.rng.choice(list(self.site.files))
                sock.sendall(http_get(name))
                status, _, body = http_response(sock)
                assert status == 200 and body == self.site.files[name]
                checked(body)
            for ws in self.ws:
                size = self.rng.choice((0, 125, 126, 70_000, 1_100_000))
                message = os.urandom(size) if self.rng.random() < 0.5 else "é" * (size // 2)
                ws.send(message)
                assert ws.recv(timeout=30) == message
                checked(message)

    def close(self) -> None:
        for sock in self.echo + self.http:
            sock.close()
        self.websockets.close()


@pytest.fixture
def stack(server_factory, site):
    return Stack(server_factory, site)


@pytest.fixture
def bystanders(stack, site):
    crowd = Bystanders(stack, site)
    crowd.exercise(1)
    yield crowd
    crowd.close()


# ---- hostile bytes over the wire: the fuzz oracles, end to end through the glue -------------

FUZZ = REPO / "tests" / "fuzz"


def fuzz_module(name: str):
    """tests/fuzz/<name>.py (not a package), imported once."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    spec = importlib.util.spec_from_file_location(name, FUZZ / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def hostile_inputs(target: str, count: int, seed: int) -> list[bytes]:
    """The target's seeds and regressions, and ``count`` mutations of them."""
    files = sorted((FUZZ / "corpus" / target).glob("*"))
    files += sorted((FUZZ / "regressions" / target).glob("*"))
    seeds = [f.read_bytes() for f in files]
    rng = random.Random(seed)
    out = list(seeds)
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            op, at = rng.randrange(4), rng.randrange(len(data) + 1)
            if op == 0 and at < len(data):
                data[at] = rng.randrange(256)
            elif op == 1:
                data[at:at] = bytes([rng.randrange(256)]) * rng.randint(1, 3)
            elif op == 2 and len(data) > 2:
                del data[at : at + rng.randint(1, 4)]
            else:
                other = rng.choice(seeds)
                start = rng.randrange(len(other))
                data[at:at] = other[start : start + rng.randint(1, 64)]
        out.append(bytes(data))
    return out


def send_all_read_all(socks_and_data: list, timeout: float = 20) -> list[bytes | None]:
    """Send each payload, shut the write side, read every socket to EOF.
    None for a connection the server reset."""
    for sock, data in socks_and_data:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    out = []
    for sock, _ in socks_and_data:
        try:
            out.append(read_until_eof_strict(sock, timeout))
        except ConnectionResetError:
            out.append(None)
        sock.close()
    return out


def read_until_eof_strict(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)  # a hang is a failure (TimeoutError), not an empty answer
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def server_frames(data: bytes) -> list[tuple]:
    """Unmasked server frames as (opcode, payload); a close as (8, code or None)."""
    frames, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, pos = b1 & 0x7F, pos + 2
        if n >= 126:
            size = 2 if n == 126 else 8
            n, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
        payload, pos = data[pos : pos + n], pos + n
        assert len(payload) == n, "a truncated server frame"
        if b0 & 0x0F == 0x8:
            payload = int.from_bytes(payload[:2], "big") if payload else None
        frames.append((b0 & 0x0F, payload))
    return frames


def expected_frames(events: list[tuple]) -> list[tuple]:
    """What the echo application answers to the model's events."""
    out = []
    for event in events:
        if event[0] == "text":
            out.append((0x1, event[1].encode()))
        elif event[0] == "binary":
            out.append((0x2, event[1]))
        elif event[0] == "out":
            out.append((event[1], event[3]))
    return out


def test_hostile_frames_over_the_wire_match_the_rfc_model(server_factory, site):
    """The ws_frames fuzz model, end to end: every seed, regression and 300
    mutations sent after a real handshake. The server's frames must be exactly
    the echoes, pongs and close the model predicts, then TCP closes."""
    target = fuzz_module("fuzz_ws_frames")
    stack = Stack(server_factory, site)
    baseline = stack.fds()
    inputs = hostile_inputs("ws_frames", 300, seed=11)
    resets = 0
    for batch in range(0, len(inputs), 100):
        chunk = inputs[batch : batch + 100]
        pairs = [(ws_open(stack.ws.port), data[1:]) for data in chunk]  # config: defaults
        for data, answer in zip(chunk, send_all_read_all(pairs), strict=True):
            model = target.Model(16 * MIB, closing=False).run(data[1:])
            expected = expected_frames(model)
            if answer is None:  # reset: only after our unread bytes hit a closed socket
                resets += 1
                continue
            assert server_frames(answer) == expected, f"input {data!r}"
            FAULTS["hostile bytes over the wire: ws frames after a handshake"] += 1
            CHECKED["messages"] += len(expected)
            CHECKED["bytes"] += len(answer)
    assert resets <= len(inputs) // 20, f"{resets} resets"
    stack.settle(baseline)
    stack.alive()


def test_hostile_requests_over_the_wire_match_the_parser_and_resolver(server_factory):
    """The http fuzz oracles, end to end: seeds, regressions and 300 mutations
    (more with REACTOR_HOSTILE_SECONDS) sent to a server whose root is the fuzz
    target's trap tree. The first answer's status is what the parser and resolver
    decide; no response ever carries the secrets placed beside the root; no
    request reaches the reactor's per-connection catch-all ("handler failed")."""
    target = fuzz_module("fuzz_http")
    from reactor.http import static
    from reactor.http.request import HttpError, RequestParser

    server = server_factory("--proto", "http", "--quiet", "--root", target.ROOT)
    baseline = fd_count(server.pid)
    deadline = time.monotonic() + HOSTILE_SECONDS
    inputs, seed = hostile_inputs("http", 300, seed=12), 12
    while inputs:
        for batch in range(0, len(inputs), 100):
            chunk = [_as_request(data) for data in inputs[batch : batch + 100]]
            pairs = [(server.connect(), data) for data in chunk]
            for data, answer in zip(chunk, send_all_read_all(pairs), strict=True):
                assert answer is not None, f"reset: {data!r}"
                assert target.SECRET not in answer, f"a secret was served for {data!r}"
                expected = _expected_status(target, static, HttpError, RequestParser, data)
                status = int(answer.split(b" ", 2)[1]) if answer else None
                if expected in target.ERROR_STATUSES:
                    assert status in target.ERROR_STATUSES, (data, answer[:200])
                else:
                    assert status == expected, (data, answer[:300])
                FAULTS["hostile bytes over the wire: http requests"] += 1
            assert "handler failed" not in server.log_text(), server.log_text()[-3000:]
        seed += 1000  # fresh mutations until the deadline (none by default)
        inputs = hostile_inputs("http", 1000, seed)[-1000:] if time.monotonic() < deadline else []
    assert wait_until(lambda: fd_count(server.pid) == baseline, 15)


def test_hostile_handshakes_over_the_wire_match_the_rfc_oracle(server_factory):
    """The ws_handshake fuzz oracle, end to end through `--proto ws`: seeds,
    regressions and 300 mutations. The answer is the parser's error, 426 for a
    plain request, or exactly what RFC 6455 §4.2.1 decides (101 with the right
    accept key, 400, 426); an incomplete head then FIN gets no answer."""
    target = fuzz_module("fuzz_ws_handshake")
    from reactor.http.request import HttpError, RequestParser

    server = server_factory("--proto", "ws")
    baseline = fd_count(server.pid)
    inputs = hostile_inputs("ws_handshake", 300, seed=13)
    for batch in range(0, len(inputs), 100):
        chunk = [data[1:] for data in inputs[batch : batch + 100]]
        pairs = [(server.connect(), data) for data in chunk]
        for data, answer in zip(chunk, send_all_read_all(pairs), strict=True):
            assert answer is not None, f"reset: {data!r}"
            try:
                request, _ = RequestParser().parse(data)
            except HttpError as exc:
                expected = exc.status
            else:
                if request is None:
                    expected = None
                elif not request.wants_upgrade:
                    expected = 426
                else:
                    fields = (request.method, request.http_version, request.headers)
                    expected = target.oracle(*fields, origins_on=False)[0]
            status = int(answer.split(b" ", 2)[1]) if answer else None
            assert status == expected, (data, answer[:300])
            if status == 101:
                target.check_accept(_accept_of(answer), request.headers, ())
            FAULTS["hostile bytes over the wire: ws handshakes"] += 1
    assert wait_until(lambda: fd_count(server.pid) == baseline, 15)


def _accept_of(answer: bytes):
    """The 101 head of an answer, shaped like handshake.Accept for the oracle."""
    head = answer[: answer.index(b"\r\n\r\n") + 4]
    accept = re.search(rb"\r\nSec-WebSocket-Accept: (\S+)\r\n", head).group(1).decode()
    subprotocol = re.search(rb"\r\nSec-WebSocket-Protocol: (\S+)\r\n", head)
    chosen = subprotocol.group(1).decode() if subprotocol else None
    return types.SimpleNamespace(accept=accept, subprotocol=chosen, response=head)


def _as_request(data: bytes) -> bytes:
    """A fuzz input as the bytes a client sends (bare targets get a request line)."""
    if data[:1] and data[0] & 1:
        path = bytes(b for b in data[1:] if 0x21 <= b <= 0x7E) or b"/"
        return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    return data[1:]


def _expected_status(target, static, HttpError, RequestParser, data: bytes) -> int | None:
    """The status of the first answer (None: closed without one)."""
    try:
        request, _ = RequestParser().parse(data)
    except HttpError as exc:
        return exc.status
    if request is None:
        return None  # an incomplete head and then FIN: nothing to answer
    try:
        path = static.resolve(target.ROOT, request.target)
    except HttpError as exc:  # Redirect included (301)
        return exc.status
    return static.plan(request, path, os.stat(path), time.time()).status


# ---- victims: clients that get SIGKILLed in the middle of something --------------------------


def victim_main(kind: str, port: int) -> None:
    """Get into position, say "ready", then wait to be killed (bounded)."""
    if kind.startswith("ws-") and kind != "ws-mid-handshake":
        sock = ws_open(port)
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if kind == "ws-mid-handshake":
        request = upgrade_request(new_key())
        sock.sendall(request[: len(request) // 2])
    elif kind == "http-mid-head":
        sock.sendall(b"GET /small.txt HTTP/1.1\r\nHost: t\r\nX-Lon")
    elif kind == "http-mid-sendfile":
        sock.sendall(http_get("big.bin"))
        recv_exactly(sock, MIB)  # part of the body, then stop reading
    elif kind == "echo-mid-large-send":
        _send_stuck(sock, os.urandom(16 * MIB))  # the server stops reading us
    elif kind == "ws-mid-fragmented-message":
        sock.sendall(ws_frame(0x1, b"first fragment, no FIN", fin=False))
        sock.sendall(ws_frame(0x0, b" second", fin=False))
    elif kind == "ws-mid-large-upload":
        frame = ws_frame(0x2, os.urandom(8 * MIB))
        sock.sendall(frame[: len(frame) // 2])
    elif kind == "ws-mid-large-download":  # echoes pile up unread on both sides
        _send_stuck(sock, b"".join(ws_frame(0x2, os.urandom(4 * MIB)) for _ in range(4)))
    else:
        raise SystemExit(f"unknown victim {kind}")
    print("ready", flush=True)
    time.sleep(120)  # killed long before; never lingers past a broken test


def _send_stuck(sock: socket.socket, data: bytes) -> None:
    """Send until the peer stops taking more (backpressure), bounded."""
    sock.settimeout(2)
    with contextlib.suppress(TimeoutError):
        sock.sendall(data)


VICTIMS_HTTP = ("http-mid-head", "http-mid-sendfile")
VICTIMS_WS = (
    "ws-mid-handshake",
    "ws-mid-fragmented-message",
    "ws-mid-large-upload",
    "ws-mid-large-download",
)


def start_victim(kind: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "victim", kind, str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    return proc


def await_ready(proc: subprocess.Popen, kind: str) -> None:
    line = proc.stdout.readline()  # bounded: the victim has socket timeouts
    assert line.strip() == "ready", f"victim {kind} did not get into position"


def test_sigkilled_clients_lose_only_their_own_connections(stack, bystanders):
    baseline = stack.fds()
    for _ in range(ROUNDS):
        victims = [("echo-mid-large-send", start_victim("echo-mid-large-send", stack.echo.port))]
        victims += [(kind, start_victim(kind, stack.http.port)) for kind in VICTIMS_HTTP]
        victims += [(kind, start_victim(kind, stack.ws.port)) for kind in VICTIMS_WS]
        for kind, proc in victims:
            await_ready(proc, kind)
        expected = sum(baseline) + len(victims)  # each victim holds one connection
        assert wait_until(lambda: sum(stack.fds()) >= expected, 10)  # noqa: B023
        for kind, proc in victims:
            proc.kill()  # SIGKILL: the kernel closes its sockets (RST when data was unread)
            proc.wait()
            FAULTS[f"SIGKILLed client: {kind}"] += 1
        stack.settle(baseline)
        bystanders.exercise(1)
    stack.alive()


# ---- RST instead of FIN ------------------------------------------------------------------------


def _rst_cases(stack: Stack, site: Site) -> list[tuple[str, socket.socket]]:
    cases = []
    sock = stack.echo.connect()
    cases.append(("echo: right after connect", sock))
    sock = stack.echo.connect()
    sock.sendall(os.urandom(2 * MIB))  # unread echoes pending on both sides
    cases.append(("echo: mid-stream", sock))
    sock = stack.http.connect()
    sock.sendall(b"GET /medium.bin HTTP/1.1\r\nHo")
    cases.append(("http: mid-head", sock))
    sock = stack.http.connect()
    sock.sendall(http_get("big.bin"))
    recv_exactly(sock, 64 * 1024)
    cases.append(("http: mid-sendfile body", sock))
    if stack.ws:
        sock = ws_open(stack.ws.port)
        sock.sendall(ws_frame(0x2, os.urandom(100_000))[:50_000])
        cases.append(("ws: mid-frame", sock))
        sock = ws_open(stack.ws.port)
        sock.sendall(ws_frame(0x2, os.urandom(3 * MIB)))  # its echo is in flight
        cases.append(("ws: mid-echo", sock))
    return cases


def test_reset_instead_of_fin_closes_only_that_connection(stack, bystanders, site):
    baseline = stack.fds()
    for _ in range(ROUNDS):
        for kind, sock in _rst_cases(stack, site):
            rst_close(sock)
            FAULTS[f"RST instead of FIN: {kind}"] += 1
        stack.settle(baseline)
        bystanders.exercise(1)
    stack.alive()


# ---- half-closed connections -------------------------------------------------------------------


def test_half_closed_connections_get_their_answers_then_close(stack, bystanders, site):
    baseline = stack.fds()
    # echo: everything sent before our FIN comes back, then the server's FIN
    sock = stack.echo.connect()
    payload = os.urandom(3 * MIB)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    assert read_until_eof(sock) == payload
    checked(payload)
    sock.close()
    # http: three pipelined requests then FIN: three answers in order, then FIN
    sock = stack.http.connect()
    sock.sendall(http_get("small.txt") + http_get("medium.bin") + http_get("small.txt"))
    sock.shutdown(socket.SHUT_WR)
    for name in ("small.txt", "medium.bin", "small.txt"):
        status, _, body = http_response(sock)
        assert status == 200 and body == site.files[name]
        checked(body)
    assert read_until_eof(sock) == b""
    sock.close()
    # ws: messages then FIN without a close frame: the echoes arrive, then TCP closes
    sock = ws_open(stack.ws.port)
    messages = [os.urandom(n) for n in (10, 70_000, 0)]
    sock.sendall(b"".join(ws_frame(0x2, m) for m in messages))
    sock.shutdown(socket.SHUT_WR)
    for message in messages:
        assert ws_read_message(sock) == (0x2, message)
        checked(message)
    assert read_until_eof(sock) == b""
    sock.close()
    # half a handshake, then FIN: nothing can complete; closed without an answer
    sock = stack.ws.connect()
    sock.sendall(upgrade_request(new_key())[:30])
    sock.shutdown(socket.SHUT_WR)
    assert read_until_eof(sock) == b""
    sock.close()
    for kind in ("echo", "http pipelined", "ws messages", "ws mid-handshake"):
        FAULTS[f"half-closed: {kind}"] += 1
    stack.settle(baseline)
    bystanders.exercise(1)


# ---- silent connections --------------------------------------------------------------------------


def test_silent_connections_are_closed_by_timeouts(server_factory, site):
    timeouts = ("--idle-timeout", "3", "--header-timeout", "1", "--ping-interval", "0")
    stack = Stack(server_factory, site, *timeouts)
    baseline = stack.fds()
    silent = {
        "echo: never sends (idle timeout)": stack.echo.connect(),
        "http: never sends (header timeout)": stack.http.connect(),
        "ws: never sends (header timeout)": stack.ws.connect(),
        "ws: silent after the handshake (idle timeout)": ws_open(stack.ws.port),
    }
    partial = stack.http.connect()
    partial.sendall(b"GET /small.txt HTTP/1.1\r\n")  # slowloris: a head that never ends
    silent["http: partial head (header timeout, 408)"] = partial
    active = Bystanders(stack, site, count=1)
    received: dict[str, bytes] = dict.fromkeys(silent, b"")
    closed: set[str] = set()
    started = time.monotonic()
    while len(closed) < len(silent) and time.monotonic() - started < 20:
        active.exercise(1)  # stays busy throughout: never idle, never timed out
        for kind, sock in silent.items():
            if kind not in closed:
                data = poll_recv(sock)
                if data == b"":
                    closed.add(kind)
                elif data is not None:
                    received[kind] += data
    assert set(closed) == set(silent), f"still open: {set(silent) - set(closed)}"
    assert received["http: partial head (header timeout, 408)"].startswith(b"HTTP/1.1 408 ")
    assert all(not received[k] for k in silent if "408" not in k), received
    for kind in closed:
        FAULTS[f"silent connection: {kind}"] += 1
    active.exercise(1)
    active.close()
    for sock in silent.values():
        sock.close()
    stack.settle(baseline)


# ---- a peer that stops reading while 100 MiB are sent to it -------------------------------------


def _stall_then_drain(server, start_sending, read_all) -> int:
    """Let the sender fill every buffer while nobody reads; return the
    server's RSS growth while stalled, then read everything back."""
    before = rss_bytes(server.pid)
    sender = threading.Thread(target=start_sending, daemon=True)
    sender.start()
    time.sleep(1)
    stalled = [rss_bytes(server.pid)]
    for _ in range(3):  # a few samples while stalled: the peak counts
        time.sleep(0.5)
        stalled.append(rss_bytes(server.pid))
    read_all()
    sender.join(60)
    assert not sender.is_alive()
    return max(stalled) - before


def test_stalled_reader_echo_100_mib_rss_bounded(server_factory):
    server = server_factory("--proto", "echo")
    sock = server.connect(timeout=60)
    payload = os.urandom(BIG_SIZE)

    def read_all():
        assert recv_exactly(sock, len(payload)) == payload

    growth = _stall_then_drain(server, lambda: sock.sendall(payload), read_all)
    checked(payload)
    FAULTS["stalled reader, 100 MiB: echo"] += 1
    MEASURED["stalled reader, echo: server RSS growth MiB"] = round(growth / MIB, 1)
    assert growth < RSS_BOUND, f"RSS grew {growth / MIB:.1f} MiB"


def test_stalled_reader_http_100_mib_rss_bounded(server_factory, site):
    server = server_factory("--proto", "http", "--quiet", "--root", str(site.root))
    sock = server.connect(timeout=60)
    digest = hashlib.sha256()

    def read_all():
        status, fields, body = http_response(sock)
        assert status == 200 and len(body) == BIG_SIZE
        digest.update(body)

    growth = _stall_then_drain(server, lambda: sock.sendall(http_get("big.bin")), read_all)
    assert digest.hexdigest() == site.big_sha256
    CHECKED["messages"] += 1
    CHECKED["bytes"] += BIG_SIZE
    FAULTS["stalled reader, 100 MiB: http sendfile"] += 1
    MEASURED["stalled reader, http: server RSS growth MiB"] = round(growth / MIB, 1)
    assert growth < RSS_BOUND, f"RSS grew {growth / MIB:.1f} MiB"


def test_stalled_reader_ws_100_mib_rss_bounded(server_factory):
    server = server_factory("--proto", "ws")
    sock = ws_open(server.port, timeout=60)
    messages = [os.urandom(MIB) for _ in range(BIG_SIZE // MIB)]

    def send_all():
        for message in messages:
            sock.sendall(ws_frame(0x2, message))

    def read_all():
        for message in messages:
            assert ws_read_message(sock) == (0x2, message)
            checked(message)

    growth = _stall_then_drain(server, send_all, read_all)
    FAULTS["stalled reader, 100 MiB: ws echo"] += 1
    MEASURED["stalled reader, ws: server RSS growth MiB"] = round(growth / MIB, 1)
    assert growth < RSS_BOUND, f"RSS grew {growth / MIB:.1f} MiB"


# ---- fd exhaustion: 25,000 connection attempts against 20,000 fds --------------------------------


def flood_main(port: int, count: int, first_ip: int) -> None:
    """Open ``count`` connections (non-blocking), report how many the server
    kept after the dust settles, hold them until stdin closes."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        # Spread over source addresses: one address has ~28k ephemeral ports.
        sock.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
        sock.bind((f"127.0.0.{first_ip + i // 5000}", 0))
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    print(f"opened {len(socks)}", flush=True)
    sys.stdin.readline()  # the test says when to look
    held = 0
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    ready = {key.fileobj for key, _ in sel.select(timeout=1)}
    for sock in socks:
        if sock in ready:
            try:
                eof = sock.recv(1) == b""
            except OSError:
                eof = True
            held += not eof
        else:
            held += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    print(f"held {held}", flush=True)
    sys.stdin.readline()
    for sock in socks:
        sock.close()
    print("released", flush=True)


@pytest.mark.slow
@pytest.mark.skipif(FD_LIMIT > 60_000, reason="fd limit too high to exhaust quickly")
@pytest.mark.parametrize("cap", ["max-connections", "emfile"])
def test_fd_exhaustion_refuses_without_spinning_then_recovers(server_factory, cap):
    """default cap: past --max-connections a connection is accepted and
    closed at once. emfile: the cap is above the fd limit, so accept() itself
    fails with EMFILE and the listener pauses."""
    args = ["--proto", "echo", "--idle-timeout", "0"]
    if cap == "emfile":
        args += ["--max-connections", str(FD_LIMIT + 10_000)]
    server = server_factory(*args)
    baseline = fd_count(server.pid)
    half = ATTEMPTS // 2
    floods = [
        subprocess.Popen(
            [sys.executable, __file__, "flood", str(server.port), str(half), str(2 + 8 * k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for k in range(2)
    ]
    try:
        for flood in floods:
            assert flood.stdout.readline().startswith("opened")
        # Every attempt has been made; the server is at its limit. It must idle, not spin.
        assert wait_until(lambda: fd_count(server.pid) >= FD_LIMIT - 100, 30)
        time.sleep(1)
        before = cpu_seconds(server.pid)
        time.sleep(3)
        burned = cpu_seconds(server.pid) - before
        held = 0
        for flood in floods:
            flood.stdin.write("\n")
            flood.stdin.flush()
            held += int(flood.stdout.readline().split()[1])
        FAULTS[f"fd exhaustion: connection attempts ({cap})"] += ATTEMPTS
        MEASURED[f"fd exhaustion ({cap}): server CPU s in 3 s at the limit"] = round(burned, 3)
        MEASURED[f"fd exhaustion ({cap}): connections still open client-side"] = held
        print(f"{cap}: burned {burned:.3f} s CPU in 3 s; {held} held; {fd_count(server.pid)} fds")
        assert burned < 1.5, f"server burned {burned:.2f} s of CPU in 3 s at its fd limit"
        assert FD_LIMIT - 100 <= fd_count(server.pid) <= FD_LIMIT
        if cap == "max-connections":  # the excess was refused (EOF), not left hanging
            assert FD_LIMIT - 100 <= held <= FD_LIMIT, f"{held} connections still open"
        # emfile: the excess waits in the accept queue or in SYN retries (queued)
        for flood in floods:
            flood.stdin.write("\n")
            flood.stdin.flush()
            assert flood.stdout.readline().strip() == "released"
    finally:
        for flood in floods:
            flood.kill()
            flood.wait()
    assert wait_until(lambda: fd_count(server.pid) == baseline, 30), fd_count(server.pid)
    with server.connect() as sock:  # serves normally once the load is gone
        sock.sendall(b"back to normal")
        assert recv_exactly(sock, 14) == b"back to normal"
    assert server.proc.poll() is None


# ---- a worker SIGKILLed under load --------------------------------------------------------


def socket_count(pid: int) -> int:
    """Sockets open in a process (listener and wakeup pair included)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
    return count


def echo_roundtrip(sock: socket.socket, payload: bytes) -> bool:
    sock.sendall(payload)
    return recv_exactly(sock, len(payload)) == payload


def ws_roundtrip(sock: socket.socket, payload: bytes) -> bool:
    sock.sendall(ws_frame(0x2, payload))
    return ws_read_message(sock) == (0x2, payload)


WORKER_PROTOCOLS = {
    "echo": (lambda server: server.connect(), echo_roundtrip),
    "ws": (lambda server: ws_open(server.port), ws_roundtrip),
}


@pytest.mark.parametrize("proto", ["echo", "ws"])
def test_worker_killed_under_load_others_untouched(server_factory, proto):
    server = server_factory("--proto", proto, "--workers", "2", workers=2)
    connect, roundtrip = WORKER_PROTOCOLS[proto]
    workers = children(server.pid)
    assert len(workers) == 2
    idle = {pid: socket_count(pid) for pid in workers}
    socks = [connect(server) for _ in range(120)]
    # connect() returns once the kernel queued a connection, maybe before the worker's
    # accept(): wait until every one is in a worker's fd table, then count each worker's

    def held() -> dict[int, int]:
        return {pid: socket_count(pid) - idle[pid] for pid in workers}

    assert wait_until(lambda: sum(held().values()) == len(socks), 15), held()
    victim = workers[0]
    victim_holds = held()[victim]
    assert 0 < victim_holds < len(socks), "the kernel put every connection on one worker"
    load = EchoLoad(socks, roundtrip)
    load.start()
    assert wait_until(lambda: len(load.rounds) == len(socks), 20)  # traffic on every one
    os.kill(victim, signal.SIGKILL)
    FAULTS[f"worker SIGKILLed under load: {proto}"] += 1
    assert wait_until(lambda: len(load.failed) >= victim_holds, 20), load.failed
    at_kill = dict(load.rounds)  # then one more round trip on every survivor
    assert wait_until(
        lambda: all(load.rounds[s] > at_kill[s] for s in socks if s not in load.failed), 20
    )
    load.stop()
    assert not load.is_alive(), "the load thread is stuck on a socket"
    # Exactly the victim's connections failed: one more would be a survivor's.
    assert len(load.failed) == victim_holds, (len(load.failed), victim_holds, load.failed)
    survivors = [sock for sock in socks if sock not in load.failed]
    server.wait_for_log(r"restarting")
    assert wait_until(lambda: len(children(server.pid)) == 2 and victim not in children(server.pid))
    server.wait_for_log(r"listening on", count=3)  # the replacement is accepting
    for sock in survivors:  # untouched: the same sockets still echo
        assert roundtrip(sock, b"after")
    fresh = [connect(server) for _ in range(20)]
    for sock in fresh:
        assert roundtrip(sock, b"fresh")
    for sock in socks + fresh:
        sock.close()


class EchoLoad(threading.Thread):
    """Round trips on every connection until stopped; records failures."""

    def __init__(self, socks: list[socket.socket], roundtrip) -> None:
        super().__init__(daemon=True)
        self.socks = socks
        self.roundtrip = roundtrip
        self.rounds: Counter[socket.socket] = Counter()
        self.failed: dict[socket.socket, str] = {}
        self.running = True

    def run(self) -> None:
        rng = random.Random(3)
        while self.running:
            for sock in self.socks:
                if sock in self.failed or not self.running:
                    continue
                payload = os.urandom(rng.choice((16, 4096)))
                try:
                    sock.settimeout(5)
                    if not self.roundtrip(sock, payload):
                        self.failed[sock] = "echo mismatch"
                    else:
                        self.rounds[sock] += 1
                        checked(payload)
                except (OSError, ConnectionError) as exc:
                    self.failed[sock] = repr(exc)

    def stop(self) -> None:
        self.running = False
        self.join(30)


# ---- SIGTERM under load --------------------------------------------------------------------------


def test_sigterm_under_load_closes_websockets_1001_and_finishes_http(server_factory, site):
    stack = Stack(server_factory, site, "--shutdown-timeout", "3", "--close-timeout", "2")
    ws_socks = [ws_open(stack.ws.port) for _ in range(50)]
    for i, sock in enumerate(ws_socks):  # traffic on every one before the signal
        sock.sendall(ws_frame(0x1, b"hello %d" % i))
        assert ws_read_message(sock) == (0x1, b"hello %d" % i)
    downloads = []
    for _ in range(4):  # 100 MiB bodies in flight, nobody reading yet
        sock = stack.http.connect(timeout=30)
        sock.sendall(http_get("big.bin"))
        downloads.append((sock, http_response_head(sock)))
    # Two readers resume at the signal (their bodies can finish before the deadline);
    # two stay stalled past it (theirs must be cut cleanly: a correct prefix, then EOF).
    resumed = [Download(sock, head) for sock, head in downloads[:2]]
    started = time.monotonic()
    for server in stack.servers:
        if server is not stack.echo:
            server.proc.send_signal(signal.SIGTERM)
    for download in resumed:
        download.start()
    for sock in ws_socks:
        sock.settimeout(10)
        assert ws_close_code(sock) == 1001
        assert read_until_eof(sock) == b""
        FAULTS["SIGTERM under load: open WebSocket (close 1001)"] += 1
    for server in stack.servers:
        if server is not stack.echo:
            assert server.proc.wait(15) == 0
    elapsed = time.monotonic() - started
    stalled = [head + read_until_eof(sock, 15) for sock, head in downloads[2:]]
    for download in resumed:
        download.join(30)
        assert len(download.body) == BIG_SIZE, "a body that could finish was cut"
    for body in [d.body for d in resumed] + stalled:
        assert len(body) <= BIG_SIZE and body == site.big_slice(0, len(body))
        CHECKED["messages"] += 1
        CHECKED["bytes"] += len(body)
    FAULTS["SIGTERM under load: in-flight sendfile body (finished)"] += len(resumed)
    FAULTS["SIGTERM under load: in-flight sendfile body (reader stalled: cut)"] += len(stalled)
    MEASURED["SIGTERM under load: seconds to exit (deadline 3 s)"] = round(elapsed, 2)
    assert elapsed < 3 + 5, f"exit took {elapsed:.1f} s with a 3 s shutdown deadline"


class Download(threading.Thread):
    def __init__(self, sock: socket.socket, head_rest: bytes) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.body = head_rest

    def run(self) -> None:
        self.body += read_until_eof(self.sock, 15)


def http_response_head(sock: socket.socket) -> bytes:
    """Read a 200 head for big.bin; return the body bytes that came with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % BIG_SIZE in head
    return rest


if __name__ == "__main__":
    if sys.argv[1] == "victim":
        victim_main(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "flood":
        flood_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
