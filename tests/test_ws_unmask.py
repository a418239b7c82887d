"""RFC 6455 §5.3 unmasking: the compiled routine and the Python fallback face
the same tests (RFC vector, every phase, lengths 0..70, misaligned starts,
payloads split across reads)."""

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor.ws import native
from reactor.ws import unmask as um

RFC_MASKED_HELLO = bytes.fromhex("818537fa213d7f9f4d5158")  # RFC 6455 §5.7
RFC_KEY = bytes.fromhex("37fa213d")


def reference(data: bytes, key: bytes, phase: int) -> bytes:
    return bytes(b ^ key[(phase + i) % 4] for i, b in enumerate(data))


def unmask_c(buf, key, phase=0):
    native.use("c")
    return um.unmask(buf, key, phase)


def unmask_python_selected(buf, key, phase=0):
    """The public entry point with the fallback selected (a missing build)."""
    native.use("python")
    try:
        return um.unmask(buf, key, phase)
    finally:
        native.use("c")


IMPLS = {
    "c": unmask_c,
    "python": um.unmask_python,
    "python-selected": unmask_python_selected,
}


@pytest.fixture(params=sorted(IMPLS))
def impl(request):
    return IMPLS[request.param]


def test_test_environment_runs_the_compiled_routine():
    assert native.active == "c"
    from reactor.ws import _speedups  # noqa: F401  (the build exists)


def test_rfc_masked_hello(impl):
    frame = bytearray(RFC_MASKED_HELLO)
    payload = memoryview(frame)[6:]
    assert impl(payload, RFC_KEY) == 1  # 5 bytes from phase 0 -> next phase 1
    assert bytes(payload) == b"Hello"
    assert frame[:6] == RFC_MASKED_HELLO[:6]


def test_key_as_int_or_bytes(impl):
    a = bytearray(RFC_MASKED_HELLO[6:])
    b = bytearray(RFC_MASKED_HELLO[6:])
    impl(a, RFC_KEY)
    impl(b, int.from_bytes(RFC_KEY, "big"))
    assert a == b == bytearray(b"Hello")


@pytest.mark.parametrize("phase", range(4))
@pytest.mark.parametrize("offset", range(8))
def test_every_length_phase_and_misaligned_start(impl, phase, offset):
    key = bytes.fromhex("a1b2c3d4")
    for length in range(71):
        data = bytes((i * 37 + length) & 0xFF for i in range(length))
        buf = bytearray(b"\xee" * offset + data + b"\xee" * 8)
        window = memoryview(buf)[offset : offset + length]
        assert impl(window, key, phase) == (phase + length) % 4
        assert bytes(window) == reference(data, key, phase)
        assert buf[:offset] == b"\xee" * offset  # nothing outside the window
        assert buf[offset + length :] == b"\xee" * 8


def test_phase_above_three_wraps(impl):
    a, b = bytearray(b"abcdefg"), bytearray(b"abcdefg")
    impl(a, RFC_KEY, 6)
    impl(b, RFC_KEY, 2)
    assert a == b


def test_involution(impl):
    data = bytes(range(256)) * 3
    buf = bytearray(data)
    impl(buf, RFC_KEY, 3)
    assert buf != data
    impl(buf, RFC_KEY, 3)
    assert buf == data


@pytest.mark.parametrize("size", [4096, 65536, 1 << 20])
def test_large_buffers_match_reference(impl, size):
    data = bytes((i * 7) & 0xFF for i in range(size))
    buf = bytearray(data)
    impl(buf, RFC_KEY, 1)
    expected = int.from_bytes(data, "little") ^ int.from_bytes(
        (RFC_KEY[1:] + RFC_KEY[:1]) * (size // 4), "little"
    )
    assert buf == expected.to_bytes(size, "little")


def test_read_only_buffer_is_refused(impl):
    with pytest.raises((TypeError, BufferError)):
        impl(b"Hello", RFC_KEY)


@pytest.mark.parametrize("bad", [b"abc", b"abcde", -1, 1 << 32])
def test_invalid_key(impl, bad):
    with pytest.raises(ValueError):
        impl(bytearray(4), bad)


@settings(deadline=None)  # no timing limits in tests (machines are shared)
@given(
    data=st.binary(max_size=300),
    key=st.binary(min_size=4, max_size=4),
    phase=st.integers(0, 3),
    cuts=st.lists(st.integers(0, 300), max_size=6),
)
def test_split_payload_keeps_the_key_rotation(data, key, phase, cuts):
    """A payload unmasked piece by piece, chaining the returned phase, equals
    the payload unmasked at once: for both implementations."""
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for name in ("c", "python"):
        buf = bytearray(data)
        p = phase
        for lo, hi in pairwise(bounds):
            p = IMPLS[name](memoryview(buf)[lo:hi], key, p)
        assert p == (phase + len(data)) % 4
        assert bytes(buf) == reference(data, key, phase), name


@settings(deadline=None)  # no timing limits in tests (machines are shared)
@given(data=st.binary(max_size=200), key=st.integers(0, 0xFFFFFFFF), start=st.integers(0, 200))
def test_window_range_unmask(data, key, start):
    """The hot path's (pointer, start, end) entry point, both ways."""
    start = min(start, len(data))
    expected = data[:start] + reference(data[start:], key.to_bytes(4, "big"), 2)
    for name in ("c", "python"):
        native.use(name)
        try:
            buf = bytearray(data)
            window = um.Window(buf, cached=False)
            assert window.unmask(start, len(data), key, 2) == (2 + len(data) - start) % 4
            window.release()
            assert bytes(buf) == expected
        finally:
            native.use("c")


def test_window_cache_reuses_the_pointer_for_the_same_bytearray():
    buf = bytearray(64)
    first = um.window(buf)
    assert um.window(buf) is first
    assert first.cached and first.data is buf
    assert um.window(bytearray(8)) is not first
    del first  # replaced in the cache and unreferenced: its export is gone
    buf.extend(b"x")
    um.window(buf)
    um.forget_cached_window()
    buf.extend(b"x")  # released: resizable again


def test_window_of_a_memoryview_is_a_private_copy_without_exports():
    buf = bytearray(b"\x01\x02\x03\x04" * 4)
    view = memoryview(buf)[0:8]
    window = um.window(view)
    assert not window.cached and len(window.data) == 8
    window.unmask(0, 8, 0x01020304, 0)
    assert window.data == bytes(8)
    view.release()  # would raise BufferError if the window exported it
    buf.extend(b"x")  # and the bytearray can be resized again
    assert buf[:4] == b"\x01\x02\x03\x04"


def test_window_of_read_only_bytes_is_a_private_copy():
    data = b"\x01\x02\x03\x04"
    window = um.window(data)
    window.unmask(0, 4, 0x01020304, 0)
    assert bytes(window.view) == b"\x00\x00\x00\x00"
    assert data == b"\x01\x02\x03\x04"
    window.release()
