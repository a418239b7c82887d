"""Pages and WebSockets on one port (``--proto auto``).

The HTTP static handler serves every request (an application's
``on_request`` first, when it has one: reactor/handlers/endpoints.py); one that asks for
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
    endpoints = static.make_endpoints(
        options, reactor, websocket.app, async_callbacks=websocket.shared_async_callbacks
    )  # the same app instances answer HTTP requests and WebSocket connections
    return static.make_handler(
        options, reactor, upgrade=websocket.accept_upgrade, endpoints=endpoints
    )
