"""socketify (uWebSockets through cffi) fan-out peer for bench/fanout.py, compression off.

``/sub`` connections join the topic "bench" (``ws.subscribe``); every message from ``/pub``
is published to it as it came (``app.publish``), as bench/fanout_app.py does on our server.
uWebSockets does not tell the port it bound for port 0, so a free port is picked first.
"""

from __future__ import annotations

import signal
import sys

from peer_cli import MAX_MESSAGE, announce, free_port, parse_args
from socketify import App, AppListenOptions, CompressOptions, OpCode

TOPIC = "bench"
IDLE_TIMEOUT = 960  # s, uWebSockets' largest: subscribers are silent
MAX_BACKPRESSURE = 4 * 1024 * 1024  # bytes, our server's default --max-send-buffer


def main() -> int:
    args = parse_args(__doc__.split("\n")[0], loops=("native",))
    port = args.port or free_port(args.host)
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

    app.ws(
        "/*",
        {
            "compression": CompressOptions.DISABLED,
            "max_payload_length": MAX_MESSAGE,
            "idle_timeout": IDLE_TIMEOUT,
            "max_backpressure": MAX_BACKPRESSURE,
            "upgrade": upgrade,
            "open": opened,
            "message": message,
        },
    )
    app.any("/*", lambda res, req: res.write_status(404).end("not found"))

    def stop(signum, frame) -> None:
        app.close()

    signal.signal(signal.SIGTERM, stop)
    app.listen(
        AppListenOptions(port=port, host=args.host), lambda config: announce(args.host, port)
    )
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
