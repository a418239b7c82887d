"""socketify (uWebSockets through cffi) echo server with permessage-deflate: its shared
compressor and shared decompressor (no context kept per connection, the uWebSockets way of
keeping memory low).
"""

from __future__ import annotations

import signal
import sys

from peer_cli import MAX_MESSAGE, announce, free_port, parse_args
from socketify import App, AppListenOptions, CompressOptions
from socketify_echo import IDLE_TIMEOUT, MAX_BACKPRESSURE, echo


def main() -> int:
    args = parse_args(__doc__.split("\n")[0], loops=("native",))
    port = args.port or free_port(args.host)
    app = App()
    app.ws(
        "/*",
        {
            "compression": CompressOptions.SHARED_COMPRESSOR | CompressOptions.SHARED_DECOMPRESSOR,
            "max_payload_length": MAX_MESSAGE,
            "idle_timeout": IDLE_TIMEOUT,
            "max_backpressure": MAX_BACKPRESSURE,
            "message": echo,
        },
    )
    app.any("/*", lambda res, req: res.write_status(404).end("not found"))
    signal.signal(signal.SIGTERM, lambda signum, frame: app.close())
    app.listen(
        AppListenOptions(port=port, host=args.host), lambda config: announce(args.host, port)
    )
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
