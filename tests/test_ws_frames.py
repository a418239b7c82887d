"""RFC 6455 §5 framing: parse_frame (Python reference), the one-call C
scanner and its Python twin (held to identical output), serialization."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor.ws import frames as fr
from reactor.ws import native
from reactor.ws import unmask as um

KEY = bytes.fromhex("37fa213d")
RFC_MASKED_HELLO = bytes.fromhex("818537fa213d7f9f4d5158")  # RFC 6455 §5.7
BIG = fr.MAX_PAYLOAD_LENGTH


def masked(opcode, payload=b"", fin=True, key=KEY):
    return fr.serialize_masked_frame(opcode, payload, key, fin)


def raw_frame(b0, length, payload=b"", *, mask=True, form=None, key=KEY):
    """A frame built by hand: any first byte, any length form (7/16/64)."""
    form = form or (7 if length < 126 else 16 if length < 65536 else 64)
    mask_bit = 0x80 if mask else 0
    if form == 7:
        head = bytes((b0, mask_bit | length))
    elif form == 16:
        head = struct.pack("!BBH", b0, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, length)
    if not mask:
        return head + payload
    body = bytearray(payload)
    um.unmask(body, key)
    return head + key + body


def scan_c(data, start=0, end=None, max_size=BIG):
    native.use("c")
    buf = bytearray(data)
    window = um.Window(buf, cached=False)
    end = len(buf) if end is None else end
    out = fr.scan_window_c(window, start, end, max_size)
    window.release()
    return out, bytes(buf)


def scan_py(data, start=0, end=None, max_size=BIG):
    buf = bytearray(data)
    window = um.Window(buf, cached=False)
    end = len(buf) if end is None else end
    out = fr.scan_window_python(window, start, end, max_size)
    window.release()
    return out, bytes(buf)


SCANNERS = {"c": scan_c, "python": scan_py}


@pytest.fixture(params=sorted(SCANNERS))
def scan(request):
    return SCANNERS[request.param]


def parse_error(data, max_size=BIG):
    with pytest.raises(fr.ProtocolError) as info:
        fr.parse_frame(bytearray(data), max_size=max_size)
    return info.value.close_code


# ---- parse_frame --------------------------------------------------------


def test_rfc_masked_hello():
    frame, pos = fr.parse_frame(RFC_MASKED_HELLO)
    assert (frame.opcode, frame.fin, bytes(frame.payload), pos) == (fr.OP_TEXT, True, b"Hello", 11)


def test_parse_frame_unmasks_in_place_when_writable():
    buf = bytearray(RFC_MASKED_HELLO)
    frame, _ = fr.parse_frame(buf)
    assert buf[6:] == b"Hello"
    assert frame.payload.obj is buf


def test_parse_frame_copies_when_read_only():
    data = bytes(RFC_MASKED_HELLO)
    frame, _ = fr.parse_frame(data)
    assert bytes(frame.payload) == b"Hello"
    assert data == RFC_MASKED_HELLO


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_all_three_length_encodings(length):
    payload = bytes(i & 0xFF for i in range(length))
    data = masked(fr.OP_BINARY, payload) + b"tail"
    frame, pos = fr.parse_frame(bytearray(data))
    assert bytes(frame.payload) == payload
    assert pos == len(data) - 4
    header_size = 6 if length < 126 else 8 if length < 65536 else 14
    assert pos == header_size + length


@pytest.mark.parametrize("form", [16, 64])
def test_non_minimal_length_encodings_are_tolerated(form, scan):
    data = raw_frame(0x82, 5, b"abcde", form=form)
    frame, pos = fr.parse_frame(bytearray(data))
    assert bytes(frame.payload) == b"abcde" and pos == len(data)
    descriptors, _ = scan(data)
    assert descriptors == [0x82, len(data) - 5, len(data)]


def test_every_prefix_is_incomplete_and_consumes_nothing():
    data = masked(fr.OP_TEXT, b"x" * 300)
    for cut in range(len(data)):
        buf = bytearray(data[:cut])
        assert fr.parse_frame(buf) == (None, 0)
        assert buf == data[:cut]  # nothing unmasked either


def test_parse_at_an_offset():
    data = b"junk" + RFC_MASKED_HELLO + RFC_MASKED_HELLO
    frame, pos = fr.parse_frame(bytearray(data), 4)
    assert bytes(frame.payload) == b"Hello" and pos == 15
    frame, pos = fr.parse_frame(bytearray(data), 15)
    assert bytes(frame.payload) == b"Hello" and pos == 26
    assert fr.parse_frame(bytearray(data), 26) == (None, 26)
    for bad in (-1, 27):
        with pytest.raises(ValueError):
            fr.parse_frame(bytearray(data), bad)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (raw_frame(0x81 | 0x40, 1, b"a"), 1002),  # RSV1 (no extension negotiated)
        (raw_frame(0x81 | 0x20, 1, b"a"), 1002),  # RSV2
        (raw_frame(0x81 | 0x10, 1, b"a"), 1002),  # RSV3
        *((raw_frame(0x80 | op, 0), 1002) for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)),
        (raw_frame(0x09, 0), 1002),  # ping without FIN: fragmented control frame
        (raw_frame(0x08, 0), 1002),  # close without FIN
        (raw_frame(0x89, 126, b"p" * 126), 1002),  # control payload > 125 (16-bit form)
        (raw_frame(0x89, 5, b"hello", form=64), 1002),  # control with a 64-bit length code
        (raw_frame(0x81, 5, b"Hello", mask=False), 1002),  # unmasked client frame
        (raw_frame(0x82, 1 << 63), 1002),  # 64-bit length with the MSB set
        (raw_frame(0x82, (1 << 64) - 1), 1002),
    ],
)
def test_violations_and_their_close_codes(data, code, scan):
    assert parse_error(data) == code
    descriptors, _ = scan(data)
    assert descriptors[0] < 0 and fr.HEADER_ERRORS[-descriptors[0]][0] == code
    assert descriptors[1:] == [0, 0]


def test_max_size_is_checked_from_the_header(scan):
    header_only = raw_frame(0x82, 1001)[:8]  # the payload never arrives
    assert parse_error(header_only, max_size=1000) == 1009
    descriptors, _ = scan(header_only, max_size=1000)
    assert fr.HEADER_ERRORS[-descriptors[0]] == (1009, "message too big")
    frame, _ = fr.parse_frame(bytearray(raw_frame(0x82, 1000, b"x" * 1000)), max_size=1000)
    assert len(frame.payload) == 1000  # exactly the limit is allowed


def test_violations_are_reported_from_the_first_bytes_that_prove_them(scan):
    assert scan(bytes((0xC1,)))[0][0] == -1  # RSV1: the first byte is enough
    assert scan(bytes((0x83,)))[0][0] == -2  # reserved opcode
    assert scan(bytes((0x09,)))[0][0] == -3  # ping without FIN
    assert scan(bytes((0x81, 0x05)))[0][0] == -4  # unmasked: two bytes
    assert scan(bytes((0x89, 0xFE)))[0][0] == -5  # control over 125
    assert scan(struct.pack("!BBQ", 0x82, 0xFF, 1 << 63))[0][0] == -6
    assert scan(struct.pack("!BBH", 0x82, 0xFE, 70), max_size=69)[0][0] == -7
    # ...but not before: an incomplete yet valid prefix is just incomplete.
    assert scan(bytes((0x81,)))[0] == []
    assert scan(struct.pack("!BBQ", 0x82, 0xFF, 1 << 63)[:9])[0] == []


def test_valid_frames_before_a_violation_are_reported(scan):
    data = masked(fr.OP_TEXT, b"one") + masked(fr.OP_PING, b"p") + raw_frame(0xC1, 0)
    descriptors, buf = scan(data)
    assert descriptors[:6] == [0x81, 6, 9, 0x89, 15, 16]
    assert descriptors[6:] == [-1, 16, 16]
    assert buf[6:9] == b"one" and buf[15:16] == b"p"


# ---- the scanner -------------------------------------------------------------


def test_scan_describes_every_complete_frame_and_stops_at_an_incomplete_one(scan):
    data = RFC_MASKED_HELLO * 3 + RFC_MASKED_HELLO[:7]
    descriptors, buf = scan(data)
    assert descriptors == [0x81, 6, 11, 0x81, 17, 22, 0x81, 28, 33]
    assert buf[:33] == (b"\x81\x85" + KEY + b"Hello") * 3
    assert buf[33:] == RFC_MASKED_HELLO[:7]  # the incomplete frame is untouched


def test_scan_respects_the_window_bounds(scan):
    """Bytes outside [start, end) are never read as frames nor modified."""
    data = b"\xc1" * 5 + RFC_MASKED_HELLO * 2 + b"\xc1" * 5
    descriptors, buf = scan(data, 5, 5 + 22)
    assert descriptors == [0x81, 11, 16, 0x81, 22, 27]
    assert buf[:5] == b"\xc1" * 5 and buf[27:] == b"\xc1" * 5
    descriptors, buf = scan(data, 5, 5 + 21)  # the second frame is cut by `end`
    assert descriptors == [0x81, 11, 16]
    assert buf[16:] == data[16:]


def test_scan_capacity_and_resume(scan):
    data = masked(fr.OP_BINARY, b"ab") * (fr.SCAN_CAPACITY + 5)
    first, _ = scan(data)
    assert len(first) == fr.SCAN_CAPACITY * 3
    rest, _ = scan(data, first[-1])
    assert len(rest) == 5 * 3


def test_huge_declared_length_never_overflows(scan):
    """A length near 2**63 against a small window: incomplete, not a wrap."""
    data = raw_frame(0x82, BIG)[:14] + b"x" * 50
    assert scan(data)[0] == []
    assert scan(data, max_size=BIG)[0] == []


def test_scan_frames_public_entry_point():
    buf = bytearray(b"xx" + RFC_MASKED_HELLO)
    assert fr.scan_frames(buf, 2, max_size=100) == [0x81, 8, 13]
    assert buf[8:] == b"Hello"
    with pytest.raises(ValueError):
        fr.scan_frames(buf, 0, len(buf) + 1, max_size=100)
    with pytest.raises(ValueError):
        fr.scan_frames(buf, 5, 4, max_size=100)
    um.forget_cached_window()


def test_scan_frames_does_not_keep_a_memoryview_exported():
    buf = bytearray(RFC_MASKED_HELLO)
    view = memoryview(buf)
    assert fr.scan_frames(view, max_size=100) == [0x81, 6, 11]
    view.release()
    assert buf == RFC_MASKED_HELLO  # worked on a private copy


# A frame "alphabet" for the property tests: valid frames of every kind and
# length form, and every kind of violation.
frame_bytes = st.one_of(
    st.builds(
        lambda op, fin, p, k: masked(op, p, fin, k),
        st.sampled_from([0, 1, 2]),
        st.booleans(),
        st.binary(max_size=300),
        st.binary(min_size=4, max_size=4),
    ),
    st.builds(
        lambda op, p, k: masked(op, p, True, k),
        st.sampled_from([8, 9, 10]),
        st.binary(max_size=125),
        st.binary(min_size=4, max_size=4),
    ),
    st.builds(
        lambda b0, n, form: raw_frame(b0, n, b"z" * n, form=form),
        st.integers(0, 255),
        st.integers(0, 130),
        st.sampled_from([7, 16, 64]),
    ),
    st.builds(lambda b0, b1: bytes((b0, b1)), st.integers(0, 255), st.integers(0, 255)),
    st.binary(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(frame_bytes, max_size=12),
    cut=st.integers(0, 5000),
    max_size=st.sampled_from([BIG, 200, 125, 0]),
)
def test_c_and_python_scanners_agree(parts, cut, max_size):
    data = b"".join(parts)
    end = min(cut, len(data))
    c_out, c_buf = scan_c(data, 0, end, max_size)
    py_out, py_buf = scan_py(data, 0, end, max_size)
    assert c_out == py_out
    assert c_buf == py_buf  # identical in-place unmasking, nothing past `end`
    assert c_buf[end:] == data[end:]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(frame_bytes, max_size=10), max_size=st.sampled_from([BIG, 200]))
def test_scanner_matches_repeated_parse_frame(parts, max_size):
    """The descriptors are exactly what parse_frame yields frame by frame."""
    data = b"".join(parts)
    descriptors, unmasked = scan_c(data, max_size=max_size)
    buf, pos, expected = bytearray(data), 0, []
    while True:
        try:
            frame, nxt = fr.parse_frame(buf, pos, max_size=max_size)
        except fr.FrameHeaderError as exc:
            expected += [-exc.number, pos, pos]
            break
        if frame is None:
            break
        expected += [frame.opcode | (0x80 if frame.fin else 0), nxt - len(frame.payload), nxt]
        pos = nxt
    assert descriptors == expected
    assert unmasked == bytes(buf)


# ---- writing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_serialize_frame_headers(length, header):
    frame = fr.serialize_frame(fr.OP_BINARY, b"x" * length)
    assert frame == header + b"x" * length
    assert fr.frame_header(fr.OP_BINARY, length) == header


def test_serialize_unmasked_text_and_fin_flag():
    assert fr.serialize_frame(fr.OP_TEXT, b"Hello") == b"\x81\x05Hello"  # RFC §5.7
    assert fr.serialize_frame(fr.OP_TEXT, b"Hel", fin=False) == b"\x01\x03Hel"
    assert fr.serialize_frame(fr.OP_CONTINUATION, b"lo") == b"\x80\x02lo"
    assert fr.serialize_frame(fr.OP_PONG, memoryview(b"x")) == b"\x8a\x01x"


def test_serialize_masked_matches_rfc_example():
    assert fr.serialize_masked_frame(fr.OP_TEXT, b"Hello", KEY) == RFC_MASKED_HELLO


@given(
    opcode=st.sampled_from([0, 1, 2]),
    fin=st.booleans(),
    payload=st.binary(max_size=70000),
    key=st.binary(min_size=4, max_size=4),
)
@settings(max_examples=60, deadline=None)
def test_round_trip(opcode, fin, payload, key):
    data = fr.serialize_masked_frame(opcode, payload, key, fin)
    frame, pos = fr.parse_frame(bytearray(data))
    assert (frame.opcode, frame.fin, bytes(frame.payload), pos) == (opcode, fin, payload, len(data))
    unmasked = fr.serialize_frame(opcode, payload, fin)
    assert unmasked[len(unmasked) - len(payload) :] == payload
    assert unmasked[0] == opcode | (0x80 if fin else 0)


# ---- close payloads (§5.5.1, §7.4) ---------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes(code):
    assert fr.parse_close_payload(code.to_bytes(2, "big") + "é".encode()) == (code, "é")
    assert fr.close_payload(code, "é") == code.to_bytes(2, "big") + "é".encode()


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes(code):
    with pytest.raises(fr.ProtocolError) as info:
        fr.parse_close_payload(code.to_bytes(2, "big"))
    assert info.value.close_code == 1002
    with pytest.raises(ValueError):
        fr.close_payload(code)


def test_close_payload_structure():
    assert fr.parse_close_payload(b"") == (1005, "")
    with pytest.raises(fr.ProtocolError) as info:
        fr.parse_close_payload(b"\x03")
    assert info.value.close_code == 1002
    with pytest.raises(fr.ProtocolError) as info:
        fr.parse_close_payload(b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")
    assert info.value.close_code == 1007
    assert fr.close_payload(None) == b""
    assert len(fr.close_payload(1000, "r" * 123)) == 125
    with pytest.raises(ValueError):
        fr.close_payload(1000, "r" * 124)
    with pytest.raises(ValueError):
        fr.close_payload(None, "reason without a code")
