"""Static files over HTTP/1.1: the glue between the reactor and ``reactor.http``.

The C design's ``http_request``/``http_response`` without its bugs:
a request head may arrive in many reads or many heads in one read; a body
never blocks the loop; the file is closed on every path.

One connection's life:

    waiting for a head --complete head--> responding --body handed to the kernel-->
        keep-alive: idle (waiting for a head again) | close: close_after_flush

- Pipelining: requests are answered strictly in order. The next request is
  parsed only when the previous response is entirely handed to the kernel
  (no file body in progress, nothing left in the reactor's output buffer), so
  a pipelined flood cannot make us build responses faster than the client
  reads them. Bytes that arrive meanwhile wait in ``ctx.buf`` and reading is
  paused, so that buffer is bounded by one read (the reactor's 256 KiB).
- Files: ``http.static.open_target`` opens each one confined to the root by
  the kernel (openat2 RESOLVE_BENEATH, or a walk holding a descriptor per
  directory) and everything is served from that descriptor, never reopened
  by name; dot-files are 404 unless ``--serve-hidden``.
- Bodies: small files are read once and cached; their head and body leave
  in one write. Larger ones: the head with MSG_MORE, then ``os.sendfile``, continued from
  ``on_writable`` after EAGAIN, at most SENDFILE_TURN bytes per turn so one
  fast reader cannot starve the others.
- Timeouts: a head has ``header_timeout`` seconds from its first byte (from
  the accept for the first request), an idle keep-alive connection has
  ``keepalive_timeout``. No timer per connection: two insertion-ordered dicts
  (conn -> since) are swept from their oldest end by one reactor timer.
- Errors: a parser error means the byte stream lost its framing, so the error
  is answered with ``Connection: close`` and a lingering close; errors from
  resolving the path come from a well-framed request and keep the connection.
- Upgrade (``--proto auto``): a request with ``Upgrade: websocket`` is handed
  to ``upgrade(conn, request, buf, pos)`` together with the buffer and the
  offset just past its head. Without an upgrade callback the header is
  ignored and the request served as a plain GET, as RFC 9110 §7.8 allows
  ("A server MAY ignore a received Upgrade header field"); nginx does the same
  for static locations.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..app import make_app
from ..handler import Handler
from ..http.body import BodyReader
from ..http.request import (
    ALLOW_HEADER,
    ALLOWED_METHODS,
    BodyRequestParser,
    HttpError,
    Request,
    RequestParser,
    body_framing,
)
from ..http.response import CONTINUE
from ..http.static import Redirect, error_response, open_target, plan
from ..loop import Connection, Reactor
from . import warn_if_head_scanner_missing
from .access import AccessLog, access_log, request_line
from .endpoints import DEFAULT_MAX_BODY_SIZE, Endpoints, serves_requests

log = logging.getLogger("reactor.http")

# upgrade(conn, request, buf, pos): buf[pos:] are the bytes that followed the head (all of
# them belong to the connection); the callee takes the connection over (conn.handler,
# conn.ctx) and may return the HTTP status it answered, for the access log.
Upgrade = Callable[[Connection, Request, Any, int], "int | None"]

DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a whole request head (slowloris bound)
DEFAULT_KEEPALIVE_TIMEOUT = 75.0  # seconds an idle persistent connection is kept (nginx: 75)
SENDFILE_TURN = 4 * 1024 * 1024  # bytes per on_writable turn: fairness between fast readers
SMALL_FILE = 32 * 1024  # files up to this size are read and cached, head+body in one write
CACHE_BYTES = 16 * 1024 * 1024  # small-file cache per worker: 512+ hot files at the largest size
# Targets answered from the small-file cache during the current second: their confined
# open and fstat are reused until the second changes, so a change on disk is seen
# within a second (nginx's open_file_cache_valid, at 1 s). Opening, fstat and close
# cost three syscalls per request, a large share of the server's time on a 1 KiB file
# under wrk. This cannot serve bytes from outside the root: an entry holds only what
# the cache held, and the cache only ever holds bytes read from a descriptor that the
# confined open returned (see FileCache). What the shortcut may do is answer with the
# previous version for the rest of the second after a change (a rewrite, a chmod, a
# directory swapped for a symlink); from the next second every request is opened
# again. Bounded so that a flood of distinct targets cannot grow it.
RECENT_TARGETS = 4096
AWAITING = object()  # HttpState.endpoint while a coroutine on_request answers


class HttpState:
    """Per-connection state (``conn.ctx``). Idle, it holds the parser and
    ``None`` everywhere else: no buffer, no file."""

    __slots__ = (
        "parser",
        "buf",
        "file_fd",
        "offset",
        "remaining",
        "keep_alive",
        "paused",
        "eof",
        "peer",
        "log_line",
        "status",
        "body_length",
        "endpoint",
        "request",
    )

    def __init__(self, peer: str | None, parser: RequestParser) -> None:
        self.parser = parser
        self.buf: bytearray | None = None  # unparsed input: a partial head or pipelined requests
        self.file_fd = -1  # the file whose body is being sent, else -1
        self.offset = 0  # next file offset to send
        self.remaining = 0  # body bytes still to send
        self.keep_alive = True  # of the response in progress
        self.paused = False  # we paused reading (pipelined input waits in buf)
        self.eof = False  # the peer shut down its write side
        self.peer = peer  # host for the access log (None when logging is off)
        self.log_line: str | None = None  # request line of the body in progress (access log)
        self.status = 0
        self.body_length = 0
        # An endpoint request in progress (reactor/handlers/endpoints.py): its
        # BodyReader while the body arrives, AWAITING while a coroutine answers.
        self.endpoint: BodyReader | object | None = None
        self.request: Request | None = None  # its head


def cache_key(st: os.stat_result) -> tuple:
    """What fstat of a confined descriptor proves about one version of a file: which
    inode it is, its content version (mtime, ctime, size: any write or truncate
    changes one of them) and who may read it (mode, owner, group: a chmod or chown
    also changes ctime, covering ACLs)."""
    return (
        st.st_dev,
        st.st_ino,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_size,
        st.st_mode,
        st.st_uid,
        st.st_gid,
    )


class FileCache:
    """Contents of small files by cache_key() of the descriptor they were read from.

    Filled only from descriptors that the confined open returned, and only when
    fstat after the read gives the same key as before it (the file did not change
    meanwhile), so it never holds bytes from outside the root nor a torn version.
    Looked up only with the fstat of a fresh confined open: the open itself proves
    that the server may still read the file, the key that it is the same version.
    Old keys age out oldest first once the byte budget is spent."""

    def __init__(self, budget: int = CACHE_BYTES) -> None:
        self.budget = budget
        self.used = 0
        self.entries: dict[tuple, bytes] = {}

    def get(self, st: os.stat_result) -> bytes | None:
        return self.entries.get(cache_key(st))

    def put(self, st: os.stat_result, content: bytes) -> None:
        entries = self.entries
        while entries and self.used + len(content) > self.budget:
            self.used -= len(entries.pop(next(iter(entries))))
        entries[cache_key(st)] = content
        self.used += len(content)


class HttpHandler(Handler):
    """Serves GET/HEAD of the regular files under ``root``."""

    def __init__(
        self,
        reactor: Reactor,
        root: str | os.PathLike,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        access_log_enabled: bool = True,
        upgrade: Upgrade | None = None,
        serve_hidden: bool = False,
        endpoints: Endpoints | None = None,
    ) -> None:
        self.reactor = reactor
        self.root_real = os.path.realpath(root)
        try:  # every file is opened relative to this descriptor, confined to it
            self.root_fd = os.open(self.root_real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            raise SystemExit(f"--root {root}: not a directory") from None
        self.serve_hidden = serve_hidden
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.log_access = access_log_enabled and access_log.isEnabledFor(logging.INFO)
        self.upgrade = upgrade
        self.endpoints = endpoints  # the app's on_request; None: static files only
        self._parser_class = RequestParser if endpoints is None else BodyRequestParser
        self.cache = FileCache()
        self.recent: dict[str, tuple[str, os.stat_result, bytes]] = {}  # see RECENT_TARGETS
        self.recent_tick = -1
        self.heads: dict[Connection, float] = {}  # waiting for a head, since (monotonic)
        self.idle: dict[Connection, float] = {}  # keep-alive idle, since (monotonic)
        timeouts = [t for t in (header_timeout, keepalive_timeout) if t > 0]
        if timeouts:
            reactor.call_every(min(1.0, min(timeouts) / 4), self._sweep)
        self.access = AccessLog()

    # ---- reactor callbacks ------------------------------------------------

    def on_open(self, conn: Connection, peer: Any) -> None:
        conn.ctx = HttpState(_peer_host(peer) if self.log_access else None, self._parser_class())
        self.heads[conn] = self.reactor.now  # the first head's clock starts at the accept

    def on_data(self, conn: Connection, data: memoryview) -> None:
        ctx: HttpState = conn.ctx
        self.idle.pop(conn, None)
        if ctx.buf is None:
            self._run(conn, ctx, bytes(data))  # one copy per read; the parser searches in place
        else:
            ctx.buf += data
            self._run(conn, ctx, ctx.buf)

    def on_writable(self, conn: Connection) -> None:
        ctx: HttpState = conn.ctx
        if ctx.file_fd >= 0 and not self._send_body(conn, ctx):
            return  # more body to send: on_writable comes again
        if conn.pending() or conn.closed:
            return
        self._continue(conn, ctx)

    def on_eof(self, conn: Connection) -> None:
        ctx: HttpState = conn.ctx
        ctx.eof = True
        self._forget(conn)
        if ctx.file_fd >= 0 or conn.pending() or ctx.endpoint is AWAITING:
            self._pause(conn, ctx)  # finish the response in progress first
        else:
            conn.close_after_flush()  # a partial head can never complete now

    def on_shutdown(self, conn: Connection) -> None:
        ctx: HttpState = conn.ctx
        if ctx.file_fd >= 0:
            ctx.keep_alive = False  # finish this body, then close
        else:
            conn.close_after_flush()

    def on_close(self, conn: Connection, error: BaseException | None) -> None:
        self._forget(conn)
        ctx: HttpState | None = conn.ctx
        if ctx is not None and ctx.file_fd >= 0:
            self._end_body(ctx)  # client gone mid-body: log what it got, release the file

    # ---- requests -----------------------------------------------------------

    def _run(self, conn: Connection, ctx: HttpState, buf: bytes | bytearray) -> None:
        """Answer the complete requests in ``buf`` in order, while allowed."""
        pos, end = 0, len(buf)
        while pos < end:
            if ctx.file_fd >= 0 or conn.pending():
                self._keep(ctx, buf, pos)  # the previous response is still leaving
                self._pause(conn, ctx)
                return
            if ctx.endpoint is not None:  # an endpoint's body, or its answer, is awaited
                pos = self._endpoint_input(conn, ctx, buf, pos, end)
                if pos < 0:
                    return  # closing, or waiting for a coroutine (input kept)
                continue
            try:
                request, head_end = ctx.parser.parse(buf, pos, end)
            except HttpError as exc:
                self._reject(conn, ctx, exc)
                return
            if request is None:
                break
            self.heads.pop(conn, None)
            if self.upgrade is not None and request.wants_upgrade:
                self._hand_over(conn, ctx, request, buf, head_end)
                return
            pos = head_end
            if self.endpoints is not None:
                if not self._endpoint_head(conn, ctx, request):
                    return  # closing: the remaining input is dropped
                continue
            if not self._respond(conn, ctx, request):
                return  # closing: the remaining input is dropped
        self._keep(ctx, buf, pos)
        self._await_next(conn, ctx)

    def _continue(self, conn: Connection, ctx: HttpState) -> None:
        """The previous response is fully handed over: on to the next request."""
        if ctx.buf is not None:
            self._run(conn, ctx, ctx.buf)
        else:
            self._await_next(conn, ctx)

    def _await_next(self, conn: Connection, ctx: HttpState) -> None:
        if ctx.file_fd >= 0 or conn.pending() or conn.closed or ctx.endpoint is AWAITING:
            return  # on_writable (or the coroutine's answer) continues
        if ctx.eof:
            conn.close_after_flush()  # all answered; the peer sends no more
            return
        if ctx.paused:
            ctx.paused = False
            conn.resume_reading()
        now = self.reactor.now
        if ctx.buf is None and ctx.endpoint is None:
            self.idle.pop(conn, None)  # re-insert: the dict must stay in time order
            self.idle[conn] = now
        else:
            self.heads.setdefault(conn, now)  # a partial head: its clock runs from its first byte

    @staticmethod
    def _keep(ctx: HttpState, buf: bytes | bytearray, pos: int) -> None:
        """Keep buf[pos:] as the unparsed input."""
        if buf is ctx.buf:
            if pos:
                del buf[:pos]  # O(1): CPython moves a bytearray's start
            if not buf:
                ctx.buf = None
        elif pos < len(buf):
            ctx.buf = bytearray(memoryview(buf)[pos:])

    @staticmethod
    def _pause(conn: Connection, ctx: HttpState) -> None:
        if not ctx.paused:
            ctx.paused = True
            conn.pause_reading()

    def _respond(self, conn: Connection, ctx: HttpState, request: Request) -> bool:
        """Answer one request; False when the connection is closing."""
        keep_alive = request.keep_alive and not self.reactor.stopping
        if self.recent_tick != self.reactor.tick:
            self.recent.clear()
            self.recent_tick = self.reactor.tick
        recent = self.recent.get(request.target)
        if recent is not None:  # resolved and cached within this second
            self._send_small(conn, ctx, request, *recent, keep_alive)
            if not keep_alive:
                conn.close_after_flush(linger=True)
            return keep_alive
        try:
            fd, st, name = open_target(
                self.root_fd, self.root_real, request.target, serve_hidden=self.serve_hidden
            )
        except HttpError as exc:  # from a well-framed request: the connection may persist
            self._send_error(conn, ctx, request, exc, keep_alive)
            done = True
        else:
            done, keep_alive = self._send_file(conn, ctx, request, fd, st, name, keep_alive)
        if done and not keep_alive:
            conn.close_after_flush(linger=True)  # unread pipelined input must not reset it
        return keep_alive

    def _send_file(
        self,
        conn: Connection,
        ctx: HttpState,
        request: Request,
        fd: int,
        st: os.stat_result,
        name: str,
        keep_alive: bool,
    ) -> tuple[bool, bool]:
        """Start the response from the confined descriptor ``fd`` (ours to close).
        Returns (all handed over, keep-alive): a file that shrank while read
        turns keep-alive off."""
        if st.st_size > SMALL_FILE:
            return self._start_body(conn, ctx, request, name, fd, st, keep_alive), keep_alive
        try:
            content = self.cache.get(st)
            if content is None:
                content, st, cached = self._read_small(fd, st)
            else:
                cached = True
        finally:
            os.close(fd)
        if cached:
            self._remember(request.target, name, st, content)
        elif len(content) < st.st_size:  # still changing: the head promises more than we have
            keep_alive = False
        self._send_small(conn, ctx, request, name, st, content, keep_alive)
        return True, keep_alive

    def _read_small(self, fd: int, st: os.stat_result) -> tuple[bytes, os.stat_result, bool]:
        """(content, the stat to answer with, whether it was cached). A file that
        changes while read is not cached; when it shrank, fstat after the read
        describes the bytes read, and when even that one promises more (it is still
        changing) the caller closes the connection after the short body: a
        Content-Length that is not kept would swallow the next response."""
        content = _read_all(fd, st.st_size)
        after = os.fstat(fd)
        if cache_key(after) == cache_key(st) and len(content) == st.st_size:
            self.cache.put(st, content)
            return content, st, True
        return content, (st if len(content) == st.st_size else after), False

    def _remember(self, target: str, path: str, st: os.stat_result, content: bytes) -> None:
        if len(self.recent) < RECENT_TARGETS:
            self.recent[target] = (path, st, content)

    def _start_body(
        self,
        conn: Connection,
        ctx: HttpState,
        request: Request,
        path: str,
        fd: int,
        st: os.stat_result,
        keep_alive: bool,
    ) -> bool:
        """Send the head, then the body with sendfile; ``fd`` is ours to close."""
        try:
            response = plan(request, path, st, time.time(), keep_alive)
        except BaseException:
            os.close(fd)
            raise
        if not response.length:
            conn.write(response.head)
            os.close(fd)
            self._log(ctx, request, response.status, 0)
            return True
        # MSG_MORE: the head leaves with the first body bytes, as nginx's tcp_nopush does
        # with TCP_CORK. Measured on 1 MiB files: 2.0 -> 4.4 GB/s with wrk, as a lone small
        # head segment under TCP_NODELAY left most of the transmit work to the client's core.
        conn.write_more(response.head)
        ctx.file_fd, ctx.offset, ctx.remaining = fd, response.offset, response.length
        ctx.keep_alive, ctx.status, ctx.body_length = keep_alive, response.status, response.length
        if self.log_access:
            ctx.log_line = request_line(request)
        return self._send_body(conn, ctx)

    def _send_small(
        self,
        conn: Connection,
        ctx: HttpState,
        request: Request,
        path: str,
        st: os.stat_result,
        content: bytes,
        keep_alive: bool,
    ) -> None:
        response = plan(request, path, st, time.time(), keep_alive)
        if response.length:
            start = response.offset
            conn.write(response.head + content[start : start + response.length])
        else:
            conn.write(response.head)
        if self.log_access:
            self._log(ctx, request, response.status, response.length)

    # ---- endpoints (an application's on_request) ------------------------------

    def _endpoint_head(self, conn: Connection, ctx: HttpState, request: Request) -> bool:
        """A head for the endpoints: read its body, or answer it now. False
        when the connection is closing."""
        length, chunked = body_framing(request)  # checked by the parser already
        if not chunked and not length:
            return self._dispatch(conn, ctx, request, b"")
        try:
            reader = BodyReader(length, chunked, self.endpoints.max_body_size)
            expect = request.get("expect")
            if expect is not None and expect.lower() != "100-continue":
                raise HttpError(417, "only Expect: 100-continue is understood")  # RFC 9110 §10.1.1
        except HttpError as exc:  # 413 before a byte of the body is read: framing is lost
            self._refuse_body(conn, ctx, request, exc)
            return False
        if expect is not None and request.http_version >= (1, 1):
            conn.write(CONTINUE)
        ctx.endpoint, ctx.request = reader, request
        self.heads[conn] = self.reactor.now  # the body has --header-timeout too
        return True

    def _endpoint_input(self, conn: Connection, ctx: HttpState, buf: Any, pos: int, end: int):
        """Body bytes for the request in progress; the position after them, or
        -1 when the connection is closing or a coroutine is answering."""
        reader = ctx.endpoint
        if reader is AWAITING:
            self._keep(ctx, buf, pos)
            self._pause(conn, ctx)
            return -1
        try:
            pos = reader.feed(buf, pos, end)
        except HttpError as exc:  # malformed chunks or too large: framing is lost
            self._refuse_body(conn, ctx, ctx.request, exc)
            return -1
        if not reader.done:
            return pos  # == end: every byte went into the body
        request, ctx.endpoint, ctx.request = ctx.request, None, None
        self.heads.pop(conn, None)
        if not self._dispatch(conn, ctx, request, reader.body):
            return -1
        if ctx.endpoint is AWAITING:
            self._keep(ctx, buf, pos)
            self._pause(conn, ctx)
            return -1
        return pos

    def _dispatch(self, conn: Connection, ctx: HttpState, request: Request, body: bytes) -> bool:
        """Hand a complete request to its on_request, or to the static files."""
        found = self.endpoints.find(request, conn, body)
        if found is None:
            return self._respond_static(conn, ctx, request)
        on_request, app_request = found
        if not self.endpoints.is_async(on_request):
            result = self.endpoints.call(on_request, app_request)
            return self._answer(conn, ctx, request, app_request, result)
        ctx.endpoint = AWAITING
        ctx.request = request

        def then(result: Any) -> None:
            if conn.ctx is not ctx or conn.handler is not self or conn.closed:
                return  # the connection went away meanwhile
            ctx.endpoint = ctx.request = None
            if self._answer(conn, ctx, request, app_request, result):
                self._continue(conn, ctx)

        self.endpoints.call_async(on_request, app_request, then)
        return True

    def _answer(self, conn, ctx: HttpState, request: Request, app_request: Any, result: Any):
        if result is None:
            return self._respond_static(conn, ctx, request)
        keep_alive = request.keep_alive and not self.reactor.stopping
        response, status, size = self.endpoints.answer(request, app_request, result, keep_alive)
        conn.write(response)
        if self.log_access:
            self._write_log(ctx, request_line(request), status, size)
        if not keep_alive:
            conn.close_after_flush(linger=True)
        return keep_alive

    def _respond_static(self, conn: Connection, ctx: HttpState, request: Request) -> bool:
        """No endpoint answered: the static files, which know GET and HEAD only."""
        if request.method in ALLOWED_METHODS:
            return self._respond(conn, ctx, request)
        keep_alive = request.keep_alive and not self.reactor.stopping
        exc = HttpError(405, f"method {request.method} not allowed", ALLOW_HEADER)
        self._send_error(conn, ctx, request, exc, keep_alive)
        if not keep_alive:
            conn.close_after_flush(linger=True)
        return keep_alive

    def _refuse_body(self, conn: Connection, ctx: HttpState, request: Request, exc: HttpError):
        """A body that will not be read (too large, malformed): answer, close."""
        self._forget(conn)
        ctx.buf = ctx.endpoint = ctx.request = None
        self._send_error(conn, ctx, request, exc, False)
        conn.close_after_flush(linger=True)

    # ---- bodies -------------------------------------------------------------

    def _send_body(self, conn: Connection, ctx: HttpState) -> bool:
        """Hand the body to the kernel until EAGAIN or SENDFILE_TURN bytes;
        True when it is done (the response is complete)."""
        budget = SENDFILE_TURN
        while ctx.remaining and budget > 0:
            sent = conn.sendfile(ctx.file_fd, ctx.offset, min(ctx.remaining, budget))
            if sent is None:
                return False  # EAGAIN (on_writable follows) or the peer is gone (on_close)
            if sent == 0:  # the file shrank: Content-Length can no longer be honoured
                log.warning("%s shrank while being sent; closing", ctx.log_line or "a file")
                conn.close()
                return False
            ctx.offset += sent
            ctx.remaining -= sent
            budget -= sent
        if ctx.remaining:
            conn.want_writable()  # let the other connections run first
            return False
        self._end_body(ctx)
        if not ctx.keep_alive:
            conn.close_after_flush(linger=True)
            return False
        return True

    def _end_body(self, ctx: HttpState) -> None:
        os.close(ctx.file_fd)
        ctx.file_fd = -1
        if ctx.log_line is not None:
            self._write_log(ctx, ctx.log_line, ctx.status, ctx.body_length - ctx.remaining)
            ctx.log_line = None

    # ---- errors, upgrade, timeouts ------------------------------------------

    def _send_error(
        self, conn: Connection, ctx: HttpState, request: Request, exc: HttpError, keep_alive: bool
    ) -> None:
        is_head = request.method == "HEAD"
        conn.write(
            error_response(
                exc.status,
                _reason(exc),
                keep_alive=keep_alive,
                extra_headers=exc.headers,
                head=is_head,
            )
        )
        self._log(ctx, request, exc.status, -1)

    def _reject(self, conn: Connection, ctx: HttpState, exc: HttpError) -> None:
        """A malformed head: answer, then close (the framing is lost)."""
        self._forget(conn)
        ctx.buf = None
        conn.write(
            error_response(exc.status, exc.reason, keep_alive=False, extra_headers=exc.headers)
        )
        conn.close_after_flush(linger=True)
        if self.log_access:
            self._write_log(ctx, "-", exc.status, -1)

    def _hand_over(
        self, conn: Connection, ctx: HttpState, request: Request, buf: Any, head_end: int
    ) -> None:
        """Give the connection to the upgrade callee (e.g. WebSocket) with the
        bytes that followed the head: frames may have come in the same read."""
        self._forget(conn)
        ctx.buf = None
        if ctx.paused:
            conn.resume_reading()
        status = self.upgrade(conn, request, buf, head_end)
        if self.log_access:  # the callee may return the status it answered (else 101)
            self._write_log(ctx, request_line(request), status or 101, -1)

    def _forget(self, conn: Connection) -> None:
        self.heads.pop(conn, None)
        self.idle.pop(conn, None)

    def _sweep(self) -> None:
        """Close what waited too long; each dict is ordered oldest first."""
        now = self.reactor.now
        if self.header_timeout > 0:
            for conn in _expired(self.heads, now - self.header_timeout):
                self._head_timed_out(conn)
        if self.keepalive_timeout > 0:
            for conn in _expired(self.idle, now - self.keepalive_timeout):
                self.idle.pop(conn, None)
                conn.close()

    def _head_timed_out(self, conn: Connection) -> None:
        ctx: HttpState = conn.ctx
        self.heads.pop(conn, None)
        if ctx.endpoint is AWAITING:
            return  # the head and body came in time; the application is answering
        if ctx.buf is None and ctx.endpoint is None:
            conn.close()  # not a byte of a request: nothing to answer (as nginx)
            return
        reason = "request head not received in time"
        if ctx.endpoint is not None:
            reason = "request body not received in time"
        ctx.buf = ctx.endpoint = ctx.request = None
        conn.write(error_response(408, reason, keep_alive=False))
        conn.close_after_flush(linger=True)
        if self.log_access:
            self._write_log(ctx, "-", 408, -1)

    # ---- access log (common log format) -------------------------------------

    def _log(self, ctx: HttpState, request: Request, status: int, size: int) -> None:
        if self.log_access:
            self._write_log(ctx, request_line(request), status, size)

    def _write_log(self, ctx: HttpState, line: str, status: int, size: int) -> None:
        self.access.write(ctx.peer, line, status, size)


def _expired(since_by_conn: dict[Connection, float], limit: float) -> list[Connection]:
    expired = []
    for conn, since in since_by_conn.items():
        if since > limit:
            break  # insertion order is time order: the rest are younger
        expired.append(conn)
    return expired


def _reason(exc: HttpError) -> str:
    return f"Moved to {exc.location}" if isinstance(exc, Redirect) else exc.reason


def _peer_host(peer: Any) -> str | None:
    return peer[0] if isinstance(peer, tuple) and peer else None


def _read_all(fd: int, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = os.pread(fd, size - got, got)
        if not chunk:
            break  # truncated meanwhile: the caller sees a short read
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# ---- composition ---------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        help="seconds a client has to send a request head; slower ones get 408 (0: no limit)",
    )
    add(
        "--keepalive-timeout",
        type=float,
        default=DEFAULT_KEEPALIVE_TIMEOUT,
        help="seconds an idle keep-alive connection is kept open (0: until --idle-timeout)",
    )
    add(
        "--max-body-size",
        type=_byte_count,
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="BYTES",
        help="largest request body an application's on_request accepts (Content-Length or "
        "chunked); larger: 413 before it is read (docs/http-endpoints.md)",
    )
    add("--quiet", action="store_true", help="no access log (one line per request otherwise)")
    add(
        "--serve-hidden",
        action="store_true",
        help="serve dot-files and dot-directories such as .git/ and .env (by default any "
        "path component starting with '.' is 404, except the top-level /.well-known/)",
    )


def _byte_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def make_endpoints(options: argparse.Namespace, reactor: Reactor, app: Any, **kw) -> Any:
    """The app's HTTP endpoints, or None when no app (or routed app) has on_request."""
    if app is None or not serves_requests(app):
        return None
    return Endpoints(
        reactor,
        app,
        max_body_size=getattr(options, "max_body_size", DEFAULT_MAX_BODY_SIZE),
        forwarded_allow_ips=frozenset(getattr(options, "forwarded_allow_ips", ())),
        **kw,
    )


def make_handler(
    options: argparse.Namespace,
    reactor: Reactor,
    *,
    upgrade: Upgrade | None = None,
    endpoints: Endpoints | None = None,
) -> HttpHandler:
    if upgrade is None:  # with --proto auto the WebSocket handler has warned already
        warn_if_head_scanner_missing(log)
        app = getattr(options, "app", None)  # --proto http: an app serves on_request only
        if endpoints is None and app is not None:
            endpoints = make_endpoints(options, reactor, make_app(app))
    return HttpHandler(
        reactor,
        Path(options.root),
        header_timeout=options.header_timeout,
        keepalive_timeout=options.keepalive_timeout,
        access_log_enabled=not options.quiet,
        upgrade=upgrade,
        serve_hidden=options.serve_hidden,
        endpoints=endpoints,
    )
