"""RFC 6455 §4.2 opening handshake, server side: pure validation, no I/O.

The glue parses the HTTP request (reactor.http) and hands the fields over:
``validate(method, http_version, headers, ...)`` returns an ``Accept``
carrying the exact 101 response bytes, or a ``Reject`` carrying the status,
a one-line reason and the headers the answer must carry. ``headers`` is a sequence of
``(name, value)`` with lowercased names and latin-1 str values; a repeated
header appears repeatedly and its values are read as one comma list. A
``Reject`` is plain data (status, reason, headers): the glue renders it with
the same HTTP error writer as every other HTTP error answer.

Answers: 400 for a malformed upgrade request, 426 (with
``Sec-WebSocket-Version: 13``) for a missing or other version, 403 when an
Origin allow-list is configured and the Origin is not in it. An application
hook may still refuse an accepted request: ``reject(401, "...")`` builds that
response, and ``amend(accept, extra_headers, subprotocol, offered)`` adds headers
(cookies...) to the 101 and may choose another offered subprotocol. The one
extension, permessage-deflate (ws/deflate.py), is negotiated when ``validate``
is given a ``Compression`` that is not off: the ``Accept`` then carries the
connection's codec; otherwise the offer is ignored and frames with RSV bits
set remain protocol errors.

``accept_usual(method, http_version, head, length, ...)`` is the common case
in one C call (``ws/csrc/upgrade.c``): it reads the fields from the request
head's bytes and returns the same ``Accept`` as ``validate``, or None for
anything else, which ``validate`` then decides (every rejection included).

Subprotocols: the SERVER's preference wins. The first entry of the
configured list that the client offered is chosen (so a server can prefer
``v2.chat`` over ``chat`` whatever order a client lists them in); nothing is
echoed when none match, and the client decides whether to go on (§4.2.2).
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from .. import rfc9110
from . import deflate, native

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3, §4.2.2
SUPPORTED_VERSION = "13"  # RFC 6455 §4.1 / §4.4
KEY_BYTES = 16  # §4.1: the key is a random 16-byte nonce, base64-encoded

_MAX_REASON = 200  # one short line: the reason is echoed into the answer's body
_OWS = rfc9110.OWS


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (§4.2.2 step 5.4)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


class Accept(NamedTuple):
    """The upgrade is valid: send ``response`` (the 101), then speak frames."""

    accept: str  # Sec-WebSocket-Accept value
    subprotocol: str | None
    response: bytes
    extension: deflate.PerMessageDeflate | None = None  # the negotiated permessage-deflate


class Reject(NamedTuple):
    """The upgrade is refused: answer ``status`` with ``reason`` and these
    ``headers`` (the HTTP error writer renders it), then close the connection."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def validate(
    method: str,
    http_version: tuple[int, int],
    headers: Sequence[tuple[str, str]],
    *,
    subprotocols: Sequence[str] = (),
    origins: Iterable[str | None] | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    compression: deflate.Compression | None = None,
) -> Accept | Reject:
    """Check an opening handshake (§4.2.1) and build the answer.

    ``origins``: None accepts any Origin; otherwise the allowed Origin values
    (compared case-insensitively), where a ``None`` entry admits requests
    without an Origin header (non-browser clients). ``compression``: weigh a
    permessage-deflate offer (RFC 7692 §7) in its mode.
    """
    fields = _collect(headers)
    problem = _check_request(method, http_version, fields)
    if problem is not None:
        return problem
    if origins is not None and not _origin_allowed(fields.get("origin"), origins):
        return reject(403, "origin not allowed")
    accept = accept_key(fields["sec-websocket-key"][0].strip(_OWS))
    offered = fields.get("sec-websocket-protocol")
    chosen = select_subprotocol(offered, subprotocols) if offered and subprotocols else None
    offers = fields.get("sec-websocket-extensions")
    agreed = compression.negotiate(offers) if offers and compression is not None else None
    if agreed is None:
        return Accept(accept, chosen, _switching_protocols(accept, chosen, extra_headers))
    answer, codec = agreed
    headers = (("Sec-WebSocket-Extensions", answer), *extra_headers)
    return Accept(accept, chosen, _switching_protocols(accept, chosen, headers), codec)


