"""What a user meets first: start-up errors, --app checks, the console script, --help.

Every start-up failure is one line and exit status 1 (usage errors: 2, before
any worker is forked), with or without --workers; never a traceback, never a
worker restarted forever.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import LISTENING, REPO, children, fd_count, wait_until
from websockets.sync.client import connect

SCRIPT = Path(sys.executable).parent / "reactor"  # the console script of this venv
PYTHON_M = [sys.executable, "-m", "reactor"]


def run_reactor(*args: str, cwd: Path = REPO, command=None, timeout: float = 30):
    return subprocess.run(
        [*(command or PYTHON_M), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


@pytest.fixture
def taken_port():
    """A port held by a plain listener (no SO_REUSEPORT): nobody else can bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_one_line_and_exit_1(taken_port, workers):
    done = run_reactor("--host", "127.0.0.1", "--port", str(taken_port), "--workers", workers)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(f"cannot listen on 127.0.0.1:{taken_port}: address already in use")
    assert "restarting" not in done.stderr


APP_MODULE = """
from reactor.app import WebSocketApp

class Shout(WebSocketApp):
    def on_message(self, conn, data):
        conn.send(data.upper())

def broken_factory():
    raise RuntimeError("no database")

def odd_factory():
    return 42

class AsyncStart(WebSocketApp):
    async def on_start(self, server):
        pass

not_an_app = {"on_message": "no"}
app = Shout()
"""


@pytest.fixture
def app_folder(tmp_path):
    (tmp_path / "myapp.py").write_text(APP_MODULE)
    return tmp_path


@pytest.mark.parametrize("workers", ["1", "3"])
@pytest.mark.parametrize(
    "args, line",
    [
        (["--root", "/nonexistent-root"], "--root /nonexistent-root: not a directory"),
        (
            ["--app", "myapp:broken_factory"],
            "start-up failed: RuntimeError: no database (--log-level debug shows where)",
        ),
        (["--app", "myapp:odd_factory"], "--app: the --app factory returned 42"),
    ],
    ids=["root-missing", "factory-raises", "factory-returns-no-app"],
)
def test_a_worker_start_up_failure_stops_the_server_with_one_line(app_folder, workers, args, line):
    done = run_reactor("--port", "0", "--workers", workers, *args, cwd=app_folder)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and line in errors[0], done.stderr
    assert "restarting" not in done.stderr


@pytest.mark.parametrize(
    "spec, message",
    [
        ("myapp:not_an_app", "is not an application"),
        ("os:sep", "is not an application"),
        ("myapp:AsyncStart", "on_start is a coroutine function (async def): it runs once"),
    ],
)  # fmt: skip
def test_app_that_cannot_serve_is_a_usage_error_before_any_fork(app_folder, spec, message):
    done = run_reactor("--port", "0", "--workers", "2", "--app", spec, cwd=app_folder)
    assert done.returncode == 2, done.stderr
    assert "error: --app: " in done.stderr and message in done.stderr, done.stderr
    assert "supervisor" not in done.stderr and "Traceback" not in done.stderr


def test_console_script_loads_the_app_from_the_current_folder(app_folder):
    assert SCRIPT.exists(), SCRIPT
    proc = subprocess.Popen(
        [str(SCRIPT), "--host", "127.0.0.1", "--port", "0", "--proto", "ws", "--app", "myapp:app"],
        cwd=app_folder,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if found := LISTENING.search(line):
                break
        else:
            pytest.fail(f"no listening line; exit {proc.wait()}")
        with connect(f"ws://127.0.0.1:{found.group(2)}/") as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "HELLO"
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize("command, prog", [([str(SCRIPT)], "reactor"), (PYTHON_M, "-m reactor")])
def test_help_names_the_program_and_shows_each_default_once(command, prog):
    done = run_reactor("--help", command=command)
    assert done.returncode == 0, done.stderr
    usage = done.stdout.splitlines()[0]
    assert usage.startswith("usage: ") and prog in usage and "__main__" not in usage, usage
    if prog == "-m reactor":
        assert re.match(r"usage: python[\d.]* -m reactor ", usage), usage
    options = re.split(r"\n  (?=-)", done.stdout)
    for text in options:
        assert text.count("default") <= 1, text
    assert not [t for t in options if "(default: None)" in t or "(default: False)" in t]


def test_serve_rejects_a_coroutine_on_start_at_once():
    from reactor.app import AppError, WebSocketApp
    from reactor.server import serve

    class Async(WebSocketApp):
        async def on_start(self, server):
            pass

    with pytest.raises(AppError, match="on_start is a coroutine function"):
        serve(Async(), port=0)


def test_a_worker_dying_after_start_up_is_still_restarted(server_factory):
    server = server_factory("--proto", "echo", "--workers", "2", workers=2)
    fds = fd_count(server.pid)  # the supervisor's: one start-up pipe per live worker
    victim = children(server.pid)[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(r"exited: killed by signal 9; restarting")
    assert wait_until(lambda: len(children(server.pid)) == 2 and victim not in children(server.pid))
    server.wait_for_log(LISTENING, count=3)
    assert server.proc.poll() is None
    assert fd_count(server.pid) == fds  # the dead worker's pipe was closed
    with server.connect() as sock:
        sock.sendall(b"ok")
        assert sock.recv(2) == b"ok"
