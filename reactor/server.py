"""Embedding: run the server from your own script in a few lines.

    from reactor.app import WebSocketApp
    from reactor.server import serve

    class Shout(WebSocketApp):
        def on_message(self, conn, data):
            conn.send(data.upper() if isinstance(data, str) else data)

    serve(Shout(), port=9501)           # blocks; SIGTERM/SIGINT stop it gracefully

Every command-line option is a keyword argument (``--ping-interval 5`` is
``ping_interval=5``) with the command line's default, so the two never drift
apart: the options are built by the CLI's own parser. ``app`` is what
``--app`` accepts (an instance, a class, a factory, or a "module:attr" string).

A script that should take the command line itself ends with
``raise SystemExit(main(app))``: ``python myapp.py --port 9000 --workers 2``
then accepts every option of ``python -m reactor``.

This module is a composition root like reactor/cli.py (tests/test_layout.py
lists it among the modules that may import reactor.handlers).
"""

from __future__ import annotations

import logging
from typing import Any

from . import cli, handlers
from .app import check_app
from .workers import serve as run_reactors


def serve(
    app: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int = cli.DEFAULT_PORT,
    proto: str = "ws",
    workers: int = 1,
    **options: Any,
) -> int:
    """Run until stopped (SIGTERM/SIGINT: graceful); returns the exit status.
    With ``workers`` > 1 the application object is forked into every worker."""
    namespace = cli.build_parser().parse_args([])  # the command line's defaults
    chosen = {"host": host, "port": port, "proto": proto, "workers": workers, **options}
    for name, value in chosen.items():
        if not hasattr(namespace, name):
            raise TypeError(f"serve() got an unknown option {name!r}")
        setattr(namespace, name, value)
    if proto not in handlers.PROTOCOLS:
        raise ValueError(f"proto must be one of {sorted(handlers.PROTOCOLS)}")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if not isinstance(app, str):  # a "module:attr" string is checked once imported
        check_app(app)
    namespace.app = app
    if not logging.getLogger().handlers:  # leave an embedding program's logging alone
        cli.configure_logging(namespace.log_level)
    module = handlers.load(proto)
    namespace.fd_limit = cli.raise_fd_limit()
    return run_reactors(namespace, module)


def main(app: Any, argv: list[str] | None = None, **defaults: Any) -> int:
    """``python myapp.py [options]``: every option of ``python -m reactor``, for
    ``app``; ``defaults`` change the command line's (e.g. ``proto="auto"``).
    Listens on 127.0.0.1 and serves WebSocket unless told otherwise."""
    defaults = {"host": "127.0.0.1", "proto": "ws", **defaults}
    return cli.main(argv, prog=None, app=app, **defaults)
