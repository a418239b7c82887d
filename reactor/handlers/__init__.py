"""Protocol handlers: the glue between the reactor and the sans-I/O protocols.

Each handler module offers ``add_arguments(parser)`` for its own options and
``make_handler(options, reactor) -> Handler``. The CLI picks one by --proto.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

PROTOCOLS = {
    "echo": "reactor.handlers.echo",
    "http": "reactor.handlers.static",
    "ws": "reactor.handlers.ws",
    "auto": "reactor.handlers.auto",
}


class NotBuiltError(RuntimeError):
    """A protocol named on the command line whose handler is not available."""


def load(proto: str) -> ModuleType:
    try:
        return importlib.import_module(PROTOCOLS[proto])
    except ModuleNotFoundError as exc:
        if exc.name != PROTOCOLS[proto]:
            raise
        raise NotBuiltError(f"--proto {proto}: this handler is not built yet") from None


def add_all_arguments(parser: argparse.ArgumentParser) -> None:
    """Let every available handler declare its options (each once)."""
    for proto in PROTOCOLS:
        try:
            module = load(proto)
        except NotBuiltError:
            continue
        add = getattr(module, "add_arguments", None)
        if add is not None:
            add(parser)
