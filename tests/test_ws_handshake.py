"""RFC 6455 §4.2 opening handshake validation (ws/handshake.py)."""

import base64
import html
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor.cli import build_parser
from reactor.handlers.ws import make_handler
from reactor.http.request import HttpError, RequestParser
from reactor.http.static import error_response
from reactor.loop import Reactor
from reactor.ws import handshake as hs

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

GOOD = [
    ("host", "server.example.com"),
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", RFC_KEY),
    ("origin", "http://example.com"),
    ("sec-websocket-protocol", "chat, superchat"),
    ("sec-websocket-version", "13"),
]


def replace(name, *values, headers=GOOD):
    """GOOD with header ``name`` replaced by ``values`` (none: removed)."""
    kept = [(n, v) for n, v in headers if n != name]
    return kept + [(name, v) for v in values]


def validate(headers=GOOD, method="GET", version=(1, 1), **kwargs):
    return hs.validate(method, version, headers, **kwargs)


def parse_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    return status_line, headers, body


def render(rejection):
    """What the glue sends: the one HTTP error writer renders the rejection."""
    return error_response(
        rejection.status, rejection.reason, keep_alive=False, extra_headers=rejection.headers
    )


def assert_rejected(result, status, reason_part):
    assert isinstance(result, hs.Reject)
    assert result.status == status
    assert reason_part in result.reason
    status_line, headers, body = parse_response(render(result))
    assert status_line.startswith(f"HTTP/1.1 {status} ")
    assert ("Connection", "upgrade, close" if status == 426 else "close") in headers
    assert ("Content-Length", str(len(body))) in headers
    assert html.escape(result.reason).encode() in body
    assert "\n" not in result.reason
    return headers


def test_rfc_accept_key():
    assert hs.accept_key(RFC_KEY) == RFC_ACCEPT


def test_rfc_example_is_accepted_with_the_exact_101():
    result = validate(subprotocols=["chat"])
    assert isinstance(result, hs.Accept)
    assert result.accept == RFC_ACCEPT and result.subprotocol == "chat"
    assert result.response == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"\r\n"
    )


def test_no_subprotocol_configured_echoes_none():
    result = validate()
    assert result.subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in result.response


def test_extensions_are_never_negotiated():
    headers = GOOD + [("sec-websocket-extensions", "permessage-deflate; client_max_window_bits")]
    result = validate(headers)
    assert isinstance(result, hs.Accept)
    assert b"Extensions" not in result.response


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (["chat, superchat"], ["superchat", "chat"], "superchat"),  # server preference
        (["chat, superchat"], ["chat", "superchat"], "chat"),
        (["chat", "superchat"], ["superchat"], "superchat"),  # repeated header
        (["chat,superchat"], ["superchat"], "superchat"),
        (["chat"], ["Chat"], None),  # case-sensitive tokens
        (["chat"], ["other"], None),
        ([], ["chat"], None),
    ],
)
def test_subprotocol_selection(offered, supported, chosen):
    headers = replace("sec-websocket-protocol", *offered)
    result = validate(headers, subprotocols=supported)
    assert result.subprotocol == chosen
    assert (b"Sec-WebSocket-Protocol" in result.response) == (chosen is not None)


@pytest.mark.parametrize(
    "headers",
    [
        replace("upgrade", "WebSocket"),
        replace("upgrade", "WEBSOCKET"),
        replace("upgrade", "foo, websocket"),
        replace("upgrade", "h2c", "websocket"),
        replace("connection", "keep-alive, Upgrade"),
        replace("connection", "keep-alive", "upgrade"),
        replace("connection", "UPGRADE"),
        replace("sec-websocket-key", "  " + RFC_KEY + " "),
        replace("sec-websocket-version", " 13 "),
    ],
)
def test_accepted_variants(headers):
    assert isinstance(validate(headers), hs.Accept)


