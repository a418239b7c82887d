"""The examples of docs/threads-and-asyncio.md, run as a user would: a thread
pool app, an asyncio app (with aiohttp's client against the server's own HTTP
page) and a streaming app paced by on_drain."""

from __future__ import annotations

import threading

import pytest
from test_threads import read_stream
from test_ws_app import Embedded
from test_ws_server import Raw, client
from testkit import REPO


def test_thread_pool_example_answers_from_blocking_calls(server_factory):
    server = server_factory(
        "--proto", "ws", "--app", "examples.thread_pool_app:app", "--threads", "2"
    )
    with client(server.port) as one, client(server.port) as two:
        writers = [
            threading.Thread(target=lambda ws=ws: [ws.send("add red blue red") for _ in range(10)])
            for ws in (one, two)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        assert [one.recv(timeout=10) for _ in range(10)] == ["added 3"] * 10
        assert [two.recv(timeout=10) for _ in range(10)] == ["added 3"] * 10
        one.send("top")
        assert one.recv(timeout=10) == "red=40 blue=20"
        two.send(b"\x00")
        assert two.recv(timeout=10) == "text only"


def test_asyncio_example_sleeps_and_fetches_its_own_page_with_aiohttp(server_factory):
    pytest.importorskip("aiohttp")
    server = server_factory("--proto", "auto", "--app", "examples.asyncio_app:app")
    index = (REPO / "reactor" / "html" / "index.html").stat().st_size
    with client(server.port) as slow, client(server.port) as fast:
        slow.send("sleep 0.5")
        fast.send("fetch /index.html")  # not held up by the other connection's sleep
        assert fast.recv(timeout=15) == f"200 {index} bytes"
        fast.send("echo")
        assert fast.recv(timeout=10) == "echo"
        assert slow.recv(timeout=10) == "slept 0.5"
    server.wait_for_log(r"coroutine callbacks run on (uvloop|asyncio)")


def test_streaming_example_paces_itself_with_on_drain(server_factory):
    limit = 1 << 20
    server = server_factory(
        "--proto",
        "ws",
        "--app",
        "examples.streaming_app:app",
        "--max-send-buffer",
        str(limit),
    )
    raw = Raw(server.port, rcvbuf=65536)
    raw.handshake()
    text = b"stream 20000000"
    raw.sock.sendall(bytes([0x81, 0x80 | len(text)]) + bytes(4) + text)  # zero mask key
    got, done = read_stream(raw.sock, b"done", pause_every=32, pause=0.01)
    raw.close()
    assert (got, done) == (20_000_000, b"done")
    assert "closing with 1008" not in server.log_text()


@pytest.mark.parametrize(
    ("script", "message", "answer"),
    [
        ("thread_pool_app.py", "top", "(empty)"),
        ("asyncio_app.py", "sleep 0", "slept 0"),
        ("streaming_app.py", "stream 10", b"\x00" * 10),
    ],
)
def test_concurrency_examples_run_as_scripts(tmp_path, script, message, answer):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['{script}', '--port', '0']\n"
        f"runpy.run_path({str(REPO / 'examples' / script)!r}, run_name='__main__')\n"
    )
    embedded = Embedded(code, cwd=tmp_path)
    try:
        with client(embedded.port) as ws:
            ws.send(message)
            assert ws.recv(timeout=10) == answer
    finally:
        assert embedded.stop() == 0
