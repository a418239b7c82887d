"""The processes of a stage: the server and client command lines, one client process and
what it reports, the warm-up connection, and stopping by PID."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import benchkit

from .plan import Plan

CLIENT = benchkit.C_DIR / "c1000k_client"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the driver dies, however it dies."""
    os.setsid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def server_command(plan: Plan) -> list[str]:
    argv = [
        sys.executable, "-m", "reactor", "--proto", "ws", "--host", plan.host,
        "--port", str(plan.base_port), "--workers", str(plan.workers),
        "--idle-timeout", "0", "--ping-interval", "0", "--log-level", "warning",
    ]  # fmt: skip
    if not plan.shared_port:
        argv.append("--port-per-worker")
    return argv + plan.server_args


def client_command(plan: Plan, index: int, count: int, args: argparse.Namespace) -> list[str]:
    return [
        str(CLIENT), "--host", plan.host, "--port", str(plan.port_of(index)),
        "--connections", str(count), "--sources", plan.sources_of(index), "--id", str(index),
        "--in-flight", str(plan.in_flight), "--echo-window", str(plan.echo_window),
        "--size", str(plan.size), "--close", plan.close_mode, "--progress-ms", "500",
        "--handshake-timeout", str(args.handshake_timeout),
        "--ramp-timeout", str(args.ramp_timeout), "--hold-timeout", str(args.hold_timeout),
        "--echo-timeout", str(args.echo_timeout), "--close-timeout", str(args.close_timeout),
    ]  # fmt: skip


class Client:
    """One client process and what it reported."""

    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent, cwd=benchkit.REPO_DIR,
        )  # fmt: skip
        self.partial = {"out": b"", "err": b""}
        self.last: dict[str, Any] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.stderr: list[str] = []

    def command(self, word: str) -> None:
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it exited; its report (or its absence) tells the story

    def feed(self, stream: str, data: bytes) -> None:
        lines = (self.partial[stream] + data).split(b"\n")
        self.partial[stream] = lines.pop()
        for line in lines:
            if stream == "err":
                self.stderr.append(line.decode(errors="replace"))
                del self.stderr[:-20]  # the last lines are the useful ones
            elif line.strip():
                self.on_line(json.loads(line))

    def on_line(self, record: dict[str, Any]) -> None:
        self.last = record
        if record["event"] != "progress":
            self.events[record["event"]] = record


def websocket_round_trip(host: str, port: int, timeout: float = 5.0) -> None:
    """Open a WebSocket (RFC 6455 §4.1), check its accept key, close it with 1000 (§5.5.1).
    Raises RuntimeError when the server does not answer like a WebSocket echo server."""
    request, accept = benchkit.upgrade_request(host, port)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise RuntimeError(f"port {port}: not a WebSocket upgrade: {head[:80]!r}")
        mask = os.urandom(4)
        code = bytes(b ^ mask[i] for i, b in enumerate(b"\x03\xe8"))  # 1000, masked
        sock.sendall(b"\x88\x82" + mask + code)
        while sock.recv(4096):  # the server's close frame, then its TCP close
            pass


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a child by PID (SIGTERM, SIGKILL after ``grace``) and close its pipes."""
    benchkit.stop_process(proc, grace)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe:
            pipe.close()


def kill_if_alive(pid: int, grace: float = 3.0) -> None:
    deadline = time.monotonic() + grace
    while benchkit.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if benchkit.alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