def test_http_2_0_and_later_versions_pass_the_version_check():
    assert isinstance(validate(version=(2, 0)), hs.Accept)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"method": "POST"}, "GET"),
        ({"method": "get"}, "GET"),  # methods are case-sensitive
        ({"version": (1, 0)}, "HTTP/1.1"),
        ({"headers": replace("host")}, "Host"),
        ({"headers": replace("host", "a", "b")}, "Host"),
        ({"headers": replace("host", " ")}, "Host"),
        ({"headers": replace("upgrade")}, "Upgrade"),
        ({"headers": replace("upgrade", "websocketx")}, "Upgrade"),
        ({"headers": replace("upgrade", "web socket")}, "Upgrade"),
        ({"headers": replace("connection")}, "Connection"),
        ({"headers": replace("connection", "keep-alive")}, "Connection"),
        ({"headers": replace("connection", "upgraded")}, "Connection"),
        ({"headers": replace("sec-websocket-key")}, "Sec-WebSocket-Key"),
        ({"headers": replace("sec-websocket-key", "not base64!")}, "Sec-WebSocket-Key"),
        ({"headers": replace("sec-websocket-key", base64.b64encode(b"x" * 15).decode())}, "16"),
        ({"headers": replace("sec-websocket-key", base64.b64encode(b"x" * 17).decode())}, "16"),
        ({"headers": replace("sec-websocket-key", RFC_KEY, RFC_KEY)}, "Sec-WebSocket-Key"),
        ({"headers": replace("sec-websocket-key", RFC_KEY[:-2])}, "Sec-WebSocket-Key"),
    ],
)
def test_malformed_requests_get_400(kwargs, reason):
    assert_rejected(validate(**kwargs), 400, reason)


@pytest.mark.parametrize("versions", [(), ("8",), ("12",), ("14",), ("13, 8",), ("13", "8"), ("",)])
def test_other_versions_get_426_naming_13(versions):
    headers = assert_rejected(validate(replace("sec-websocket-version", *versions)), 426, "version")
    assert ("Sec-WebSocket-Version", "13") in headers
    assert ("Upgrade", "websocket") in headers  # RFC 9110 §15.5.22


def test_malformed_request_is_reported_before_the_version():
    result = validate(replace("sec-websocket-version", "8", headers=replace("upgrade")))
    assert result.status == 400


@pytest.mark.parametrize(
    ("origins", "headers", "accepted"),
    [
        (None, GOOD, True),  # no allow-list: anything goes
        (["http://example.com"], GOOD, True),
        (["HTTP://EXAMPLE.COM"], GOOD, True),  # case-insensitive
        (["https://example.com"], GOOD, False),
        ([], GOOD, False),
        (["http://example.com"], replace("origin"), False),  # no Origin, not allowed
        (["http://example.com", None], replace("origin"), True),  # None admits it
        (["http://example.com"], replace("origin", "http://example.com", "http://evil"), False),
    ],
)
def test_origin_allow_list(origins, headers, accepted):
    result = validate(headers, origins=origins)
    if accepted:
        assert isinstance(result, hs.Accept)
    else:
        assert_rejected(result, 403, "origin")


def test_extra_headers_on_the_101():
    result = validate(extra_headers=[("Set-Cookie", "id=1")])
    assert result.response.endswith(
        b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\nSet-Cookie: id=1\r\n\r\n"
    )


@pytest.mark.parametrize(
    "header", [("X-Evil", "a\r\nInjected: 1"), ("X-Evil", "a\nb"), ("Bad Name", "v"), ("", "v")]
)
def test_header_injection_is_refused(header):
    with pytest.raises(ValueError):
        validate(extra_headers=[header])
    with pytest.raises(ValueError):
        hs.reject(401, "no", [header])


