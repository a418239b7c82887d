"""Test helpers: server subprocesses and socket/proc utilities (imported by tests)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerProcess:
    """A `python -m reactor` subprocess whose stderr is collected line by line."""

    def __init__(self, args: list[str], *, workers: int = 1, preexec_fn=None, cwd=None) -> None:
        cmd = [sys.executable, "-m", "reactor", "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=preexec_fn,
            cwd=cwd or REPO,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        ready = self.wait_for_log(LISTENING, count=workers, timeout=15)
        self.port = int(LISTENING.search(ready[0]).group(2))

    def _collect(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_log(self, pattern: str | re.Pattern, *, count: int = 1, timeout: float = 10):
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no {count}x {regex.pattern!r} in server log:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(left, 0.2))

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def run_bench(script: Path, *args: str, results_dir: Path, timeout: float = 60) -> tuple[str, dict]:
    """Run a bench/ script that writes one ``<name>-<time>.json`` into results_dir
    and exits 0; return its stdout and that record."""
    argv = [sys.executable, str(script), *args, "--results-dir", str(results_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    (result_file,) = results_dir.glob(f"{script.stem}-*.json")
    return done.stdout, json.loads(result_file.read_text())


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            raise ConnectionError(f"EOF after {got} of {size} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def segments_in(sock: socket.socket) -> int:
    """TCP segments this socket has received (struct tcp_info's tcpi_segs_in)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[140:144], sys.byteorder)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    return []


def wait_until(predicate, timeout: float = 10, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---- an independent client side of RFC 6455 (written here, not taken from reactor.ws) ----

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server owes for ``key`` (§4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def new_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def upgrade_request(
    key: bytes,
    *,
    host: bytes = b"127.0.0.1",
    path: bytes = b"/",
    extra: bytes = b"",
    version: bytes = b"13",
) -> bytes:
    """An opening handshake request (§4.1); ``extra`` holds more header lines."""
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n"
    )


def mask(payload: bytes, key: bytes) -> bytes:
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(payload), "big"
    )


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """A client frame (§5.2), masked with a random key unless told otherwise;
    ``length`` overrides the declared length."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    m = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + mask(payload, key)


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    return frame(0x8, b"" if code is None else struct.pack("!H", code) + reason)


def read_server_frame(take: Callable[[int], bytes]) -> tuple[bool, int, int, bytes]:
    """(fin, rsv bits, opcode, payload) of one server frame, read with
    ``take(n)`` (exactly n bytes); server frames are never masked (§5.1)."""
    b0, b1 = take(2)
    assert not b1 & 0x80, "server frames are never masked (§5.1)"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", take(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", take(8))
    return bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0x0F, take(n) if n else b""


@contextlib.contextmanager
def importable_module(folder: Path, name: str, source: str):
    """``source`` written as module ``name`` in ``folder``, which server
    subprocesses started meanwhile find on their PYTHONPATH (for ``--app``)."""
    (folder / f"{name}.py").write_text(source)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
