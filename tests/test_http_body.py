"""Request bodies, sans-I/O: http/body.py (Content-Length, chunked) and the
framing rules of http/request.py's BodyRequestParser. Every body is fed
whole, byte by byte, and split at every offset, and must read the same."""

from __future__ import annotations

import pytest

from reactor.http.body import MAX_CHUNK_LINE, MAX_TRAILERS, BodyReader
from reactor.http.request import (
    ENDPOINT_METHODS,
    BodyRequestParser,
    HttpError,
    RequestParser,
    body_framing,
)

NEXT = b"GET /next HTTP/1.1\r\n"  # a pipelined request after the body: never consumed


def read(data: bytes, length: int | None, chunked: bool, max_size: int = 1 << 20, cuts=()):
    """(body, where the body ended) feeding ``data`` in pieces cut at ``cuts``."""
    reader = BodyReader(length, chunked, max_size)
    bounds = [0, *cuts, len(data)]
    buf = bytearray()
    pos = 0
    for start, stop in zip(bounds, bounds[1:], strict=False):
        buf += data[start:stop]
        pos = reader.feed(buf, pos, len(buf))
        if reader.done:
            return reader.body, pos
    return None, pos


def every_split(data: bytes, length: int | None, chunked: bool, **kw):
    """The same outcome whole, byte by byte and split at every offset."""
    whole = read(data, length, chunked, **kw)
    assert read(data, length, chunked, cuts=range(1, len(data)), **kw) == whole
    for cut in range(1, len(data)):
        assert read(data, length, chunked, cuts=(cut,), **kw) == whole, cut
    return whole


def test_content_length_body_stops_at_its_length():
    body, end = every_split(b"hello" + NEXT, 5, False)
    assert (body, end) == (b"hello", 5)


def test_content_length_zero_is_done_at_once():
    reader = BodyReader(0, False, 10)
    assert reader.done and reader.body == b"" and reader.feed(NEXT, 0, len(NEXT)) == 0


def test_chunked_body_with_extensions_and_trailers():
    data = (
        b"5;name=value;x\r\nhello\r\n1A ; ext\r\n"
        + b"z" * 26
        + b"\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n"
    )
    body, end = every_split(data + NEXT, None, True)
    assert body == b"hello" + b"z" * 26 and end == len(data)


def test_chunked_accepts_bare_lf_and_leading_zeros_and_upper_hex():
    data = b"000a\nabcdefghij\n0000\n\n"
    assert every_split(data + NEXT, None, True) == (b"abcdefghij", len(data))
    assert read(b"F\r\n" + b"x" * 15 + b"\r\n0\r\n\r\n", None, True)[0] == b"x" * 15


def test_an_incomplete_chunked_body_is_not_done():
    assert read(b"5\r\nhel", None, True) == (None, 6)
    assert read(b"5\r\nhello\r\n0\r\n", None, True)[0] is None  # the final blank line is missing


def status_of(data: bytes, length=None, chunked=True, max_size=1 << 20) -> int:
    with pytest.raises(HttpError) as raised:
        read(data, length, chunked, max_size)
    for cut in range(1, len(data)):  # any split: the same verdict
        with pytest.raises(HttpError) as again:
            read(data, length, chunked, max_size, cuts=(cut,))
        assert again.value.status == raised.value.status
    return raised.value.status


@pytest.mark.parametrize(
    "data",
    [
        b"x\r\n",  # not hex
        b"-5\r\nhello\r\n",  # a sign
        b"0x5\r\nhello\r\n",  # a prefix
        b"\r\n",  # no size at all
        b";ext\r\n",  # extension without a size
        b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
        b"5\r\nhello\rX",  # CR then not LF
        b"5\r\r\nhello\r\n",  # a bare CR in the size line
        b" 5\r\nhello\r\n",  # whitespace before the size
    ],
)
def test_malformed_chunks_are_400(data):
    assert status_of(data) == 400


def test_a_chunk_size_line_over_the_limit_is_400():
    assert status_of(b"5;" + b"e" * MAX_CHUNK_LINE + b"\r\n") == 400


def test_trailers_over_the_limit_are_431():
    trailer = b"X: " + b"v" * 100 + b"\r\n"
    data = b"0\r\n" + trailer * (MAX_TRAILERS // len(trailer) + 1) + b"\r\n"
    assert status_of(data) == 431


def test_bodies_over_max_size_are_413_before_they_are_read():
    with pytest.raises(HttpError) as raised:
        BodyReader(11, False, 10)  # Content-Length over the limit: before any byte
    assert raised.value.status == 413
    assert status_of(b"6\r\nhello!\r\n5\r\nworld\r\n", max_size=10) == 413
    # a size past 2**63 (overflow) is only "too large", never a wrapped small number
    assert status_of(b"1" + b"0" * 16 + b"\r\n") == 413
    assert status_of(b"f" * 40 + b"\r\n") == 413
    assert (
        read(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", None, True, max_size=10)[0] == b"helloworld"
    )


# ---- framing in the head (BodyRequestParser, body_framing) -------------------------


def head(*fields: str, method: str = "POST", version: str = "1.1") -> bytes:
    lines = [f"{method} /x HTTP/{version}", "Host: h", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def framing(data: bytes):
    request, _ = BodyRequestParser().parse(data)
    return body_framing(request)


@pytest.mark.parametrize("method", ENDPOINT_METHODS)
def test_the_endpoint_parser_accepts_the_endpoint_methods(method):
    request, _ = BodyRequestParser().parse(head(method=method))
    assert request.method == method


def test_framing_of_length_chunked_and_none():
    assert framing(head("Content-Length: 12")) == (12, False)
    assert framing(head("Transfer-Encoding: chunked")) == (None, True)
    assert framing(head("Transfer-Encoding: Chunked")) == (None, True)
    assert framing(head()) == (None, False)


@pytest.mark.parametrize(
    ("fields", "version", "status"),
    [
        (("Content-Length: 5", "Transfer-Encoding: chunked"), "1.1", 400),  # smuggling
        (("Transfer-Encoding: chunked",), "1.0", 400),  # chunked on HTTP/1.0
        (("Content-Length: 5", "Content-Length: 5"), "1.1", 400),  # duplicate
        (("Content-Length: 5, 5",), "1.1", 400),  # duplicate in one line
        (("Content-Length: 5", "Content-Length: 6"), "1.1", 400),
        (("Content-Length: -1",), "1.1", 400),
        (("Transfer-Encoding: chunked, gzip",), "1.1", 400),  # chunked not final
        (("Transfer-Encoding: gzip, chunked",), "1.1", 501),  # a coding we do not implement
        (("Transfer-Encoding: ",), "1.1", 400),
    ],
)
def test_untrustworthy_framing_is_refused(fields, version, status):
    with pytest.raises(HttpError) as raised:
        BodyRequestParser().parse(head(*fields, version=version))
    assert raised.value.status == status


def test_other_methods_are_405_naming_the_endpoint_methods():
    with pytest.raises(HttpError) as raised:
        BodyRequestParser().parse(head(method="TRACE"))
    assert raised.value.status == 405
    assert raised.value.headers == (("Allow", ", ".join(ENDPOINT_METHODS)),)


def test_the_static_parser_still_refuses_methods_and_bodies():
    for data, status in (
        (head(method="POST"), 405),
        (head("Content-Length: 5", method="GET"), 413),
    ):
        with pytest.raises(HttpError) as raised:
            RequestParser().parse(data)
        assert raised.value.status == status
