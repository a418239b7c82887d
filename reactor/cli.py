"""Command line: ``reactor --port 9501 --proto ws`` (or ``python -m reactor``).

The composition root: parses options, builds the handler for --proto, and
runs one reactor or a supervisor with --workers reactor processes.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
from pathlib import Path

from . import handlers
from .app import AppError, check_app
from .loop import DEFAULT_MAX_SEND_BUFFER, MAX_BUSY_POLL, somaxconn
from .workers import DEFAULT_BUSY_POLL_USEC, serve

DEFAULT_ROOT = Path(__file__).resolve().parent / "html"
DEFAULT_PORT = 9501

log = logging.getLogger("reactor")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" only where the help does not already say it,
    and not for flags and options without a default (False, None, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == []:
            return text
        return super()._get_help_string(action)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """``prog`` names the program in usage lines; None: argv[0]'s name (the
    ``reactor`` console script), ``python -m reactor`` passes its own."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An epoll reactor serving WebSocket (RFC 6455), static files over HTTP, "
        "or raw TCP echo.",
        formatter_class=HelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="0.0.0.0", help="address to listen on (IPv4 or IPv6 literal)")
    add("--port", type=int, default=DEFAULT_PORT, help="TCP port to listen on (0: any free port)")
    add(
        "--proto",
        choices=sorted(handlers.PROTOCOLS),
        default="auto",
        help="echo: raw TCP echo; http: static files; ws: WebSocket only; "
        "auto: static files and WebSocket upgrades on one port",
    )
    add("--root", type=Path, default=DEFAULT_ROOT, help="directory served by http and auto")
    add(
        "--backlog",
        type=int,
        default=None,
        help=f"listen() backlog (default: the kernel's somaxconn, {somaxconn()} here)",
    )
    add(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="close a connection silent for this many seconds (0: never)",
    )
    add(
        "--max-connections",
        type=int,
        default=None,
        help="connections per worker; more are accepted and closed at once "
        "(default: the open-file limit minus a reserve)",
    )
    add(
        "--max-send-buffer",
        type=int,
        default=DEFAULT_MAX_SEND_BUFFER,
        help="bytes buffered per connection before the server stops reading from it",
    )
    add(
        "--workers",
        type=int,
        default=1,
        help="reactor processes sharing the port through SO_REUSEPORT "
        "(one process holds at most its open-file limit of connections)",
    )
    add(
        "--port-per-worker",
        action="store_true",
        help="worker i listens on --port + i instead of sharing one port",
    )
    add(
        "--busy-poll",
        type=busy_poll_usec,
        default="auto",
        metavar="USEC",
        help="after a batch of events keep polling without sleeping for up to this many "
        "microseconds, backing off while that finds nothing (0: off): lower latency for "
        f"request/response traffic, paid in CPU (at most {int(MAX_BUSY_POLL * 1e6)}; auto: "
        f"{DEFAULT_BUSY_POLL_USEC} when --workers is at most the CPUs this process may run "
        "on, else 0)",
    )
    add(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="seconds a graceful stop (SIGTERM/SIGINT) waits for goodbyes before closing",
    )
    add(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging threshold (per-connection events are logged at debug)",
    )
    handlers.add_all_arguments(parser)
    return parser


def busy_poll_usec(text: str) -> int | None:
    if text == "auto":
        return None  # workers.serve() picks it once --workers is known
    value = int(text)
    if not 0 <= value <= MAX_BUSY_POLL * 1e6:
        raise argparse.ArgumentTypeError(f"must be 0..{int(MAX_BUSY_POLL * 1e6)} microseconds")
    return value


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit to %s: %s", hard, exc)
    return soft, hard


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None, prog: str | None = None, **defaults: object) -> int:
    """Run the server; returns the exit status (0 stopped, 1 start-up failed;
    usage errors exit with 2 from argparse before anything starts). ``defaults``
    replace the parser's (e.g. ``app=`` an application object, for
    ``reactor.server.main``)."""
    parser = build_parser(prog)
    parser.set_defaults(**defaults)
    options = parser.parse_args(argv)
    configure_logging(options.log_level)
    module = handlers.load(options.proto)
    if options.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        check_app(getattr(options, "app", None))
    except AppError as exc:
        parser.error(f"--app: {exc}")
    options.fd_limit = raise_fd_limit()
    return serve(options, module)
