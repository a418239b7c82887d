"""Fuzz target: the WebSocket opening-handshake validator (RFC 6455 §4.2).

Input: byte 0 picks the configuration, the rest is a request.
    bit 0  an Origin allow-list is configured (else any Origin is accepted)
    bit 1  the server's subprotocol list is SUBPROTOCOLS_B (else SUBPROTOCOLS_A)
    bit 2  the request goes through the HTTP parser, as the glue does; else its
           lines are split on ":" into (name, value) pairs directly, so values
           may hold anything (CR, NUL, obs-text) the parser would refuse
Invariants, against an oracle written here from §4.2.1 / §4.2.2:
- Accept exactly when every rule holds; otherwise 400, 426 (only the version
  is wrong, and the answer names version 13) or 403 (only the Origin is).
- The 101 carries the accept key computed here (SHA-1 + GUID, base64), the
  subprotocol chosen by server preference (or none), and nothing else.
- Every response is a well-formed HTTP/1.1 message: one status line, header
  lines without CR/LF/NUL inside (no injection), Content-Length = body size
  (a rejection as the glue sends it: rendered by the HTTP error writer).
- Through the parser, the C fast path (``accept_usual``, read from the head's
  bytes) either declines or returns exactly what ``validate`` returns.
"""

from __future__ import annotations

import base64
import hashlib
import re

from _harness import instrumented

with instrumented(__name__ == "__main__"):
    from reactor.http.request import HttpError, RequestParser
    from reactor.http.static import error_response
    from reactor.ws import handshake

NAME = "ws_handshake"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
SUBPROTOCOLS_A = ("chat", "superchat")
SUBPROTOCOLS_B = ("v2.chat", "chat", "Chat")
ORIGINS = ("http://example.com", None)  # None: requests without an Origin are allowed
KEY_RE = re.compile(r"[A-Za-z0-9+/]{22}==")  # §4.1: base64 of a 16-byte nonce
OWS = " \t"  # RFC 9110 §5.6.3: the only whitespace around a field value


def tokens(values: list[str]) -> list[str]:
    """Comma-list elements (RFC 9110 §5.6.1), OWS-trimmed."""
    return [t.strip(OWS) for v in values for t in v.split(",")]


def oracle(method: str, version: tuple[int, int], headers, origins_on: bool) -> tuple[int, str]:
    """(status, why): 101 or the status the first failing rule gets."""
    fields: dict[str, list[str]] = {}
    for name, value in headers:
        fields.setdefault(name, []).append(value)
    key = fields.get("sec-websocket-key", [])
    versions = fields.get("sec-websocket-version", [])
    hosts = fields.get("host", [])
    rules_400 = [
        (method == "GET", "method"),
        (version >= (1, 1), "http version"),
        (len(hosts) == 1 and hosts[0].strip(OWS) != "", "host"),
        ("websocket" in [t.lower() for t in tokens(fields.get("upgrade", []))], "upgrade"),
        ("upgrade" in [t.lower() for t in tokens(fields.get("connection", []))], "connection"),
        (len(key) == 1 and KEY_RE.fullmatch(key[0].strip(OWS)) is not None, "key"),
    ]
    for ok, why in rules_400:
        if not ok:
            return 400, why
    if len(versions) != 1 or versions[0].strip(OWS) != "13":
        return 426, "version"
    if origins_on:
        origin = fields.get("origin")
        allowed = origin is None or (
            len(origin) == 1 and origin[0].strip(OWS).lower() == ORIGINS[0]
        )
        if not allowed:
            return 403, "origin"
    return 101, "ok"


