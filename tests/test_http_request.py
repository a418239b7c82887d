"""The sans-I/O request-head parser: fed whole, byte by byte and split at every
offset; limits at and one past each boundary; every error status."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reactor.http import request as request_module
from reactor.http.request import (
    MAX_FIELDS,
    MAX_FIELDS_SIZE,
    MAX_LEADING_EMPTY,
    MAX_METHOD,
    MAX_TARGET,
    HttpError,
    Request,
    RequestParser,
)


@pytest.fixture(params=["c", "python"], autouse=True)
def head_scanner(request):
    """Every test runs with the C head scanner (http/csrc/head.c) in front of
    the regex fast path, and without it (the path of a missing build)."""
    request_module.use(request.param)
    yield request.param
    request_module.use("c")


# --- feeding helpers: each returns ("ok", request fields, consumed) or ("error", status) ---


def summary(request: Request, consumed: int) -> tuple:
    return ("ok", request.method, request.target, request.http_version, request.headers, consumed)


def feed_whole(data: bytes) -> tuple:
    try:
        request, consumed = RequestParser().parse(data)
    except HttpError as error:
        return ("error", error.status)
    return ("need more",) if request is None else summary(request, consumed)


def feed_chunks(data: bytes, cuts: list[int]) -> tuple:
    """What the glue does: append each chunk to a bytearray and parse again."""
    parser, buf = RequestParser(), bytearray()
    bounds = [0, *cuts, len(data)]
    try:
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            buf += data[lo:hi]
            request, consumed = parser.parse(buf, 0, len(buf))
            if request is not None:
                return summary(request, consumed)
    except HttpError as error:
        return ("error", error.status)
    return ("need more",)


def feed_bytewise(data: bytes) -> tuple:
    return feed_chunks(data, list(range(1, len(data))))


def assert_every_feeding(data: bytes, expected: tuple) -> None:
    assert feed_whole(data) == expected
    assert feed_bytewise(data) == expected
    for cut in range(1, len(data)):
        assert feed_chunks(data, [cut]) == expected, f"split at {cut}"


def head(*lines: str, line_end: str = "\r\n") -> bytes:
    return (line_end.join(lines) + line_end + line_end).encode("latin-1")


WRK = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:9501\r\n\r\n"
BROWSER = head(
    "GET /index.html?x=1 HTTP/1.1",
    "Host: localhost:9501",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
    "Accept: text/html,application/xhtml+xml",
    "Accept-Encoding: gzip, deflate, br",
    "Connection: keep-alive",
    'If-None-Match: "abc"',
)

# --- valid heads -------------------------------------------------------------------------

VALID = [
    (WRK, "GET", "/1k.bin", (1, 1), [("host", "127.0.0.1:9501")]),
    (
        BROWSER,
        "GET",
        "/index.html?x=1",
        (1, 1),
        [
            ("host", "localhost:9501"),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"),
            ("accept", "text/html,application/xhtml+xml"),
            ("accept-encoding", "gzip, deflate, br"),
            ("connection", "keep-alive"),
            ("if-none-match", '"abc"'),
        ],
    ),
    (head("HEAD / HTTP/1.0"), "HEAD", "/", (1, 0), []),  # 1.0 needs no Host
    (head("GET / HTTP/1.1", "Host: a", line_end="\n"), "GET", "/", (1, 1), [("host", "a")]),
    (b"GET / HTTP/1.1\nHost: a\r\nX: 1\n\r\n", "GET", "/", (1, 1), [("host", "a"), ("x", "1")]),
    (b"\r\n\nGET / HTTP/1.0\r\n\r\n", "GET", "/", (1, 0), []),  # leading empty lines
    (
        head("GET / HTTP/1.1", "HOST:  \t a \t ", "X-Empty:", "X-Empty:   ", "x-obs: caf\xe9 \xff"),
        "GET",
        "/",
        (1, 1),
        [("host", "a"), ("x-empty", ""), ("x-empty", ""), ("x-obs", "caf\xe9 \xff")],
    ),
    (
        head("GET / HTTP/1.1", "Host: a", "Accept: 1", "accept: 2", "Content-Length: 0"),
        "GET",
        "/",
        (1, 1),
        [("host", "a"), ("accept", "1"), ("accept", "2"), ("content-length", "0")],
    ),
    (head("GET http://a/b?c HTTP/1.1", "Host: a"), "GET", "http://a/b?c", (1, 1), [("host", "a")]),
    (head("GET * HTTP/1.1", "Host: a"), "GET", "*", (1, 1), [("host", "a")]),
    (head("GET / HTTP/1.9", "Host: [::1]:80"), "GET", "/", (1, 9), [("host", "[::1]:80")]),
    (head("GET / HTTP/1.1", "Host:"), "GET", "/", (1, 1), [("host", "")]),  # empty Host is legal
    (head("GET / HTTP/1.1", "Host: a", "Content-Length: 0, 0"), "GET", "/", (1, 1), None),
]


@pytest.mark.parametrize("data,method,target,version,headers", VALID)
def test_valid_heads_parse_the_same_however_fed(data, method, target, version, headers):
    whole = feed_whole(data)
    assert whole[:4] == ("ok", method, target, version)
    if headers is not None:
        assert whole[4] == headers
    assert whole[5] == len(data)
    assert_every_feeding(data, whole)


@pytest.mark.parametrize("data", [WRK, BROWSER])
def test_pipelined_bytes_are_not_consumed(data):
    second = b"GET /next HTTP/1.1\r\nHost: b\r\n\r\n"
    stream = data + second + b"GET /partial HT"
    parser = RequestParser()
    first, pos = parser.parse(stream)
    assert pos == len(data) and first.target in ("/1k.bin", "/index.html?x=1")
    request, pos2 = parser.parse(stream, pos, len(stream))
    assert request.target == "/next" and pos2 == len(data) + len(second)
    assert parser.parse(stream, pos2, len(stream)) == (None, pos2)


def test_a_memoryview_window_is_accepted_at_an_offset():
    stream = bytearray(b"xx" + WRK + WRK)
    view = memoryview(stream)
    parser = RequestParser()
    request, pos = parser.parse(view, 2, len(view))
    assert request.target == "/1k.bin" and pos == 2 + len(WRK)
    request, pos = parser.parse(view, pos, len(view))
    assert request.target == "/1k.bin" and pos == len(stream)
    assert parser.parse(view[:10], 2, 10) == (None, 2)


def test_a_large_head_in_a_memoryview_is_not_cut_by_the_first_copy_window():
    big = head("GET /big HTTP/1.1", "Host: a", *[f"X-{i}: {'v' * 90}" for i in range(60)])
    assert len(big) > 5000
    stream = memoryview(bytearray(WRK + big + WRK))
    parser = RequestParser()
    _, pos = parser.parse(stream, 0, len(stream))
    request, pos = parser.parse(stream, pos, len(stream))
    assert request.target == "/big" and len(request.headers) == 61 and pos == len(WRK + big)
    assert parser.parse(stream, pos, len(stream))[1] == len(stream)


@pytest.mark.parametrize("drop_consumed", [True, False])
def test_pipelined_stream_fed_byte_by_byte(drop_consumed):
    """Both glue styles: delete consumed bytes (start stays 0) or advance start."""
    stream = WRK + BROWSER + b"HEAD /last HTTP/1.0\r\n\r\n"
    parser, buf, start, targets = RequestParser(), bytearray(), 0, []
    for byte in stream:
        buf.append(byte)
        request, pos = parser.parse(buf, start, len(buf))
        if request is not None:
            targets.append(request.target)
            if drop_consumed:
                del buf[:pos]
            else:
                start = pos
    assert targets == ["/1k.bin", "/index.html?x=1", "/last"]


def test_state_is_fresh_for_the_next_request_on_the_connection():
    parser = RequestParser()
    assert feed_chunks_with(parser, WRK)[0] == "ok"
    with pytest.raises(HttpError) as caught:  # the next head must be checked from scratch
        parser.parse(b"\x16\x03\x01")
    assert caught.value.status == 400


def feed_chunks_with(parser: RequestParser, data: bytes) -> tuple:
    buf = bytearray()
    for byte in data:
        buf.append(byte)
        request, consumed = parser.parse(buf)
        if request is not None:
            return summary(request, consumed)
    return ("need more",)


def test_the_request_line_is_validated_once_while_fields_trickle_in(monkeypatch):
    calls = []
    real = request_module._parse_request_line
    monkeypatch.setattr(
        request_module, "_parse_request_line", lambda line: calls.append(line) or real(line)
    )
    data = head("GET /x HTTP/1.1", "Host: a", *[f"X-{i}: {'v' * 50}" for i in range(40)])
    assert feed_bytewise(data)[0] == "ok"
    assert calls == ["GET /x HTTP/1.1"]  # once while incomplete; the fast path needs no call


def test_partial_head_consumes_nothing():
    parser = RequestParser()
    for end in range(len(WRK)):
        request, pos = parser.parse(WRK, 0, end)
        assert request is None and pos == 0


def test_only_empty_lines_wait_for_more():
    assert feed_whole(b"\r\n\r\n") == ("need more",)
    assert feed_whole(b"\r") == ("need more",)


def test_the_blank_line_search_resumes_instead_of_rescanning(monkeypatch):
    """Byte-by-byte feeding must scan about each byte once, not O(n^2)."""
    scanned = []
    real_search = request_module._BLANK_LINE_SEARCH

    def counting_search(buf, scan, end):
        scanned.append(end - scan)
        return real_search(buf, scan, end)

    monkeypatch.setattr(request_module, "_BLANK_LINE_SEARCH", counting_search)
    data = head("GET / HTTP/1.1", "Host: a", *[f"X-{i}: {'v' * 50}" for i in range(60)])
    assert feed_bytewise(data)[0] == "ok"
    assert len(scanned) == len(data)
    assert sum(scanned) <= 3 * len(data)  # each call rescans at most 2 old bytes


# --- errors ----------------------------------------------------------------------------------

ERRORS = [
    # malformed request line -> 400
    (b"GET /\r\n\r\n", 400),  # HTTP/0.9 style
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # two spaces
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # invalid token char in method
    (b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # non-ASCII target
    (b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),  # bare CR
    (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),  # version is case-sensitive
    (b"GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400),
    # unsupported versions -> 505
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET / HTTP/3.1\r\nHost: a\r\n\r\n", 505),
    # header fields -> 400
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),  # obs-fold
    (b"GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\tfolded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),  # whitespace before colon
    (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400),  # invalid token char in name
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),  # NUL in value
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),  # CR in value
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n", 400),  # CTL in value
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400),  # DEL in value
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n", 400),  # bare CR before CRLF
    # Host -> 400 (RFC 9112 §3.2)
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
    # methods -> 405 (a valid token we do not serve); over-long method -> 501
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", 405),
    (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 405),  # methods are case-sensitive
    (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    # bodies are refused
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: \xb2\r\n\r\n", 400),  # a unicode digit
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    # not HTTP/1.x at all -> 400
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    (bytes.fromhex("160301020001000200030303") + b"\n\n", 400),
    (b"\x00\x01\x02\x03", 400),
    (b"SSH-2.0-OpenSSH_9.6\r\n", 400),
]


@pytest.mark.parametrize("data,status", ERRORS)
def test_errors_have_the_same_status_however_fed(data, status):
    assert_every_feeding(data, ("error", status))


def test_405_carries_allow():
    with pytest.raises(HttpError) as caught:
        RequestParser().parse(b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert caught.value.headers == (("Allow", "GET, HEAD"),)
    assert "DELETE" in caught.value.reason


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "folding"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "before colon"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", "field name"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n", "field value"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nbroken\r\n\r\n", "colon"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2"),
    ],
)
def test_error_reasons_say_what_is_wrong(data, reason):
    with pytest.raises(HttpError) as caught:
        RequestParser().parse(data)
    assert reason in caught.value.reason


# --- fail fast on incomplete heads --------------------------------------------------------


@pytest.mark.parametrize(
    "prefix,status",
    [
        (b"\x16", 400),  # TLS handshake record: the first byte is enough
        (b"\x16\x03\x01\x02\x00", 400),
        (b"\x80", 400),
        (b"GE\x00", 400),
        (b"GET /a\x01", 400),
        (b"GET / HTTX", 400),
        (b"GET / HTTP/1.1x", 400),
        (b"A" * (MAX_METHOD + 1), 501),
        (b"GET /" + b"a" * MAX_TARGET, 414),  # 8193-byte target, line still open
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * MAX_FIELDS_SIZE, 431),
        (b"\r\n" * (MAX_LEADING_EMPTY // 2 + 1) + b"G", 400),
        (b"POST / HTTP/2.0\r\n", 505),
    ],
)
def test_incomplete_heads_fail_as_soon_as_recognisable(prefix, status):
    assert feed_whole(prefix) == ("error", status)
    assert feed_bytewise(prefix) == ("error", status)


def test_405_waits_for_the_whole_head_but_nothing_else():
    assert feed_whole(b"POST / HTTP/1.1\r\n") == ("need more",)
    assert feed_whole(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n") == ("error", 405)


def test_http2_preface_is_rejected_before_the_settings_frame():
    assert feed_whole(b"PRI * HTTP/2.0\r\n\r\n") == ("error", 400)


# --- limits: at the boundary and one past ------------------------------------------------


def request_with_target(length: int) -> bytes:
    return b"GET /" + b"t" * (length - 1) + b" HTTP/1.1\r\nHost: a\r\n\r\n"


def test_target_limit():
    ok = feed_whole(request_with_target(MAX_TARGET))
    assert ok[0] == "ok" and len(ok[2]) == MAX_TARGET
    assert feed_bytewise(request_with_target(MAX_TARGET)) == ok
    assert feed_whole(request_with_target(MAX_TARGET + 1)) == ("error", 414)
    assert feed_bytewise(request_with_target(MAX_TARGET + 1)) == ("error", 414)


def request_with_fields_size(size: int) -> bytes:
    """A head whose field section (after the request line, blank line included) is `size`."""
    fixed = b"Host: a\r\nX: \r\n\r\n"
    return b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * (size - len(fixed)) + b"\r\n\r\n"


def test_field_section_size_limit():
    ok = request_with_fields_size(MAX_FIELDS_SIZE)
    assert len(ok) - len(b"GET / HTTP/1.1\r\n") == MAX_FIELDS_SIZE
    assert feed_whole(ok)[0] == "ok"
    assert feed_bytewise(ok)[0] == "ok"
    over = request_with_fields_size(MAX_FIELDS_SIZE + 1)
    assert feed_whole(over) == ("error", 431)
    assert feed_bytewise(over) == ("error", 431)


def request_with_fields(count: int) -> bytes:
    return head("GET / HTTP/1.1", "Host: a", *[f"X-{i}: {i}" for i in range(count - 1)])


def test_field_count_limit():
    assert feed_whole(request_with_fields(MAX_FIELDS))[0] == "ok"
    assert len(feed_whole(request_with_fields(MAX_FIELDS))[4]) == MAX_FIELDS
    assert feed_whole(request_with_fields(MAX_FIELDS + 1)) == ("error", 431)
    assert feed_bytewise(request_with_fields(MAX_FIELDS + 1)) == ("error", 431)


def test_method_length_limit():
    at_limit = b"M" * MAX_METHOD + b" / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert feed_whole(at_limit) == ("error", 405)
    assert feed_whole(b"M" + at_limit) == ("error", 501)
    assert feed_bytewise(b"M" + at_limit) == ("error", 501)


def test_leading_empty_line_limit():
    at_limit = b"\n" * MAX_LEADING_EMPTY + WRK
    assert feed_whole(at_limit)[0] == "ok" and feed_whole(at_limit)[5] == len(at_limit)
    assert feed_whole(b"\n" + at_limit) == ("error", 400)


def test_blank_runs_in_values_stay_linear():
    """Pathological for a backtracking regex: 16 KiB of blanks, then a bad byte (this
    took 5 s before the field pattern became possessive)."""
    prefix = b"GET / HTTP/1.1\r\nHost: a\r\nX: "
    for filler in (b" " * 16000, b" \t" * 8000, b"a " * 8000):
        assert feed_whole(prefix + filler + b"\x01\r\n\r\n") == ("error", 400)
        clean = feed_whole(prefix + filler + b"\r\n\r\n")
        assert clean[4][1] == ("x", filler.strip(b" \t").decode())


# --- Request helpers --------------------------------------------------------------------


def parsed(*lines: str) -> Request:
    return RequestParser().parse(head(*lines))[0]


def test_get_is_case_insensitive_and_joins_repeats():
    request = parsed("GET / HTTP/1.1", "Host: a", "Accept: x", "ACCEPT: y")
    assert request.get("Host") == "a"
    assert request.get("accept") == "x, y"
    assert request.get_all("Accept") == ["x", "y"]
    assert request.get("missing") is None and request.get("missing", "d") == "d"
    assert request.get_all("missing") == []


@pytest.mark.parametrize(
    "version,connection,keep_alive",
    [
        ("1.1", None, True),
        ("1.1", "close", False),
        ("1.1", "Keep-Alive, CLOSE", False),
        ("1.1", "keep-alive", True),
        ("1.1", "upgrade", True),
        ("1.0", None, False),
        ("1.0", "keep-alive", True),
        ("1.0", "Keep-Alive", True),
        ("1.0", "keep-alive, close", False),
        ("1.0", "upgrade", False),
    ],
)
def test_keep_alive(version, connection, keep_alive):
    lines = [f"GET / HTTP/{version}", "Host: a"]
    if connection is not None:
        lines.append(f"Connection: {connection}")
    assert parsed(*lines).keep_alive is keep_alive


def test_keep_alive_reads_every_connection_line():
    assert (
        parsed("GET / HTTP/1.1", "Host: a", "Connection: x", "Connection: close").keep_alive
        is False
    )


@pytest.mark.parametrize(
    "upgrade,wanted",
    [
        (None, False),
        ("websocket", True),
        ("WebSocket", True),
        ("h2c, websocket", True),
        ("h2c", False),
    ],
)
def test_wants_upgrade(upgrade, wanted):
    lines = ["GET / HTTP/1.1", "Host: a", "Connection: Upgrade"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    assert parsed(*lines).wants_upgrade is wanted


def test_request_is_slotted_and_fields_are_what_the_handshake_expects():
    request = parsed("GET /chat HTTP/1.1", "Host: a", "Sec-WebSocket-Key: abc==")
    assert not hasattr(request, "__dict__")
    assert isinstance(request.method, str) and request.http_version == (1, 1)
    assert ("sec-websocket-key", "abc==") in request.headers


# --- hypothesis ---------------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
names = st.text(TCHAR, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in ("host", "content-length", "transfer-encoding")
)
visible = "".join(map(chr, [*range(0x21, 0x7F), *range(0x80, 0x100)]))
values = st.text(visible + " \t", max_size=30).map(lambda v: v.strip(" \t"))
fields = st.lists(st.tuples(names, values), max_size=20)
targets = st.text("".join(map(chr, range(0x21, 0x7F))), max_size=40).map(lambda t: "/" + t)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "HEAD"]),
    target=targets,
    minor=st.sampled_from([0, 1]),
    field_list=fields,
    line_end=st.sampled_from(["\r\n", "\n"]),
    ows=st.sampled_from(["", " ", "\t", " \t "]),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=5),
)
def test_round_trip(method, target, minor, field_list, line_end, ows, cuts):
    lines = [f"{method} {target} HTTP/1.{minor}", "Host: h"]
    lines += [f"{name}:{ows}{value}{ows}" for name, value in field_list]
    data = head(*lines, line_end=line_end)
    expected = [("host", "h")] + [(name.lower(), value) for name, value in field_list]
    result = feed_whole(data)
    assert result == ("ok", method, target, (1, minor), expected, len(data))
    cuts = sorted({cut for cut in cuts if cut < len(data)})
    assert feed_chunks(data + b"GET", cuts) == result


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=299), max_size=4))
def test_arbitrary_bytes_only_ever_raise_http_error(data, cuts):
    whole = feed_whole(data)
    cuts = sorted({cut for cut in cuts if cut < len(data)})
    split = feed_chunks(data, cuts)
    assert split == whole  # fail-fast checks on prefixes never change the outcome


header_lines = st.one_of(
    st.tuples(names, values).map(lambda nv: f"{nv[0]}: {nv[1]}"),
    st.sampled_from(["Host: a", "Host : a", " fold", "X: a\x00", "X: \x7f", "Content-Length: 0"]),
    st.sampled_from(["Content-Length: 2", "Transfer-Encoding: x", "Host:", "Host: a b", "X"]),
)


@settings(max_examples=400)
@given(
    line=st.sampled_from(
        ["GET / HTTP/1.1", "HEAD /x?y HTTP/1.0", "GET http://a/ HTTP/1.1", "POST / HTTP/1.1"]
    ),
    lines=st.lists(header_lines, max_size=8),
    line_end=st.sampled_from(["\r\n", "\n"]),
)
def test_fast_path_agrees_with_the_slow_path(line, lines, line_end):
    """The fast path must accept exactly what the canonical slow path accepts."""
    text = head(line, *lines, line_end=line_end).decode("latin-1")
    data = text.encode("latin-1")

    def outcome(build):
        try:
            request = build()
        except HttpError as error:
            return error.status
        return (request.method, request.target, request.http_version, request.headers)

    fast = outcome(lambda: request_module._build_request(data, 0, len(data)))
    assert fast == outcome(lambda: request_module._build_request_slow(text))