_accept_upgrade: Any = None  # the C routine while C runs (native.use); None: Python decides
native.switch.bind(globals(), "_accept_upgrade", "ws_accept_upgrade")
if native.BUILT:
    _RESPONSE = native.ffi.new("unsigned char[]", native.lib.WS_UPGRADE_RESPONSE_SIZE)
    _RESPONSE_BYTES = native.ffi.buffer(_RESPONSE)
    _ACCEPT_KEY = slice(native.lib.WS_UPGRADE_ACCEPT_AT, native.lib.WS_UPGRADE_ACCEPT_AT + 28)
    _WEIGH_PROTOCOLS = native.lib.WS_WEIGH_PROTOCOLS
    _WEIGH_EXTENSIONS = native.lib.WS_WEIGH_EXTENSIONS


def accept_usual(
    method: str,
    http_version: tuple[int, int],
    head: Any,
    length: int,
    *,
    subprotocols: Sequence[str] = (),
    origins: Iterable[str | None] | None = None,
    extensions: bool = False,
) -> Accept | None:
    """The usual upgrade checked and answered by one C call: what ``validate``
    returns for it, or None to let ``validate`` decide. ``head`` holds the
    request head the fields were parsed from, from its first byte to its blank
    line (``length`` bytes): bytes, or the C pointer of a receive buffer. It
    declines whenever an Origin list, an offered subprotocol or (``extensions``:
    compression is on) an offered extension needs weighing."""
    if _accept_upgrade is None or origins is not None:
        return None
    if method != "GET" or http_version != (1, 1):
        return None
    weigh = (_WEIGH_PROTOCOLS if subprotocols else 0) | (_WEIGH_EXTENSIONS if extensions else 0)
    size = _accept_upgrade(head, length, weigh, _RESPONSE, len(_RESPONSE))
    if size < 0:
        return None
    response = _RESPONSE_BYTES[:size]
    return Accept(response[_ACCEPT_KEY].decode("ascii"), None, response)


_WANTED = frozenset(
    (
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "origin",
    )
)