def split_response(response: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, header fields and body of a response; asserts the framing."""
    head, sep, body = response.partition(b"\r\n\r\n")
    assert sep, "response without the blank line"
    lines = head.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(": ")
        assert colon and name and re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), line
        assert not re.search(r"[\x00\r\n]", value), f"header injection: {line!r}"
        fields.append((name.lower(), value))
    return lines[0], fields, body


def check_accept(result, headers, subprotocols) -> None:
    key = [v for n, v in headers if n == "sec-websocket-key"][0].strip(OWS)
    expected_accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    assert result.accept == expected_accept, "wrong Sec-WebSocket-Accept"
    offered = set(tokens([v for n, v in headers if n == "sec-websocket-protocol"]))
    wanted = next((p for p in subprotocols if p in offered), None)
    assert result.subprotocol == wanted, (result.subprotocol, wanted)
    status, fields, body = split_response(result.response)
    assert status == "HTTP/1.1 101 Switching Protocols" and body == b""
    expected = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", expected_accept),
    ]
    if wanted is not None:
        expected.append(("sec-websocket-protocol", wanted))
    assert fields == expected, fields


def check_reject(result, expected_status: int) -> None:
    assert result.status == expected_status, (result.status, expected_status)
    assert "\n" not in result.reason and "\r" not in result.reason, "the reason is not one line"
    rendered = error_response(
        result.status, result.reason, keep_alive=False, extra_headers=result.headers
    )
    status_line, fields, body = split_response(rendered)
    assert status_line.startswith(f"HTTP/1.1 {result.status} "), status_line
    named = dict(fields)
    assert named["content-length"] == str(len(body)), "Content-Length is not the body size"
    if result.status == 426:  # RFC 9110 §15.5.22 and §7.8
        assert named.get("sec-websocket-version") == "13", "426 without the supported version"
        assert named.get("upgrade") == "websocket", "426 without Upgrade"
        assert named["connection"] == "upgrade, close"
    else:
        assert named["connection"] == "close"


def request_fields(data: bytes, through_parser: bool):
    """(method, version, headers, head size or None) or None when the HTTP parser refuses it."""
    if through_parser:
        try:
            request, head_end = RequestParser().parse(data)
        except HttpError:
            return None
        if request is None:
            return None
        return request.method, request.http_version, request.headers, head_end
    lines = data.decode("latin-1").split("\n")
    method, _, rest = lines[0].partition(" ")
    version = (1, 0) if rest.endswith("HTTP/1.0") else (1, 1)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip(OWS)))
    return method, version, headers, None


def check_fast_path(head: bytes, fields, subprotocols, origins_on: bool) -> None:
    """The C fast path reads the head's bytes: it declines, or answers exactly as
    validate() does from the parsed fields (with the subprotocol list and without)."""
    method, version, headers, _ = fields
    origins = ORIGINS if origins_on else None
    for protocols in (subprotocols, ()):
        fast = handshake.accept_usual(
            method, version, head, len(head), subprotocols=protocols, origins=origins
        )
        if fast is not None:
            full = handshake.validate(
                method, version, headers, subprotocols=protocols, origins=origins
            )
            assert fast == full, (fast, full)


def check(data: bytes) -> str:
    options = data[0] if data else 0
    origins_on, subprotocols = bool(options & 1), SUBPROTOCOLS_B if options & 2 else SUBPROTOCOLS_A
    fields = request_fields(data[1:], through_parser=bool(options & 4))
    if fields is None:
        return "refused by the HTTP parser"
    method, version, headers, head_end = fields
    result = handshake.validate(
        method,
        version,
        headers,
        subprotocols=subprotocols,
        origins=ORIGINS if origins_on else None,
    )
    if head_end is not None:
        check_fast_path(data[1 : 1 + head_end], fields, subprotocols, origins_on)
    status, why = oracle(method, version, headers, origins_on)
    if status == 101:
        assert isinstance(result, handshake.Accept), f"rejected a valid upgrade: {result}"
        check_accept(result, headers, subprotocols)
        return "101 accepted"
    assert isinstance(result, handshake.Reject), f"accepted an invalid upgrade ({why})"
    check_reject(result, status)
    return f"{status} ({why})"


if __name__ == "__main__":
    from _harness import fuzz

    fuzz(NAME, check)
