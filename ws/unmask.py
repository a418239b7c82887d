"""RFC 6455 §5.3 payload unmasking, in place, with a key phase.

A client masks every payload byte ``i`` with ``key[i % 4]``. When a payload
arrives split across reads, each piece must continue the key rotation where
the previous one stopped: that position is the *phase* (0..3), which
``unmask`` takes and returns.

Two implementations share one contract and one test suite:

- ``"c"``: the compiled C routine of ``reactor.ws._speedups`` (16 bytes per
  step, see ws/csrc/unmask.c), working directly on the caller's buffer;
- ``"python"``: a fallback for a missing build that XORs the whole window as
  one big integer (``int.from_bytes``), 30-100x slower but still linear.

``reactor.ws.native`` decides which one runs (``native.active``, switched
with ``native.use``). The glue says which at start.

The receive hot path avoids the ~0.3-0.5 us cost of ``ffi.from_buffer`` per
read: ``window(buf)`` returns a ``Window`` (C pointer + views) cached for the
last bytearray seen, since the reactor reads into one long-lived buffer.
"""

from __future__ import annotations

from typing import Any

from . import native

_ffi: Any = None  # native.ffi / native.lib while C runs, else None (see _rebind)
_lib: Any = None

Buffer = bytes | bytearray | memoryview  # any 1-D bytes-like object

KEY_LENGTH = 4  # RFC 6455 §5.2: the masking key is 32 bits


def key_to_int(key: int | Buffer) -> int:
    """The masking key as an int holding its 4 wire bytes big-endian."""
    if isinstance(key, int):
        if not 0 <= key <= 0xFFFFFFFF:
            raise ValueError("masking key must fit in 32 bits")
        return key
    key = bytes(key)
    if len(key) != KEY_LENGTH:
        raise ValueError("masking key must be 4 bytes")
    return int.from_bytes(key, "big")


def unmask(buf: Buffer, key: int | Buffer, phase: int = 0) -> int:
    """XOR the writable buffer ``buf`` with ``key`` in place, starting at key
    byte ``phase``; return the phase for the byte that follows ``buf``.
    Masking and unmasking are the same operation."""
    key_be = key_to_int(key)
    if _lib is None:
        return unmask_python(buf, key_be, phase)
    with _ffi.from_buffer(buf, require_writable=True) as ptr:
        return _lib.ws_unmask(ptr, len(ptr), key_be, phase & 3)


def unmask_python(buf: Buffer, key: int | Buffer, phase: int = 0) -> int:
    """The pure-Python implementation (public so both face the same tests)."""
    view = memoryview(buf).cast("B")
    if view.readonly:
        raise TypeError("unmask needs a writable buffer")
    _xor_python(view, key_to_int(key), phase & 3)
    return (phase + len(view)) & 3


def _xor_python(view: memoryview, key_be: int, phase: int) -> None:
    size = len(view)
    if size == 0:
        return
    rotated = key_be.to_bytes(4, "big")[phase:] + key_be.to_bytes(4, "big")[:phase]
    stream = rotated * (size // 4 + 1)
    data = int.from_bytes(view, "little") ^ int.from_bytes(stream[:size], "little")
    view[:] = data.to_bytes(size, "little")


class Window:
    """A bytearray prepared for the C routines: ``ptr`` is the cffi pointer
    to its first byte (None on the Python fallback) and ``view`` a byte
    memoryview over it. Slicing ``data`` (the bytearray) is the fastest way
    to copy a payload out: ``data[a:b].decode()`` beats ``str(view[a:b])``."""

    __slots__ = ("data", "ptr", "view", "cached", "scan_out")

    def __init__(self, data: bytearray, cached: bool) -> None:
        self.data = data
        self.view = memoryview(data)
        self.cached = cached
        self.scan_out = None  # the frame scanner's descriptor array (ws/frames.py)
        self.ptr = None
        if _ffi is not None:
            self.ptr = _ffi.from_buffer(data, require_writable=True)

    def release(self) -> None:
        """Drop the buffer exports now, so the bytearray may be resized."""
        if self.ptr is not None:
            native.ffi.release(self.ptr)
        self.view.release()

    def unmask(self, start: int, end: int, key_be: int, phase: int) -> int:
        """Unmask ``[start, end)`` of this buffer in place; return the next phase."""
        if self.ptr is None:
            _xor_python(self.view[start:end], key_be, phase & 3)
            return (phase + end - start) & 3
        return native.lib.ws_unmask_range(self.ptr, start, end, key_be, phase & 3)


# The reactor reads into ONE bytearray for its whole life, so one cached entry
# hits on every read. The cache keeps that bytearray exported (it cannot be
# resized while cached): fine for a buffer that never changes size; call
# forget_cached_window() before resizing one. Threads: each reactor thread
# reads into its own bytearray, hence its own Window and scratch memory; the
# one-entry cache then just misses more often.
_cached: Window | None = None


def window(buf: Buffer) -> Window:
    """A ``Window`` for ``buf``. A bytearray is used in place and cached (pass
    the same long-lived bytearray every time: the reactor's receive buffer);
    any other buffer (memoryview, bytes) is copied whole into a private
    bytearray, so offsets stay valid and the caller's buffer is never
    exported (the reactor may release its per-read memoryview at once)."""
    global _cached
    cached = _cached
    if cached is not None and cached.data is buf:
        return cached
    if type(buf) is not bytearray:
        return Window(bytearray(buf), cached=False)
    # No release() of the previous entry: a caller up the stack may still be
    # using it; dropping the reference frees it as soon as nobody does.
    _cached = Window(buf, cached=True)
    return _cached


def _rebind(implementation: str) -> None:
    global _ffi, _lib
    _ffi, _lib = (native.ffi, native.lib) if implementation == "c" else (None, None)
    forget_cached_window()  # its pointer belongs to the other implementation


def forget_cached_window() -> None:
    """Release the cached buffer (e.g. before resizing it)."""
    global _cached
    if _cached is not None:
        _cached.release()
        _cached = None


native.on_switch(_rebind)