def _collect(headers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """The values of the headers the handshake reads, in arrival order."""
    fields: dict[str, list[str]] = {}
    for name, value in headers:
        if name in _WANTED:
            fields.setdefault(name, []).append(value)
    return fields


def _check_request(
    method: str, http_version: tuple[int, int], fields: dict[str, list[str]]
) -> Reject | None:
    if method != "GET":
        return reject(400, "WebSocket upgrade requires GET")
    if tuple(http_version) < (1, 1):
        return reject(400, "WebSocket upgrade requires HTTP/1.1 or later")
    hosts = fields.get("host", ())
    if len(hosts) != 1 or not hosts[0].strip(_OWS):
        return reject(400, "missing or repeated Host header")
    if not rfc9110.has_token(fields.get("upgrade", ()), "websocket"):
        return reject(400, "missing 'Upgrade: websocket'")
    if not rfc9110.has_token(fields.get("connection", ()), "upgrade"):
        return reject(400, "missing 'Connection: upgrade'")
    if not _valid_key(fields.get("sec-websocket-key", ())):
        return reject(400, "Sec-WebSocket-Key must be base64 of 16 bytes")
    versions = fields.get("sec-websocket-version", ())
    if len(versions) != 1 or versions[0].strip(_OWS) != SUPPORTED_VERSION:
        return reject(426, "unsupported WebSocket version", _UPGRADE_REQUIRED)
    return None


# RFC 9110 §15.5.22: a 426 names the protocol to switch to in Upgrade.
_UPGRADE_REQUIRED = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", SUPPORTED_VERSION)]


def _valid_key(values: Sequence[str]) -> bool:
    if len(values) != 1:
        return False
    key = values[0].strip(_OWS)
    if len(key) != 24:  # base64 of 16 bytes: 22 characters and "=="
        return False
    try:
        return len(binascii.a2b_base64(key, strict_mode=True)) == KEY_BYTES
    except (binascii.Error, ValueError):
        return False


def _origin_allowed(values: Sequence[str] | None, allowed: Iterable[str | None]) -> bool:
    allowed_set = {o.lower() if o is not None else None for o in allowed}
    if values is None:
        return None in allowed_set
    return len(values) == 1 and values[0].strip(_OWS).lower() in allowed_set


def select_subprotocol(offered_values: Iterable[str], supported: Sequence[str]) -> str | None:
    """The first of ``supported`` (server preference) that the client offered
    in its ``Sec-WebSocket-Protocol`` values; tokens compare case-sensitively."""
    offered = set(rfc9110.list_members(offered_values))
    for name in supported:
        if name in offered:
            return name
    return None


def _header_lines(headers: Iterable[tuple[str, str]]) -> str:
    return "".join(rfc9110.header_line(name, value) for name, value in headers)


def _switching_protocols(
    accept: str, subprotocol: str | None, extra_headers: Iterable[tuple[str, str]]
) -> bytes:
    protocol = "" if subprotocol is None else f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
    head = (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n{protocol}{_header_lines(extra_headers)}\r\n"
    )
    return head.encode("latin-1")


# Fields of the 101 that the handshake itself decides: an application adding one
# would contradict it (the subprotocol is chosen with amend's own argument).
_HANDSHAKE_FIELDS = frozenset(
    ("upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol",
     "sec-websocket-extensions", "content-length", "transfer-encoding")
)  # fmt: skip


def amend(
    accept: Accept,
    extra_headers: Iterable[tuple[str, str]] = (),
    subprotocol: str | None = None,
    offered: Iterable[str] = (),
) -> Accept:
    """``accept`` with ``extra_headers`` added to its 101 and, when
    ``subprotocol`` is given, that subprotocol instead of the configured
    choice. ``offered``: the request's Sec-WebSocket-Protocol values. Raises
    ValueError for a subprotocol the client did not offer (§4.2.2: the server
    picks one of the client's), or a header the handshake owns or that could
    not be sent."""
    headers = tuple((str(name), str(value)) for name, value in extra_headers)
    for name, _ in headers:
        if name.lower() in _HANDSHAKE_FIELDS:
            raise ValueError(f"{name} is set by the handshake itself")
    lines = _header_lines(headers)  # raises for a header that would inject others
    chosen = accept.subprotocol
    if subprotocol is not None:
        if subprotocol not in rfc9110.list_members(offered):
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
        chosen = subprotocol
    head = accept.response.decode("latin-1").split("\r\n")[:-2]
    protocol = f"Sec-WebSocket-Protocol: {chosen}"
    replaced = [protocol if _names_protocol(line) else line for line in head]
    if chosen is not None and protocol not in replaced:
        replaced.append(protocol)
    response = ("\r\n".join(replaced) + "\r\n" + lines + "\r\n").encode("latin-1")
    return accept._replace(subprotocol=chosen, response=response)


def _names_protocol(line: str) -> bool:
    return line.lower().startswith("sec-websocket-protocol:")


def reject(status: int, reason: str, extra_headers: Iterable[tuple[str, str]] = ()) -> Reject:
    """An HTTP error answer to an upgrade request: for this module's checks,
    and for an application hook refusing a valid one (e.g. 401, 403). Raises
    ValueError for a status that is no error or a header that could not be sent."""
    if not 400 <= status <= 599:
        raise ValueError("a rejection needs a 4xx or 5xx status")
    headers = tuple((str(name), str(value)) for name, value in extra_headers)
    _header_lines(headers)  # refuse a header that would inject others, now
    return Reject(status, " ".join(reason.split())[:_MAX_REASON], headers)