def test_application_rejection():
    result = hs.reject(401, "missing token", [("WWW-Authenticate", 'Bearer realm="ws"')])
    headers = assert_rejected(result, 401, "missing token")
    assert parse_response(render(result))[0] == "HTTP/1.1 401 Unauthorized"
    assert ("WWW-Authenticate", 'Bearer realm="ws"') in headers
    forbidden = hs.reject(403, "not\r\nyours")
    assert forbidden.reason == "not yours"  # one line, whatever the application passed
    assert parse_response(render(forbidden))[0] == "HTTP/1.1 403 Forbidden"
    assert parse_response(render(hs.reject(499, "no phrase")))[0] == "HTTP/1.1 499 "
    with pytest.raises(ValueError):
        hs.reject(200, "not an error")


@settings(deadline=None)  # no timing limits in tests (machines are shared)
@given(nonce=st.binary(min_size=16, max_size=16))
def test_any_16_byte_nonce_is_accepted_with_its_accept_value(nonce):
    key = base64.b64encode(nonce).decode()
    result = validate(replace("sec-websocket-key", key))
    assert isinstance(result, hs.Accept)
    assert result.accept == hs.accept_key(key)
    assert f"Sec-WebSocket-Accept: {result.accept}\r\n".encode() in result.response


@settings(deadline=None)  # no timing limits in tests (machines are shared)
@given(junk=st.binary(max_size=40).filter(lambda b: len(b) != 16))
def test_other_nonce_sizes_are_refused(junk):
    result = validate(replace("sec-websocket-key", base64.b64encode(junk).decode()))
    assert isinstance(result, hs.Reject) and result.status == 400


# ---- the C fast path: accept_usual reads the head's bytes (ws/csrc/upgrade.c) -------------


def head_of(*fields: str, request_line: str = "GET /chat HTTP/1.1") -> bytes:
    return ("\r\n".join([request_line, *fields]) + "\r\n\r\n").encode("latin-1")


USUAL = (
    "Host: server.example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {RFC_KEY}",
    "Sec-WebSocket-Version: 13",
)


def both_paths(head: bytes, subprotocols=(), origins=None):
    """(accept_usual's answer, validate's answer) for a head the HTTP parser accepts."""
    request, head_end = RequestParser().parse(bytearray(head))
    assert request is not None and head_end == len(head)
    fast = hs.accept_usual(
        request.method, request.http_version, head, head_end,
        subprotocols=subprotocols, origins=origins,
    )  # fmt: skip
    full = hs.validate(
        request.method, request.http_version, request.headers,
        subprotocols=subprotocols, origins=origins,
    )  # fmt: skip
    return fast, full


def test_the_test_environment_runs_the_compiled_fast_path():
    assert hs._accept_upgrade is not None


@pytest.mark.parametrize(
    "fields",
    [
        USUAL,
        tuple(reversed(USUAL)),
        ("host: h", "upgrade: WebSocket", "connection: keep-alive, Upgrade",  # Firefox
         f"sec-websocket-key: {RFC_KEY}", "sec-websocket-version: 13"),
        (*USUAL, "Origin: http://example.com", "Sec-WebSocket-Extensions: permessage-deflate",
         "Sec-WebSocket-Protocol: chat", "User-Agent: Mozilla/5.0", "Cookie: a=b"),
        ("Host:\t h \t", "Upgrade:websocket", "Connection:  upgrade ,  x ",
         f"Sec-WebSocket-Key:  {RFC_KEY}\t", "Sec-WebSocket-Version: 13 "),
        ("Host: h", "Upgrade: websocket", "Connection: x,,Upgrade,", "Sec-WebSocket-Key: "
         "AAAAAAAAAAAAAAAAAAAAAA==", "Sec-WebSocket-Version: 13"),
    ],
)  # fmt: skip
def test_usual_upgrades_take_the_fast_path_with_the_same_answer(fields):
    fast, full = both_paths(head_of(*fields))
    assert isinstance(fast, hs.Accept) and fast == full
    if f"Sec-WebSocket-Key: {RFC_KEY}" in fields:
        assert fast.accept == RFC_ACCEPT


