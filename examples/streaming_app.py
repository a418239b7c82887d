"""Streaming to clients as fast as each one reads, with bounded memory:
``conn.writable`` says when to pause, ``on_drain`` when to resume.

From the repository root:

    python -m reactor --proto ws --app examples.streaming_app:app
    python examples/streaming_app.py --port 9501

Send ``stream N`` to receive N bytes in 64 KiB binary messages, then a text
message ``done``. A slow reader makes the producer wait; the server never
buffers more than about --max-send-buffer / 2 for it.
"""

from __future__ import annotations

from reactor.app import WebSocketApp
from reactor.server import main

CHUNK = 64 * 1024
MAX_STREAM = 1 << 34  # bytes per request: 16 GiB


class Streamer(WebSocketApp):
    def on_message(self, conn, data):
        words = data.split() if isinstance(data, str) else []
        if len(words) != 2 or words[0] != "stream" or not words[1].isdigit():
            conn.send("usage: stream N")
            return
        conn.data = min(int(words[1]), MAX_STREAM)  # bytes still to send
        self.produce(conn)

    def on_drain(self, conn):
        self.produce(conn)  # the buffer went down to server.low_water

    def produce(self, conn):
        chunk = bytes(CHUNK)
        while conn.data and conn.writable:  # False above server.high_water
            size = min(conn.data, CHUNK)
            conn.send(chunk[:size] if size < CHUNK else chunk)
            conn.data -= size
        if conn.data == 0:
            conn.data = None
            conn.send("done")


app = Streamer

if __name__ == "__main__":
    raise SystemExit(main(app))  # every option of python -m reactor
