"""The access log: one line per answered request in common log format, on
the ``reactor.access`` logger (INFO), written by the HTTP handler and, with
``--proto ws``, by the WebSocket handshake."""

from __future__ import annotations

import logging
import time
from typing import Any

access_log = logging.getLogger("reactor.access")


class AccessLog:
    """Formats and writes lines; the timestamp text is rebuilt once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    @staticmethod
    def enabled(wanted: bool) -> bool:
        return wanted and access_log.isEnabledFor(logging.INFO)

    def write(self, host: str | None, line: str, status: int, size: int = -1) -> None:
        size_text = str(size) if size > 0 else "-"  # CLF: "-" when no body bytes
        access_log.info(
            '%s - - [%s] "%s" %d %s', host or "-", self.stamp(), line, status, size_text
        )

    def stamp(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        return self._stamp


def request_line(request: Any) -> str:
    major, minor = request.http_version
    target = request.target.replace('"', "%22")  # keep the quoted CLF field parseable
    return f"{request.method} {target} HTTP/{major}.{minor}"
