"""The classic C1000K server: echo every byte back on the same connection.

Stateless: an idle echo connection costs only its event slot.
"""

from __future__ import annotations

import argparse

from ..handler import Handler
from ..loop import Connection, Reactor


class EchoHandler(Handler):
    def on_data(self, conn: Connection, data: memoryview) -> None:
        conn.write(data)  # backpressure: the reactor pauses reads past --max-send-buffer

    def on_eof(self, conn: Connection) -> None:
        conn.close_after_flush()  # the peer is done sending: finish echoing, then close


def make_handler(options: argparse.Namespace, reactor: Reactor) -> Handler:
    return EchoHandler()