def without(name: str) -> tuple[str, ...]:
    return tuple(f for f in USUAL if not f.lower().startswith(name))


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        # (Host twice or missing never gets here: the HTTP parser answers 400.)
        ((*without("upgrade"), "Upgrade: websocket, h2c"), {}),  # a list: validate decides
        ((*without("upgrade"), "Upgrade: h2c"), {}),
        ((*USUAL, "Connection: keep-alive"), {}),  # Connection twice
        ((*without("connection"), "Connection: keep-alive"), {}),
        ((*without("sec-websocket-key"), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR=="), {}),
        ((*without("sec-websocket-key"), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ="), {}),
        ((*without("sec-websocket-key"), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q=="), {}),
        ((*USUAL, f"Sec-WebSocket-Key: {RFC_KEY}"), {}),
        ((*without("sec-websocket-version"), "Sec-WebSocket-Version: 8"), {}),  # 426
        ((*without("sec-websocket-version"), "Sec-WebSocket-Version: 013"), {}),
        ((*without("sec-websocket-version"), "Sec-WebSocket-Version: 130"), {}),
        ((*without("sec-websocket-version"), "Sec-WebSocket-Version: 13, 8"), {}),
        ((*without("connection"), "Connection: upgrade-ish"), {}),
        ((*without("upgrade"), "Upgrade: websockets"), {}),
        (without("sec-websocket-version"), {}),
        ((*USUAL, "Sec-WebSocket-Protocol: chat"), {"subprotocols": ("chat",)}),
        ((*USUAL, "Sec-WebSocket-Protocol: x"), {"subprotocols": ("chat",)}),
        (USUAL, {"origins": ["http://example.com"]}),
    ],
)
def test_anything_else_is_left_to_validate(fields, options):
    fast, full = both_paths(head_of(*fields), **options)
    assert fast is None
    assert full is not None  # validate answers it, accept or reject


@pytest.mark.parametrize(
    "head",
    [
        head_of(*USUAL, request_line="HEAD /chat HTTP/1.1"),
        head_of(*USUAL, request_line="GET /chat HTTP/1.0"),
        head_of(*USUAL).replace(b"\r\n", b"\n"),  # bare LF lines
        head_of(*USUAL[:1], " continued", *USUAL[1:]),  # obs-fold, if the parser allows it
    ],
)
def test_unusual_heads_are_left_to_validate(head):
    try:
        request, head_end = RequestParser().parse(bytearray(head))
    except HttpError:
        return  # refused before any handshake check
    assert hs.accept_usual(request.method, request.http_version, head, head_end) is None


KEY = "Sec-WebSocket-Key: "
VERSION = "Sec-WebSocket-Version: "
FIELD_VARIANTS = {
    "host": ["Host: h", "host: h", "HOST:h", "Host: ", "Host: a b"],
    "upgrade": ["Upgrade: websocket", "upgrade: WEBSOCKET", "Upgrade: websocket ", "Upgrade: web",
                "Upgrade: websocket, x", "Upgrade: x, websocket"],
    "connection": ["Connection: Upgrade", "connection: upgrade, close", "Connection: upgradex",
                   "Connection: ,upgrade", "Connection: close"],
    "key": [KEY + RFC_KEY, KEY + "A" * 22 + "==", KEY + "A" * 21 + "B==",
            KEY + "/" * 20 + "+w==", KEY + "A" * 23 + "=", "sec-websocket-key: " + "A" * 24],
    "version": [VERSION + "13", "sec-websocket-version:13", VERSION + "1 3", VERSION + "13, 8"],
    "extra": ["Sec-WebSocket-Protocol: chat", "Origin: o", "X-Any: thing",
              "Sec-WebSocket-Protocols: x"],
}  # fmt: skip


USUAL_BY_NAME = dict(zip(["host", "upgrade", "connection", "key", "version"], USUAL, strict=True))


@settings(deadline=None, max_examples=500)  # no timing limits in tests (machines are shared)
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(sorted(FIELD_VARIANTS)),
            st.integers(0, 9),
            st.sampled_from(["replace", "add", "drop"]),
        ),
        max_size=4,
    ),
    protocols=st.sampled_from([(), ("chat",)]),
    shuffle=st.randoms(use_true_random=False),
)
def test_fast_path_never_answers_differently(changes, protocols, shuffle):
    """The usual upgrade with a few fields replaced, repeated or dropped, in any order:
    the fast path declines, or gives validate()'s exact answer."""
    fields = dict(USUAL_BY_NAME)
    extra = []
    for name, i, how in changes:
        variant = FIELD_VARIANTS[name][i % len(FIELD_VARIANTS[name])]
        if how == "drop":
            fields.pop(name, None)
        elif how == "replace" and name in USUAL_BY_NAME:
            fields[name] = variant
        else:
            extra.append(variant)
    lines = [*fields.values(), *extra]
    shuffle.shuffle(lines)
    try:
        fast, full = both_paths(head_of(*lines), subprotocols=protocols)
    except HttpError:
        return
    assert fast is None or fast == full


def test_the_websocket_glue_takes_the_fast_path(monkeypatch):
    """An upgrade through the handler is answered by the C routine (counted), with the
    101 and accept key of RFC 6455 §1.3."""
    calls = []
    real = hs._accept_upgrade
    monkeypatch.setattr(hs, "_accept_upgrade", lambda *args: calls.append(args[1]) or real(*args))
    reactor = Reactor()
    handler = make_handler(build_parser().parse_args(["--proto", "ws"]), reactor)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        reactor.add_connection(ours.detach(), handler)
        head = head_of(*USUAL)
        theirs.sendall(head)
        reactor.run_once(1.0)
        response = theirs.recv(4096)
    finally:
        theirs.close()
        reactor.dispose()
    assert calls == [len(head)]
    assert response.startswith(b"HTTP/1.1 101 ") and RFC_ACCEPT.encode() in response


# ---- amend: what on_upgrade's Accept changes in the 101 ------------------------------


def _accepted(**kw):
    from reactor.ws import deflate
    from reactor.ws import handshake as hs

    fields = [
        ("host", "x"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat, v2"),
        ("sec-websocket-extensions", "permessage-deflate"),
    ]
    return hs.validate("GET", (1, 1), fields, compression=deflate.Compression("shared"), **kw)


def test_amend_adds_headers_and_picks_an_offered_subprotocol_keeping_the_rest():
    from reactor.ws import handshake as hs

    accept = _accepted(subprotocols=["chat"])
    amended = hs.amend(accept, [("Set-Cookie", "a=1")], "v2", ["chat, v2"])
    lines = amended.response.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols" and lines[-2:] == ["", ""]
    assert "Sec-WebSocket-Protocol: v2" in lines and "Sec-WebSocket-Protocol: chat" not in lines
    assert "Set-Cookie: a=1" in lines
    assert any(line.startswith("Sec-WebSocket-Extensions: permessage-deflate") for line in lines)
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in lines  # RFC 6455 §1.3
    assert amended.subprotocol == "v2" and amended.extension is accept.extension
    assert hs.amend(accept).response == accept.response  # nothing asked: the same 101


@pytest.mark.parametrize(
    ("headers", "subprotocol"),
    [
        ((), "never-offered"),
        ((("Sec-WebSocket-Protocol", "v2"),), None),
        ((("Connection", "close"),), None),
        ((("X-Bad", "a\r\nInjected: 1"),), None),
        ((("bad name", "v"),), None),
    ],
)
def test_amend_refuses_what_would_break_the_handshake(headers, subprotocol):
    from reactor.ws import handshake as hs

    with pytest.raises(ValueError):
        hs.amend(_accepted(), headers, subprotocol, ["chat, v2"])
