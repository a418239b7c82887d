"""The interface between the reactor and protocol handlers.

The reactor knows no protocol: it calls a handler object when a connection
opens, when bytes arrive, when buffered output has drained, when the server
is stopping, and when the connection closes. One handler object serves every
connection of its kind; per-connection state lives in ``conn.ctx``.

``conn`` is the reactor's per-fd slot (``reactor.loop.Connection``). What a
handler may call on it:

    conn.fd                     the socket's file descriptor: for logs only; every read,
                                write and close goes through the connection (its ordering,
                                backpressure and error rules), never through the fd
    conn.ctx                    free for the handler (per-connection state)
    conn.handler                may be reassigned (e.g. HTTP -> WebSocket upgrade)
    conn.write(data)            send now, buffer what the kernel did not take
    conn.writev(parts)          several buffers in one syscall, same rules (large parts)
    conn.write_more(data)       bytes that more will follow at once (a head before sendfile):
                                held by the kernel to share a segment with them (MSG_MORE)
    conn.sendfile(fd, off, n)   zero-copy send of a file region; returns bytes sent
    conn.pending()              bytes buffered and not yet sent
    conn.want_writable()        call on_writable once the socket can take more
    conn.pause_reading() / conn.resume_reading()
    conn.close()                close now, dropping buffered output
    conn.close_after_flush()    stop reading, close when the buffer has drained
    conn.write_and_close(data)  last bytes, then close; the FIN rides with them when it can
                                (only when the peer owes nothing: unread input means a reset)
    conn.peer()                 (host, port) of the peer, computed on demand
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import Connection


class Handler:
    """Base class with no-op callbacks; subclass and override what you need."""

    def on_open(self, conn: Connection, peer: Any) -> None:
        """A connection was accepted and registered for reading. ``peer`` is the
        address accept() returned; keep it only if you need it (memory)."""

    def on_data(self, conn: Connection, data: memoryview) -> None:
        """Bytes arrived. ``data`` views the reactor's shared receive buffer and
        is valid only during this call: copy what must outlive it."""

    def on_eof(self, conn: Connection) -> None:
        """The peer shut down its write side. Default: close the connection."""
        conn.close()

    def on_writable(self, conn: Connection) -> None:
        """Buffered output drained after a short write, or ``want_writable()``
        was asked: a producer (e.g. a sendfile body) may continue."""

    def on_shutdown(self, conn: Connection) -> None:
        """The server is stopping gracefully: say goodbye. Default: close once
        buffered output is flushed. The reactor force-closes whatever is still
        open when the shutdown deadline passes."""
        conn.close_after_flush()

    def on_close(self, conn: Connection, error: BaseException | None) -> None:
        """The connection closed (``error`` is set when a fault caused it).
        Release per-connection resources here; ``conn.fd`` is already closed."""
