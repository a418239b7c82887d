"""The epoll reactor: the C design's ``qsreactor`` in Python.

epoll facts this module relies on:
- Level-triggered. An fd whose data we leave unread reports again on the next
  poll, so one read per readiness is enough and a paused reader loses nothing.
- ``epoll.poll(timeout, maxevents)``: the stdlib caps an unspecified maxevents
  at FD_SETSIZE - 1 (1023), so the batch size is always passed explicitly.
- EPOLLHUP and EPOLLERR are reported whatever mask is registered; a read or a
  write then surfaces the error, so they are routed to whichever is armed.
- Registration follows redis ``ae``: ``register`` when a connection's mask
  goes 0 -> non-zero, ``modify`` on a change, ``unregister`` back at 0, and no
  ``epoll_ctl`` at all when the mask is unchanged.

Per-fd state lives in event blocks (the C ``qseventblock``): a flat list
indexed by fd, grown 1024 slots at a time, so a lookup is one list index.
Slots are preallocated ``Connection`` objects reused for the fd's next owner.

Close order: unregister -> handler.on_close (I/O already disabled) -> clear
the slot -> close the fd. The fd number is released last, so nothing can reuse
it while its slot still holds the old connection. Within one poll batch a
closed fd can still be reused by an ``accept`` that runs earlier in the batch;
its stale event must not reach the new owner. A slot opened during the current
batch carries the FRESH mark (its generation is "this batch"); events for it
are skipped until the batch ends. That is the C design's generation check,
kept in a flag bit so it costs no memory per connection.

Output is written first and buffered only when the kernel refuses part of it;
EPOLLOUT is armed only while output is pending (or a handler asked for it).

Busy polling (``busy_poll``: the spin's length; 0 turns it off): after a
batch, keep calling ``poll(0)`` for up to that long before blocking. A
request/response peer's next message then finds the loop awake: no sleep and
wake-up (about 10 us on our machines, a third of a loopback round trip). The
spin backs off where it does not pay: after a spin that found nothing the
loop sleeps directly after the next 1, 2, 4, ... 64 batches before it spins
again, and a spin that finds events resets that. So a chatty peer keeps the
spin, while sparse traffic costs a spin's length every 64 batches in the long
run. (Timing the gaps instead misjudges them: a gap slept through includes
the wake-up that a spin would have saved.) An idle server never spins (the
spin follows events).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from fcntl import F_SETFL, fcntl
from os import O_NONBLOCK
from typing import Any

from .handler import Handler
from .native import Switch
from .timers import Timer, Timers

try:  # built by pip install (reactor/csrc); without it: os.write, one packet more per close
    from ._io import lib as _io_lib
except ImportError:  # pragma: no cover - no C compiler at install time
    _io_lib = None

log = logging.getLogger("reactor")
# Sends with MSG_MORE go through reactor/csrc/io.c while switch.active is "c"
# (built), through a borrowed socket object while it is "python" (one packet more
# per closing connection).
switch = Switch("reactor._io", lambda: _io_lib)
_send_more: Any = None  # kept on the C send by the switch while C runs
switch.bind(globals(), "_send_more", "rx_send_more")
use = switch.use  # tests compare the two


EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLL_FAULT = select.EPOLLHUP | select.EPOLLERR
READ_READY = EPOLLIN | EPOLL_FAULT  # faults surface through read() when reading is armed
WRITE_READY = EPOLLOUT | EPOLL_FAULT  # ... or through write() when only EPOLLOUT is

BLOCK_SIZE = 1024  # slots per event block, as the C design's qseventblock
RECV_BUFFER_SIZE = 256 * 1024  # one read: large enough to batch many small frames
MAX_EVENTS = 4096  # per poll; bounds the time before timers run again
MAX_BUSY_POLL = 0.01  # seconds: a longer spin is a busy server that never sleeps
SPIN_BACKOFF_MAX = 64  # batches slept through between spins at most, while they find nothing
ACCEPT_BATCH = 256  # accepts per listener wakeup: drains bursts without starving reads
DEFAULT_MAX_SEND_BUFFER = 4 * 1024 * 1024  # per-connection output bound before reads pause
EMFILE_RETRY_DELAY = 0.25  # seconds without accepting after running out of fds
LINGER_TIMEOUT = 2.0  # seconds a lingering close waits for the peer's FIN
IOV_MAX = os.sysconf("SC_IOV_MAX")  # writev takes at most this many buffers

# Connection.flags bits.
INTERNAL = 1  # a reactor-owned fd (listener, signal wakeup): conn.ctx.on_ready()
FRESH = 2  # opened during the current poll batch: ignore this batch's events
CLOSED = 4  # close() has run or is running: every call is a no-op
DEAD = 8  # I/O disabled: closed, or a write failed and the close is pending
PAUSED = 16  # the handler paused reading
BACKPRESSURE = 32  # reading paused because the output buffer is over its limit
CLOSE_AFTER_FLUSH = 64  # close (or linger) once the output buffer drains
LINGER_REQUESTED = 128  # close_after_flush(linger=True): linger once drained
LINGERING = 256  # output done and SHUT_WR sent; reading and discarding until EOF
WANT_WRITE = 512  # the handler wants on_writable when the socket accepts more
NEVER_IDLE = 1024  # a link the server itself keeps (broker): not closed by the idle sweep
CONNECTING = 2048  # an outbound connect in progress: EPOLLOUT completes it
LOW_WATER = 4096  # the handler wants on_writable once the output buffer is at most low_water
NO_READ = PAUSED | BACKPRESSURE | CLOSE_AFTER_FLUSH | CONNECTING
STALE = FRESH | DEAD  # events from this poll batch must not be delivered


class Connection:
    """One event slot (the C ``qsevent``), reused by successive owners of an fd.

    Deliberately small: an idle connection costs this object and nothing else
    (no dict, no socket object, no buffer). ``last_active`` holds the
    reactor's whole-second clock; all connections active within the same
    second share one int object.
    """

    __slots__ = ("fd", "mask", "flags", "handler", "ctx", "out", "last_active")
    reactor: Reactor  # set on the per-reactor subclass, so no per-slot field

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.mask = 0
        self.flags = 0
        self.handler: Handler | None = None
        self.ctx: Any = None
        self.out: bytearray | None = None
        self.last_active = 0

    def __repr__(self) -> str:
        return f"<Connection fd={self.fd} mask={self.mask:#x} flags={self.flags:#x}>"

    @property
    def closed(self) -> bool:
        """True once I/O is over: closed, closing, or failed."""
        return self.handler is None or bool(self.flags & DEAD)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send now; buffer whatever the kernel does not take. Never raises:
        a dead peer schedules this connection's close instead."""
        if self.out is not None or self.flags & DEAD or self.handler is None:
            self.reactor._queue(self, data)
            return
        try:  # the only write-first path: one call from the handler to the syscall
            sent = os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.reactor._schedule_close(self, exc)
            return
        if sent < len(data):
            self.reactor._buffer_rest(self, data, sent)

    def writev(self, parts: list[bytes]) -> None:
        """Send several buffers with one syscall (no copy into one buffer), in
        order, with the rules of ``write``. For large parts: joining small ones
        into one ``write`` is cheaper than an iovec each."""
        self.reactor._writev(self, parts)

    def write_more(self, data: bytes) -> None:
        """Send ``data`` that more will follow at once (e.g. a response head
        before a ``sendfile`` body), with the rules of ``write``: the kernel
        holds a segment that is not full (MSG_MORE) and sends it together with
        the first bytes that follow, instead of a lone small packet."""
        self.reactor._write_more(self, data)

    def write_and_close(self, data: bytes) -> None:
        """Send the last bytes, then close (as ``write`` + ``close_after_flush``).
        When the kernel takes them at once the FIN leaves in their segment: one
        packet less per connection. Only for bytes after which the peer owes
        nothing: input still unread at close() makes the kernel reset the
        connection, and a reset discards bytes still waiting to leave."""
        self.reactor._write_and_close(self, data)

    def sendfile(self, file_fd: int, offset: int, count: int) -> int | None:
        """Send a file region without copying it through Python.

        Returns the bytes sent (0 means end of file), or None when the socket
        cannot take more now (on_writable follows) or the connection failed.
        """
        return self.reactor._sendfile(self, file_fd, offset, count)

    def pending(self) -> int:
        out = self.out
        return len(out) if out else 0

    def want_writable(self) -> None:
        self.reactor._want_writable(self)

    def want_low_water(self) -> None:
        """Call on_writable once buffered output is down to ``reactor.low_water``
        (at once if it already is): a producer resumes before the buffer runs dry."""
        self.reactor._want_low_water(self)

    def pause_reading(self) -> None:
        self.reactor._set_flag(self, PAUSED)

    def resume_reading(self) -> None:
        self.reactor._clear_flag(self, PAUSED)

    def close(self) -> None:
        """Close now, dropping buffered output."""
        self.reactor.close(self)

    def exempt_from_idle_timeout(self) -> None:
        """Never close this connection for silence (a link between the
        server's own processes, silent while nothing is published)."""
        self.flags |= NEVER_IDLE

    def close_after_flush(self, linger: bool = False) -> None:
        """Stop reading; close once buffered output is sent. With ``linger``
        the write side is shut first and the peer's remaining input is read
        and discarded until its FIN (bounded), so an error response is not
        destroyed by a reset caused by unread request bytes."""
        self.reactor._close_after_flush(self, linger)

    def peer(self) -> Any:
        """The peer's address, looked up on demand (costs a syscall)."""
        sock = socket.socket(fileno=self.fd)
        try:
            return sock.getpeername()
        finally:
            sock.detach()


