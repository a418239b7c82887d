"""Pages and WebSockets on one port (``--proto auto``).

The HTTP static handler serves every request; one that asks for
``Upgrade: websocket`` is handed, with the buffer and the offset just past its
head, to the WebSocket handler, which validates the handshake, answers 101
and takes the connection over. Frames that arrived in the same read as the
handshake are processed, not lost.
"""

from __future__ import annotations

import argparse

from ..handler import Handler
from ..loop import Reactor
from . import static, ws


def make_handler(options: argparse.Namespace, reactor: Reactor) -> Handler:
    websocket = ws.make_handler(options, reactor)
    return static.make_handler(options, reactor, upgrade=websocket.accept_upgrade)
