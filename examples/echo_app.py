"""The smallest application: echo every message back, count them per connection.

From the repository root:

    python -m reactor --proto ws --app examples.echo_app:app
    python examples/echo_app.py --port 9501

Then, e.g.: python -m websockets ws://127.0.0.1:9501/
"""

from __future__ import annotations

import logging

from reactor.app import WebSocketApp
from reactor.server import main

log = logging.getLogger("examples.echo")


class EchoApp(WebSocketApp):
    def on_open(self, conn, request):
        conn.data = 0  # messages echoed on this connection

    def on_message(self, conn, data):
        conn.data += 1
        conn.send(data)  # str comes back as text, bytes as binary

    def on_close(self, conn, code, reason):
        log.debug("closed with %d after %d messages", code, conn.data)


app = EchoApp()

if __name__ == "__main__":
    raise SystemExit(main(app))  # every option of python -m reactor
