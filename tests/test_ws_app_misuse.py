"""An application's mistakes get a clear answer: send()/broadcast() of what is
neither text nor bytes raise a TypeError naming the accepted types before
anything is queued; on_upgrade returning an undocumented value is one log
line naming the accepted forms, and a 500."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

APP = """
import json

from reactor.app import WebSocketApp


class Misuse(WebSocketApp):
    def on_upgrade(self, request):
        if request.target == "/true":
            return True
        if request.target == "/status-only":
            return (403,)
        if request.target == "/not-an-error":
            return 200, "fine"
        return None

    def on_message(self, conn, data):
        if data not in ("send", "broadcast"):
            conn.send(data)
            return
        target = conn.send if data == "send" else self.server.broadcast
        before = conn.buffered_amount
        for wrong in ({"a": 1}, 42, None, ["x"]):
            try:
                target(wrong)
            except TypeError as exc:
                conn.send(str(exc))
            else:
                conn.send("no TypeError")
        conn.send(json.dumps({"queued before": before}))
"""


@pytest.fixture
def server(server_factory, tmp_path):
    (tmp_path / "misuse.py").write_text(APP)
    return server_factory("--proto", "ws", "--app", "misuse:Misuse", cwd=tmp_path)


@pytest.mark.parametrize("call", ["send", "broadcast"])
def test_send_and_broadcast_of_a_non_message_raise_before_queuing(server, call):
    with connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send(call)
        got = [ws.recv(timeout=10) for _ in range(5)]
    expected = [
        f"{call}() takes str (text) or bytes (binary), not {name}; use json.dumps() for JSON"
        for name in ("dict", "int", "NoneType", "list")
    ]
    assert got == [*expected, '{"queued before": 0}']  # nothing else reached the wire


@pytest.mark.parametrize("path", ["/true", "/status-only", "/not-an-error"])
def test_on_upgrade_returning_an_undocumented_value_is_a_500_and_one_clear_line(server, path):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=10)
    assert refused.value.response.status_code == 500
    line = server.wait_for_log(r"on_upgrade returned")[0]
    assert "it must return None or reactor.app.Accept(headers=..., subprotocol=...)" in line
    assert "or (status, reason) or (status, reason, headers)" in line
    assert "Traceback" not in server.log_text()
    with connect(f"ws://127.0.0.1:{server.port}/") as ws:  # the server goes on
        ws.send(b"bytes")
        assert ws.recv(timeout=10) == b"bytes"
