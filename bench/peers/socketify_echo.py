"""socketify (uWebSockets through cffi) echo server, compression off.

Each message is sent back with its opcode; uWebSockets answers pings and the close handshake.
uWebSockets does not tell the port it bound for port 0, so a free port is picked first.
``serve`` is shared by the other socketify peers (compression, fan-out).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from peer_cli import MAX_MESSAGE, announce, free_port, parse_args
from socketify import App, AppListenOptions, CompressOptions, OpCode

IDLE_TIMEOUT = 960  # s, uWebSockets' largest; the idle-memory run holds connections quietly
MAX_BACKPRESSURE = 4 * 1024 * 1024  # bytes, our server's default --max-send-buffer


def echo(ws, message, opcode: OpCode) -> None:
    ws.send(message, opcode)


def serve(description: str, compression: Any, **behaviour: Any) -> int:
    """Run a socketify WebSocket server on every path with our server's limits.
    ``behaviour`` holds the handlers (``message``, ``open``, ``upgrade``...) and,
    as ``app``, an App made beforehand when a handler needs it."""
    args = parse_args(description, loops=("native",))
    port = args.port or free_port(args.host)
    app = behaviour.pop("app", None) or App()
    settings = {
        "compression": compression,
        "max_payload_length": MAX_MESSAGE,
        "idle_timeout": IDLE_TIMEOUT,
        "max_backpressure": MAX_BACKPRESSURE,
    }
    app.ws("/*", {**settings, **behaviour})
    app.any("/*", lambda res, req: res.write_status(404).end("not found"))
    signal.signal(signal.SIGTERM, lambda signum, frame: app.close())
    app.listen(
        AppListenOptions(port=port, host=args.host), lambda config: announce(args.host, port)
    )
    app.run()
    return 0


def main() -> int:
    return serve(__doc__.split("\n")[0], CompressOptions.DISABLED, message=echo)


if __name__ == "__main__":
    sys.exit(main())
