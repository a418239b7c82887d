"""socketify (uWebSockets through cffi) fan-out peer for bench/fanout.py, compression off.

``/sub`` connections join the topic "bench" (``ws.subscribe``); every message from ``/pub``
is published to it as it came (``app.publish``), as bench/fanout_app.py does on our server.
uWebSockets does not tell the port it bound for port 0, so a free port is picked first.
"""

from __future__ import annotations

import sys

from socketify import App, CompressOptions, OpCode
from socketify_echo import serve

TOPIC = "bench"


def main() -> int:
    app = App()

    def upgrade(res, req, socket_context) -> None:
        key = req.get_header("sec-websocket-key")
        protocol = req.get_header("sec-websocket-protocol")
        extensions = req.get_header("sec-websocket-extensions")
        res.upgrade(key, protocol, extensions, socket_context, {"path": req.get_url()})

    def opened(ws) -> None:
        if ws.get_user_data()["path"] == "/sub":
            ws.subscribe(TOPIC)

    def message(ws, data, opcode: OpCode) -> None:
        app.publish(TOPIC, data, opcode)

    return serve(
        __doc__.split("\n")[0],
        CompressOptions.DISABLED,
        app=app,
        upgrade=upgrade,
        open=opened,
        message=message,
    )


if __name__ == "__main__":
    sys.exit(main())
