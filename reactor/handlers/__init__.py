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

    if request.switch.active != "c":
        log.warning(
            "reactor.http._speedups is not built: request heads are parsed in pure Python "
            "(~2x slower); reinstall with a C compiler (pip install -e .)"
        )


def describe_implementations() -> str:
    """Which implementation each C-accelerated part runs: "c", or "python" (the
    fallback of a missing build, or a switch made with its package's use());
    static-file confinement: "openat2" (the kernel's), or "walk" (see http/static.py)."""
    from .. import loop
    from ..http import request, static
    from ..ws import native

    return (
        f"websocket={native.active} http-head={request.switch.active} "
        f"socket-io={loop.switch.active} "
        f"static-confine={static.CONFINE}"
    )


def load(proto: str) -> ModuleType:
    """The handler module of ``proto``; says at start what runs in C."""
    module = importlib.import_module(PROTOCOLS[proto])
    logging.getLogger("reactor").info("implementations: %s", describe_implementations())
    return module


def add_all_arguments(parser: argparse.ArgumentParser) -> None:
    """Let every available handler declare its options (each once)."""
    for proto in PROTOCOLS:
        module = load(proto)
        add = getattr(module, "add_arguments", None)
        if add is not None:
            add(parser)
