"""An application's HTTP answer rendered to bytes (sans-I/O).

``render(status, headers, body, content_type, keep_alive=..., head=...)``:
the status line, Date, Content-Type, Content-Length and Connection, then
the application's headers, then the body (none for HEAD, 204 and 304,
RFC 9110 §9.3.2, §15.3.5, §15.4.5). The framing fields are the server's:
an application header named Content-Length, Transfer-Encoding or Connection
raises ValueError, as does one that would inject a line (rfc9110.header_line).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from http import HTTPStatus

from .. import rfc9110
from .static import date_line

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # RFC 9110 §10.1.1, §15.2.1
_SERVER_FIELDS = frozenset(("content-length", "transfer-encoding", "connection"))
_NO_CONTENT = (204, 304)  # never a body nor, for 204, a Content-Length (RFC 9110 §8.6)


def render(
    status: int,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    content_type: str,
    *,
    keep_alive: bool,
    head: bool = False,
    now: float | None = None,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_phrase(status)}\r\n",
        date_line(time.time() if now is None else now).decode("ascii"),
    ]
    if status not in _NO_CONTENT:
        lines.append(rfc9110.header_line("Content-Type", content_type))
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n")
    for name, value in headers:
        if name.lower() in _SERVER_FIELDS:
            raise ValueError(f"{name} is set by the server")
        lines.append(rfc9110.header_line(name, value))
    lines.append("\r\n")
    response = "".join(lines).encode("latin-1")
    if head or status in _NO_CONTENT:
        return response
    return response + body


def _phrase(status: int) -> str:
    phrase = _PHRASES.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:  # a status the stdlib does not name (the SP stays, RFC 9112 §4)
            phrase = ""
    return phrase


_PHRASES = {status.value: status.phrase for status in HTTPStatus}  # enum lookups cost ~0.6 µs