class Listener:
    """A listening socket and the handler its connections get."""

    __slots__ = ("sock", "handler", "paused")

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self.paused = False

    def on_ready(self, reactor: Reactor, conn: Connection) -> None:
        reactor._accept(conn)


class SignalWaker:
    """Turns SIGTERM/SIGINT into an epoll event (``signal.set_wakeup_fd``):
    the first asks for a graceful stop, a second one stops at once."""

    __slots__ = ("reader", "writer", "deadline")

    def __init__(self, deadline: float) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self.deadline = deadline

    def on_ready(self, reactor: Reactor, conn: Connection) -> None:
        try:
            signums = self.reader.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        for signum in signums:
            if reactor.stopping:
                log.warning("signal %d again: stopping now", signum)
                reactor.stop()
            else:
                log.info("signal %d: graceful stop (deadline %.1fs)", signum, self.deadline)
                reactor.shutdown(self.deadline)


class ThreadWaker:
    """The cross-thread entry: a queue of calls drained on the loop thread and
    one eventfd that wakes the loop (the reactor owns both).

    Batched: a caller writes the eventfd only when no wake-up is pending, so a
    burst of N calls costs one write and one read. ``armed`` is cleared on the
    loop thread BEFORE the queue is drained: a caller that appended and saw
    ``armed`` still set is drained by that same pass (appends and the flag are
    ordered by the GIL)."""

    __slots__ = ("fd", "calls", "armed", "lock")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.calls: deque[tuple[Callable[..., Any], tuple]] = deque()
        self.armed = False
        # Taken only around the wake-up write and the close, so a late caller
        # never writes to a number that close() freed and another file reused.
        self.lock = threading.Lock()

    def post(self, callback: Callable[..., Any], args: tuple) -> None:
        self.calls.append((callback, args))
        if not self.armed:
            self.armed = True
            with self.lock:
                if self.fd >= 0:  # else disposed: the loop is gone, the call is dropped
                    os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        with self.lock:
            os.close(self.fd)
            self.fd = -1

    def on_ready(self, reactor: Reactor, conn: Connection) -> None:
        try:
            os.eventfd_read(self.fd)
        except (BlockingIOError, InterruptedError):
            pass
        self.armed = False
        calls = self.calls
        for _ in range(len(calls)):  # calls posted meanwhile wait for the next wake-up
            callback, args = calls.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception("callback %r from another thread failed", callback)
            if reactor._doomed:
                reactor._reap_doomed()


