"""Protocol handlers: the glue between the reactor and the sans-I/O protocols.

Each handler module offers ``add_arguments(parser)`` for its own options and
``make_handler(options, reactor) -> Handler``. The CLI picks one by --proto.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from types import ModuleType

PROTOCOLS = {
    "echo": "reactor.handlers.echo",
    "http": "reactor.handlers.static",
    "ws": "reactor.handlers.ws",
    "auto": "reactor.handlers.auto",
}


def warn_if_head_scanner_missing(log: logging.Logger) -> None:
    """At start: the C head scanner (reactor.http._speedups) was not built, so
    every request head takes the pure-Python path (correct, ~2x slower)."""
    from ..http import request

    if request.HEAD_SCANNER != "cffi":
        log.warning(
            "reactor.http._speedups is not built: request heads are parsed in pure Python "
            "(~2x slower); reinstall with a C compiler (pip install -e .)"
        )


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
