"""The C head scanner (http/csrc/head.c) against the Python parser it stands
in front of: common heads are read by the scanner, everything else is left to
Python, and with or without the scanner parse() gives the same result."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_request import BROWSER, WRK, feed_whole, head, summary

from reactor.http import request as request_module
from reactor.http.request import MAX_FIELDS, MAX_FIELDS_SIZE, MAX_TARGET


def test_the_compiled_head_scanner_is_built():
    assert request_module.switch.active == "c"


def parse_with(data: bytes, scanner: str) -> tuple:
    """parse() of a whole input with the C scanner in front ("c") or without it ("python")."""
    request_module.use(scanner)
    try:
        return feed_whole(data)
    finally:
        request_module.use("c")


COMPILED_SCANNER, NO_SCANNER = "c", "python"
COMMON_HEADS = [
    WRK,
    BROWSER,
    head("HEAD /a%20b?c=d&e HTTP/1.0", "host: [::1]:80", "X-Empty:", "X-Tabs:\t a \t b \t"),
    head("GET / HTTP/1.1", "HOST: a", "X-Latin: caf\xe9 \xff", "x: y", line_end="\n"),
    head("GET /" + "t" * (MAX_TARGET - 1) + " HTTP/1.1", "Host: a"),
    head("GET / HTTP/1.1", "Host: a", *[f"X-{i}: v" for i in range(MAX_FIELDS - 1)]),
]
DECLINED_HEADS = [
    head("POST / HTTP/1.1", "Host: a"),
    head("GET http://a/ HTTP/1.1", "Host: a"),
    head("GET / HTTP/1.2", "Host: a"),
    head("GET / HTTP/2.0", "Host: a"),
    head("get / HTTP/1.1", "Host: a"),
    head("GET /" + "t" * MAX_TARGET + " HTTP/1.1", "Host: a"),
    head("GET /\xe9 HTTP/1.1", "Host: a"),
    head("GET / HTTP/1.1", "Host: a", "X: folded", " continued"),
    head("GET / HTTP/1.1", "Host: a", "Content-Length: 0"),
    head("GET / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"),
    head("GET / HTTP/1.1", "Host: a", "Referer: /content-LENGTH"),
    head("GET / HTTP/1.1"),
    head("GET / HTTP/1.0"),
    head("GET / HTTP/1.1", "Host: a", "host: b"),
    head("GET / HTTP/1.1", "Host: a b"),
    head("GET / HTTP/1.1", "Host: a/b"),
    head("GET / HTTP/1.1", "Host: a", "X: nul\x00"),
    head("GET / HTTP/1.1", "Host: a", "X: del\x7f"),
    head("GET / HTTP/1.1", "Host: a", "X: bare\rcr"),
    head("GET / HTTP/1.1", "Host: a", "X : space before the colon"),
    head("GET / HTTP/1.1", "Host: a", "no colon"),
    head("GET / HTTP/1.1", "Host: a", *[f"X-{i}: v" for i in range(MAX_FIELDS)]),
    head("GET / HTTP/1.1", "Host: a", "X: " + "v" * MAX_FIELDS_SIZE),
]


@pytest.mark.parametrize("data", COMMON_HEADS, ids=range(len(COMMON_HEADS)))
def test_head_scanner_reads_common_heads_as_the_regex_path_does(data):
    scanned = request_module._scanned_request(data)
    assert scanned is not None, "the common case must not fall back to the regex path"
    assert summary(scanned, len(data)) == parse_with(data, NO_SCANNER)


@pytest.mark.parametrize("data", DECLINED_HEADS, ids=range(len(DECLINED_HEADS)))
def test_head_scanner_leaves_everything_else_to_python(data):
    assert request_module._scanned_request(data) is None
    assert parse_with(data, COMPILED_SCANNER) == parse_with(data, NO_SCANNER)


edits = st.lists(
    st.tuples(st.integers(min_value=0, max_value=20_000), st.binary(max_size=3), st.booleans()),
    max_size=4,
)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(COMMON_HEADS + DECLINED_HEADS), changes=edits)
def test_head_scanner_agrees_with_the_regex_path_on_mutated_heads(base, changes):
    """Bytes replaced or inserted anywhere in a head: with and without the
    scanner, parse() gives the same request, or the same error status."""
    data = bytearray(base)
    for at, new, insert in changes:
        at %= len(data) + 1
        data[at : at if insert else at + len(new)] = new
    data = bytes(data)
    assert parse_with(data, COMPILED_SCANNER) == parse_with(data, NO_SCANNER)