class Reactor:
    """One epoll instance, its event blocks, timers and listeners."""

    _clock = time.monotonic  # the loop's and the timers' clock; spin-policy tests drive a fake one

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER,
        max_events: int = MAX_EVENTS,
        busy_poll: float = 0.0,
    ) -> None:
        if not 0.0 <= busy_poll <= MAX_BUSY_POLL:
            raise ValueError(f"busy_poll must be within 0..{MAX_BUSY_POLL} seconds")
        self._epoll = select.epoll()
        self._slot_type = type("Connection", (Connection,), {"__slots__": (), "reactor": self})
        self._table: list[Connection] = []
        self._fresh: list[Connection] = []
        self._timers = Timers()
        self._listeners: dict[int, Listener] = {}
        self.recv_buffer = bytearray(RECV_BUFFER_SIZE)
        self._recv_view = memoryview(self.recv_buffer)
        self._iov = [self.recv_buffer]
        self.max_connections = max_connections or _default_max_connections()
        self.idle_timeout = idle_timeout
        self.max_send_buffer = max_send_buffer
        # Flow-control marks for producers (see want_low_water): pause above
        # high_water, resume at low_water. Half the limit leaves room for what
        # is in flight when a producer checks; an eighth keeps the kernel's
        # buffer fed while the producer wakes up.
        self.high_water = max_send_buffer // 2
        self.low_water = max_send_buffer // 8
        self.max_events = max_events
        self.busy_poll = busy_poll  # seconds of non-blocking polls after a batch; 0: off
        self.connection_count = 0
        self.refused = 0
        self.accept_failures = 0  # EMFILE & co. since accepting last worked
        self.now = self._clock()
        self.tick = int(self.now)
        self._running = False
        self.stopping = False
        self._doomed: list[tuple[Connection, Handler | None, BaseException]] = []
        self.stopping_at: float | None = None  # monotonic time shutdown() began
        self.loop_thread = threading.get_ident()  # run() rebinds it: the thread running the loop
        self._waker = ThreadWaker()
        self._finishers: list[Callable[[float], Any]] = []  # see finish()
        self._add_internal(self._waker.fd, self._waker)
        if idle_timeout:
            self.call_every(max(0.5, min(idle_timeout / 4, 5.0)), self._sweep_idle)

    # ---- event blocks -------------------------------------------------

    def slot(self, fd: int) -> Connection:
        """The slot for ``fd``, growing the table by whole blocks as needed."""
        table = self._table
        if fd >= len(table):
            self._grow(fd)
        return table[fd]

    def _grow(self, fd: int) -> None:
        table, make = self._table, self._slot_type
        blocks_needed = fd // BLOCK_SIZE + 1
        while len(table) < blocks_needed * BLOCK_SIZE:
            start = len(table)
            table.extend(make(i) for i in range(start, start + BLOCK_SIZE))

    @property
    def block_count(self) -> int:
        return len(self._table) // BLOCK_SIZE

    def connections(self) -> Iterator[Connection]:
        """Every open connection (listeners excluded)."""
        for conn in self._table:
            if conn.handler is not None and not conn.flags & (INTERNAL | CLOSED):
                yield conn

    # ---- mask bookkeeping (redis ae style) ----------------------------

    def _update_mask(self, conn: Connection) -> None:
        flags = conn.flags
        if flags & DEAD:
            mask = 0
        else:
            mask = EPOLLIN if not flags & NO_READ or flags & LINGERING else 0
            if conn.out or flags & WANT_WRITE:
                mask |= EPOLLOUT
        old = conn.mask
        if mask == old:
            return
        if old == 0:
            self._epoll.register(conn.fd, mask)
        elif mask == 0:
            self._epoll.unregister(conn.fd)
        else:
            self._epoll.modify(conn.fd, mask)
        conn.mask = mask

    def _set_flag(self, conn: Connection, flag: int) -> None:
        if not conn.closed:
            conn.flags |= flag
            self._update_mask(conn)

    def _clear_flag(self, conn: Connection, flag: int) -> None:
        if conn.flags & flag and not conn.closed:
            conn.flags &= ~flag
            self._update_mask(conn)

    # ---- opening and closing ------------------------------------------

    def add_connection(self, fd: int, handler: Handler, peer: Any = None) -> Connection:
        """Adopt a connected, non-blocking socket fd (accepted or e.g. a socketpair)."""
        conn = self.slot(fd)
        if conn.handler is not None:
            raise RuntimeError(f"fd {fd} is already registered")
        conn.handler = handler
        conn.flags = FRESH
        conn.last_active = self.tick
        self._fresh.append(conn)
        self.connection_count += 1
        self._update_mask(conn)
        try:
            handler.on_open(conn, peer)
        except Exception as exc:  # only this connection pays, as for every callback
            self._handler_failed(conn, exc)
        return conn

    def close(self, conn: Connection, error: BaseException | None = None) -> None:
        """Close a connection now (idempotent)."""
        handler = conn.handler
        if handler is None or conn.flags & CLOSED:
            return
        conn.flags |= CLOSED | DEAD
        # No epoll_ctl(DEL): closing the fd removes it from the epoll set, as
        # nothing else refers to the socket (no dup, no fork after accept,
        # SOCK_CLOEXEC). I/O is already off (DEAD) for on_close, and the mask
        # bookkeeping restarts at 0 for the fd's next owner. One syscall less
        # per connection, measured on the handshake benchmark.
        conn.mask = 0
        try:
            handler.on_close(conn, error)
        except Exception:
            log.exception("handler on_close failed for fd %d", conn.fd)
        fd = conn.fd
        conn.handler = conn.ctx = conn.out = None
        conn.flags = conn.mask = 0
        self.connection_count -= 1
        try:
            os.close(fd)
        except OSError:
            pass  # nothing left to release; the fd number is free either way

    def _close_after_flush(self, conn: Connection, linger: bool) -> None:
        if conn.closed or conn.flags & CLOSE_AFTER_FLUSH:
            return
        conn.flags |= CLOSE_AFTER_FLUSH | (LINGER_REQUESTED if linger else 0)
        if conn.out:
            self._update_mask(conn)  # stop reading, keep EPOLLOUT until drained
        else:
            self._flushed_before_close(conn)

    def _flushed_before_close(self, conn: Connection) -> None:
        if not conn.flags & LINGER_REQUESTED:
            self.close(conn)
            return
        sock = socket.socket(fileno=conn.fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.close(conn, exc)
            return
        finally:
            sock.detach()
        conn.flags = (conn.flags | LINGERING) & ~(WANT_WRITE | LINGER_REQUESTED)
        self._update_mask(conn)
        self.call_later(LINGER_TIMEOUT, self._linger_expired, conn, conn.handler)

    def _linger_expired(self, conn: Connection, handler: Handler) -> None:
        # Same slot, same owner and still lingering: the peer never sent FIN.
        if conn.handler is handler and conn.flags & LINGERING:
            self.close(conn)

    def _schedule_close(self, conn: Connection, error: BaseException) -> None:
        """A write failed (peer reset or gone). Closing right away could pull
        state out from under a handler that is still running, so I/O stops now
        and the close runs at the end of the current dispatch."""
        if conn.closed:
            return
        conn.out = None
        conn.flags |= DEAD
        self._update_mask(conn)
        self._doomed.append((conn, conn.handler, error))

    def _reap_doomed(self) -> None:
        doomed, self._doomed = self._doomed, []
        for conn, handler, error in doomed:
            if conn.handler is handler:
                self.close(conn, error)

    # ---- output ---------------------------------------------------------

    def _queue(self, conn: Connection, data: bytes | bytearray | memoryview) -> None:
        """``write`` when output is already waiting (keep the order: queue
        behind it) or the connection is dead (drop)."""
        if conn.flags & DEAD or conn.handler is None:
            return
        out = conn.out
        out += data
        self._check_backpressure(conn, out)

    def _writev(self, conn: Connection, parts: list[bytes]) -> None:
        if conn.out is not None or conn.closed or len(parts) > IOV_MAX:
            conn.write(b"".join(parts))
            return
        try:
            sent = os.writev(conn.fd, parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._schedule_close(conn, exc)
            return
        for index, part in enumerate(parts):
            if sent < len(part):  # the kernel took part of it: buffer the rest, in order
                rest = b"".join([memoryview(part)[sent:], *parts[index + 1 :]])
                self._buffer_rest(conn, rest, 0)
                return
            sent -= len(part)

    def _write_more(self, conn: Connection, data: bytes) -> None:
        if conn.out is not None or conn.closed:
            conn.write(data)
            return
        sent = _send_with_more(conn.fd, data)
        if sent < 0:
            if -sent not in (errno.EAGAIN, errno.EINTR):
                self._schedule_close(conn, OSError(-sent, os.strerror(-sent)))
                return
            sent = 0
        if sent < len(data):
            self._buffer_rest(conn, data, sent)

    def _write_and_close(self, conn: Connection, data: bytes) -> None:
        send_more = _send_more
        if send_more is None or conn.out is not None or conn.closed or conn.flags & LINGERING:
            conn.write(data)
            self._close_after_flush(conn, False)
            return
        sent = send_more(conn.fd, data, len(data))  # held back until close() below
        if sent == len(data):
            self.close(conn)
            return
        if sent < 0:
            if -sent not in (errno.EAGAIN, errno.EINTR):
                self._schedule_close(conn, OSError(-sent, os.strerror(-sent)))
                return
            sent = 0
        self._buffer_rest(conn, data, sent)  # a later write pushes what was held
        self._close_after_flush(conn, False)

    def _buffer_rest(self, conn: Connection, data: Any, sent: int) -> None:
        conn.out = out = bytearray(memoryview(data)[sent:])
        self._update_mask(conn)  # arms EPOLLOUT
        self._check_backpressure(conn, out)

    def _check_backpressure(self, conn: Connection, out: bytearray) -> None:
        if len(out) > self.max_send_buffer and not conn.flags & BACKPRESSURE:
            conn.flags |= BACKPRESSURE
            self._update_mask(conn)

    def _sendfile(self, conn: Connection, file_fd: int, offset: int, count: int) -> int | None:
        if conn.closed:
            return None
        if conn.out:  # buffered bytes go first
            return None
        try:
            sent = os.sendfile(conn.fd, file_fd, offset, count)
            conn.last_active = self.tick
            return sent
        except (BlockingIOError, InterruptedError):
            self._want_writable(conn)
            return None
        except OSError as exc:
            self._schedule_close(conn, exc)
            return None

    def _want_writable(self, conn: Connection) -> None:
        if not conn.closed and not conn.flags & WANT_WRITE:
            conn.flags |= WANT_WRITE
            self._update_mask(conn)

    def _want_low_water(self, conn: Connection) -> None:
        if conn.closed:
            return
        if conn.pending() <= self.low_water and not conn.flags & CLOSE_AFTER_FLUSH:
            conn.flags |= WANT_WRITE  # on_writable from the next EPOLLOUT, not from here
        else:
            conn.flags |= LOW_WATER
        self._update_mask(conn)

    def _on_writable(self, conn: Connection) -> None:
        """EPOLLOUT: flush buffered output, then let the handler produce more."""
        if conn.flags & CONNECTING:
            self._connected(conn)
            return
        out = conn.out
        if out:
            try:
                sent = os.write(conn.fd, out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close(conn, exc)
                return
            del out[:sent]  # O(1): CPython bytearrays drop a prefix by moving their start
            conn.last_active = self.tick  # progress counts as activity (slow readers)
            if out:
                if conn.flags & LOW_WATER and len(out) <= self.low_water:
                    conn.flags &= ~LOW_WATER
                    if not conn.flags & CLOSE_AFTER_FLUSH:
                        conn.handler.on_writable(conn)
                return
            conn.out = None
        flags = conn.flags
        if flags & CLOSE_AFTER_FLUSH:
            if not flags & LINGERING:
                self._flushed_before_close(conn)
            return
        conn.flags = flags & ~(BACKPRESSURE | WANT_WRITE | LOW_WATER)
        self._update_mask(conn)
        conn.handler.on_writable(conn)

    # ---- input ----------------------------------------------------------

    # ---- outbound connections -------------------------------------------
    # The same slot and handler model as accepted connections: a non-blocking
    # connect() whose completion (or failure) EPOLLOUT reports. Until then
    # nothing is read or written; the handler's on_open marks success, and a
    # failure closes the slot with the error (on_close, without on_open).

    def connect(self, host: str, port: int, handler: Handler) -> Connection:
        """Start a TCP connection to (host, port) without blocking (host: an
        IPv4 or IPv6 literal). Raises OSError only for an immediate failure."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex((host, port))
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code), f"{host}:{port}")
        except BaseException:
            sock.close()
            raise
        conn = self.slot(sock.fileno())
        conn.handler = handler
        conn.flags = FRESH | CONNECTING | WANT_WRITE
        conn.last_active = self.tick
        conn.ctx = None
        self._fresh.append(conn)
        self.connection_count += 1
        sock.detach()
        self._update_mask(conn)  # EPOLLOUT only: completion or failure
        return conn

    def _connected(self, conn: Connection) -> None:
        sock = socket.socket(fileno=conn.fd)
        try:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            peer = None if code else sock.getpeername()
        except OSError as exc:
            code, peer = exc.errno or errno.ECONNREFUSED, None
        finally:
            sock.detach()
        if code:
            self.close(conn, OSError(code, os.strerror(code)))
            return
        conn.flags &= ~(CONNECTING | WANT_WRITE)
        self._update_mask(conn)
        conn.handler.on_open(conn, peer)

    # ---- listening and accepting ---------------------------------------

    def listen(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        backlog: int | None = None,
        reuse_port: bool = False,
    ) -> socket.socket:
        """Bind, listen and accept connections for ``handler``."""
        sock = create_listener(host, port, backlog=backlog, reuse_port=reuse_port)
        self.add_listener(sock, handler)
        return sock

    def add_listener(self, sock: socket.socket, handler: Handler) -> None:
        """Accept on an already listening socket (it is made non-blocking)."""
        sock.setblocking(False)
        listener = Listener(sock, handler)
        self._listeners[sock.fileno()] = listener
        self._add_internal(sock.fileno(), listener)

    def _add_internal(self, fd: int, owner: Any) -> None:
        conn = self.slot(fd)
        conn.handler = Handler()  # never called: marks the slot as taken
        conn.flags = INTERNAL
        conn.ctx = owner
        self._update_mask(conn)

    def _accept(self, lconn: Connection) -> None:
        """Drain the accept queue, at most ACCEPT_BATCH per wakeup."""
        listener: Listener = lconn.ctx
        accept = listener.sock._accept  # (fd, address): no socket object per connection
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._accept_failed(lconn, exc):
                    return
                continue
            if self.accept_failures:
                self._accepting_again()
            if self.connection_count >= self.max_connections:
                self._refuse(fd)
                continue
            fcntl(fd, F_SETFL, O_NONBLOCK)  # a fresh socket has no other status flag
            self.add_connection(fd, listener.handler, peer)

    def _accept_failed(self, lconn: Connection, exc: OSError) -> bool:
        """Handle an accept error; True means stop accepting for now."""
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            # Out of fds or memory: the backlog stays readable, so a level-
            # triggered listener would spin. Stop listening and retry later.
            self.accept_failures = failures = self.accept_failures + 1
            if failures & (failures - 1) == 0:  # log at 1, 2, 4, 8...: never floods
                log.warning(
                    "accept failed %d times so far: %s; pausing accepts for %.2fs each time",
                    failures,
                    exc.strerror,
                    EMFILE_RETRY_DELAY,
                )
            self._pause_accepting(lconn)
            return True
        if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            return False  # that one connection died in the queue; take the next
        log.error("accept failed: %s", exc)
        return True

    def _accepting_again(self) -> None:
        log.warning("accepting again after %d failed accepts", self.accept_failures)
        self.accept_failures = 0

    def _pause_accepting(self, lconn: Connection) -> None:
        listener: Listener = lconn.ctx
        if listener.paused:
            return
        listener.paused = True
        lconn.flags |= PAUSED
        self._update_mask(lconn)
        self.call_later(EMFILE_RETRY_DELAY, self._resume_accepting, lconn, listener)

    def _resume_accepting(self, lconn: Connection, listener: Listener) -> None:
        if lconn.ctx is listener and listener.paused and not self.stopping:
            listener.paused = False
            lconn.flags &= ~PAUSED
            self._update_mask(lconn)

    def _refuse(self, fd: int) -> None:
        # At --max-connections: close at once so the client learns now rather
        # than after a connect timeout.
        os.close(fd)
        self.refused += 1
        if self.refused & (self.refused - 1) == 0:  # log at 1, 2, 4, 8...: never floods
            log.warning(
                "at max connections (%d): refused %d so far", self.max_connections, self.refused
            )

    def close_listeners(self) -> None:
        for fd, listener in list(self._listeners.items()):
            self._release_internal(fd)
            listener.sock.close()
        self._listeners.clear()

    def _release_internal(self, fd: int) -> None:
        conn = self._table[fd]
        if conn.mask:
            self._epoll.unregister(fd)
        conn.handler = conn.ctx = None
        conn.flags = conn.mask = 0

    # ---- other threads ------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread soon; callable from any
        thread. Calls from one thread run in the order they were made."""
        self._waker.post(callback, args)

    def add_finisher(self, finisher: Callable[[float], Any]) -> None:
        """Have ``finish()`` call ``finisher(seconds_left)`` (e.g. a thread pool's join)."""
        self._finishers.append(finisher)

    def finish(self, timeout: float) -> None:
        """After run() returned: give work outside the loop thread what is left
        of ``timeout`` since shutdown() began (all of it without a shutdown)."""
        deadline = (self.stopping_at or time.monotonic()) + timeout
        for finisher in self._finishers:
            try:
                finisher(max(0.0, deadline - time.monotonic()))
            except Exception:
                log.exception("finishing %r failed", finisher)

    # ---- timers -----------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self._timers.schedule(self._clock() + delay, callback, args)

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self._timers.schedule(self._clock() + interval, callback, args, interval)

    def _run_timers(self) -> None:
        for timer in self._timers.pop_due(self.now):
            try:
                timer.callback(*timer.args)
            except Exception:
                log.exception("timer callback %r failed", timer.callback)
            if self._doomed:
                self._reap_doomed()

    def _poll_timeout(self) -> float:
        """Seconds the next poll may block: until the next timer, at most 1 s
        (the loop wakes once a second for the clock and signals)."""
        heap = self._timers.heap
        if not heap or heap[0][0] - self.now >= 1.0:  # self.now: as of the last poll
            return 1.0  # the common case, with no clock read
        when = self._timers.next_due()
        if when is None:
            return 1.0
        return min(1.0, max(0.0, when - self._clock()))

    def _sweep_idle(self) -> None:
        """Close connections silent for longer than idle_timeout."""
        limit = self.tick - self.idle_timeout
        for conn in self._table:
            if (
                conn.handler is not None
                and conn.last_active < limit
                and not conn.flags & (INTERNAL | NEVER_IDLE)
            ):
                log.debug("fd %d idle for over %ss: closing", conn.fd, self.idle_timeout)
                self.close(conn, TimeoutError("idle timeout"))

    def _update_clock(self) -> float:
        self.now = now = self._clock()
        tick = int(now)
        if tick != self.tick:  # one shared int per second for every last_active
            self.tick = tick
        return now

    # ---- the loop -----------------------------------------------------------

    def run(self) -> None:
        """Dispatch events until stop(), or until a shutdown has closed everything."""
        self._running = True
        self.loop_thread = threading.get_ident()
        poll, fresh, due = self._epoll.poll, self._fresh, self._timers.heap
        max_events, monotonic, spin = self.max_events, self._clock, self.busy_poll
        sleeps_left = 0  # batches after which the loop sleeps at once (module docstring)
        backoff = 1  # what the next spin that finds nothing sets sleeps_left to
        events: list[tuple[int, int]] = []
        while self._running and not (self.stopping and self.connection_count == 0):
            if fresh:
                self._unmark_fresh()
            if self._doomed:
                self._reap_doomed()
            timeout = self._poll_timeout()
            if not (spin and events and timeout):
                events = poll(timeout, max_events)
            elif sleeps_left:  # recent spins found nothing
                sleeps_left -= 1
                events = poll(timeout, max_events)
            else:  # a batch just ran: poll a while before sleeping
                events = poll(0, max_events)
                if not events:
                    until = monotonic() + min(spin, timeout)
                    while not events and monotonic() < until:
                        events = poll(0, max_events)
                    if events:
                        backoff = 1
                    else:
                        sleeps_left, backoff = backoff, min(2 * backoff, SPIN_BACKOFF_MAX)
                        events = poll(timeout, max_events)
            now = self._update_clock()
            if events:
                self._dispatch(events)
            if due and due[0][0] <= now:
                self._run_timers()
        self._running = False

    def run_once(self, timeout: float = 0.0) -> int:
        """One poll batch, its callbacks and the timers due; returns the event count."""
        if self._fresh:
            self._unmark_fresh()
        if self._doomed:  # failed writes made outside a dispatch (e.g. in a timer)
            self._reap_doomed()
        events = self._epoll.poll(timeout, self.max_events)
        self._update_clock()
        self._dispatch(events)
        self._run_timers()
        return len(events)

    def _unmark_fresh(self) -> None:
        for conn in self._fresh:  # registered before this poll: their events are theirs
            conn.flags &= ~FRESH
        self._fresh.clear()

    def _dispatch(self, events: list[tuple[int, int]]) -> None:
        """Route one poll batch: the C design's callback dispatch.

        Reading is inlined (the hot path): read into the shared buffer and
        hand the handler a view of it; a lingering connection's input is read
        and dropped until its FIN.
        """
        table, readv, iov, view = self._table, os.readv, self._iov, self._recv_view
        for fd, ev in events:
            conn = table[fd]
            flags = conn.flags
            if flags & (STALE | INTERNAL) or conn.handler is None:
                if flags & INTERNAL and not flags & FRESH:
                    conn.ctx.on_ready(self, conn)
                continue
            try:
                if ev & READ_READY and conn.mask & EPOLLIN:
                    try:
                        received = readv(fd, iov)
                    except (BlockingIOError, InterruptedError):
                        received = -1
                    except OSError as exc:  # ECONNRESET, ETIMEDOUT...: this one only
                        self.close(conn, exc)
                        continue
                    if received > 0:
                        conn.last_active = self.tick
                        if not flags & LINGERING:  # lingering: discard what still comes
                            conn.handler.on_data(conn, view[:received])
                    elif received == 0:
                        if flags & LINGERING:
                            self.close(conn)  # the peer's FIN: the lingering close is done
                        else:
                            conn.handler.on_eof(conn)
                if ev & WRITE_READY and conn.mask & EPOLLOUT and not conn.flags & STALE:
                    self._on_writable(conn)
            except Exception as exc:
                self._handler_failed(conn, exc)
            if self._doomed:
                self._reap_doomed()

    def _handler_failed(self, conn: Connection, exc: Exception) -> None:
        # One log record with the traceback; only this connection pays.
        log.error("handler failed on fd %d; closing that connection", conn.fd, exc_info=exc)
        self.close(conn, exc)

    def stop(self) -> None:
        """Leave run() after the current batch; connections stay as they are."""
        self._running = False

    def shutdown(self, timeout: float) -> None:
        """Graceful stop: no new connections, handlers say goodbye, whatever
        is still open after ``timeout`` seconds is closed, then run() returns."""
        if self.stopping:
            return
        self.stopping = True
        self.stopping_at = time.monotonic()
        self.close_listeners()
        for conn in list(self.connections()):
            try:
                conn.handler.on_shutdown(conn)
            except Exception as exc:
                self._handler_failed(conn, exc)
        self._reap_doomed()
        self.call_later(timeout, self._force_close_all)

    def _force_close_all(self) -> None:
        for conn in list(self.connections()):
            self.close(conn, TimeoutError("shutdown deadline"))
        self.stop()

    def install_signal_handlers(self, shutdown_timeout: float) -> None:
        """SIGTERM/SIGINT start a graceful shutdown through the event loop."""
        waker = SignalWaker(shutdown_timeout)
        signal.set_wakeup_fd(waker.writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _ignore_signal)  # the wakeup fd carries it
        self._signal_waker = waker
        self._add_internal(waker.reader.fileno(), waker)

    def dispose(self) -> None:
        """Release everything: connections, listeners, the signal waker, epoll."""
        for conn in list(self.connections()):
            self.close(conn)
        self.close_listeners()
        waker = getattr(self, "_signal_waker", None)
        if waker is not None:
            signal.set_wakeup_fd(-1)
            self._release_internal(waker.reader.fileno())
            waker.reader.close()
            waker.writer.close()
        self._release_internal(self._waker.fd)
        self._waker.close()
        self._epoll.close()


def _send_with_more(fd: int, data: bytes) -> int:
    """send(fd, data, MSG_MORE): bytes taken, or -errno (the C call's contract)."""
    if _send_more is not None:
        return _send_more(fd, data, len(data))
    sock = socket.socket(fileno=fd)  # without the C module: a borrowed socket object
    try:
        return sock.send(data, socket.MSG_MORE | socket.MSG_NOSIGNAL)
    except OSError as exc:
        return -(exc.errno or errno.EIO)
    finally:
        sock.detach()


def _ignore_signal(signum: int, frame: Any) -> None:
    """Python-level no-op: the C handler already wrote signum to the wakeup fd."""


def create_listener(
    host: str, port: int, *, backlog: int | None = None, reuse_port: bool = False
) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6 by the host's form)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted sockets inherit TCP_NODELAY on Linux: no setsockopt per accept.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog if backlog is not None else somaxconn())
    except BaseException:
        sock.close()
        raise
    return sock


def somaxconn() -> int:
    """The kernel's accept-queue cap (listen() silently clamps to it)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return socket.SOMAXCONN


def _default_max_connections() -> int:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(16, soft - FD_RESERVE)


FD_RESERVE = 32  # fds kept free for listeners, epoll, logs and files being served
