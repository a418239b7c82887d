"""socketify (uWebSockets through cffi) echo server, compression off.

Each message is sent back with its opcode; uWebSockets answers pings and the close handshake.
uWebSockets does not tell the port it bound for port 0, so a free port is picked first.
"""

from __future__ import annotations

import signal
import sys

from peer_cli import MAX_MESSAGE, announce, free_port, parse_args
from socketify import App, AppListenOptions, CompressOptions, OpCode

IDLE_TIMEOUT = 960  # s, uWebSockets' largest; the idle-memory run holds connections quietly
MAX_BACKPRESSURE = 4 * 1024 * 1024  # bytes, our server's default --max-send-buffer


def echo(ws, message, opcode: OpCode) -> None:
    ws.send(message, opcode)


def main() -> int:
    args = parse_args(__doc__.split("\n")[0], loops=("native",))
    port = args.port or free_port(args.host)
    app = App()
    app.ws(
        "/*",
        {
            "compression": CompressOptions.DISABLED,
            "max_payload_length": MAX_MESSAGE,
            "idle_timeout": IDLE_TIMEOUT,
            "max_backpressure": MAX_BACKPRESSURE,
            "message": echo,
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
