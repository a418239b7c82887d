"""The WebSocket opening handshake in the glue (--proto ws and auto): from the
first byte of a request head to the 101 and the connection's first frames, or
to an HTTP error answer and a lingering close.

``conn.ctx`` is None before the first byte, a ``Handshaking`` while a head is
incomplete, an ``AwaitingApp`` while a coroutine ``on_upgrade`` decides, and
ANSWERED once an HTTP error answer is on its way. The usual upgrade is checked
and answered by one C call (``handshake.accept_usual``); ``handshake.validate``
decides everything else. ``UpgradeHandling`` is a part of ``WebSocketHandler``
(reactor/handlers/ws.py), kept apart so the frame path reads on its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..http.request import HttpError, Request, RequestParser
from ..http.static import error_response
from ..loop import Connection
from ..request import Accept as AppAccept
from ..request import Request as AppRequest
from ..request import forwarded_client
from ..ws import handshake
from .access import request_line
from .endpoints import client_address

if TYPE_CHECKING:
    from .ws import WebSocketConnection

log = logging.getLogger("reactor.ws")

Answer = handshake.Accept | handshake.Reject

_UPGRADE_HEADERS = (
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", handshake.SUPPORTED_VERSION),
)


class Handshaking:
    """``conn.ctx`` while an upgrade head is incomplete. ``buf`` is bounded by
    the parser's own limits (it raises 414/431 past ~24 KiB)."""

    __slots__ = ("parser", "buf", "since")

    def __init__(self, parser: RequestParser, buf: bytearray, since: float) -> None:
        self.parser = parser
        self.buf = buf
        self.since = since  # the head's first byte (reactor.now)


ANSWERED = Handshaking(RequestParser(), bytearray(), 0.0)  # ctx after an HTTP error answer


class AwaitingApp(Handshaking):
    """``conn.ctx`` while a coroutine on_upgrade decides (reading paused). The
    sweep answers 408 after --header-timeout, as for a head that never ends."""

    __slots__ = ()


def is_refusal(verdict: Any) -> bool:
    """``(status, reason)`` or ``(status, reason, headers)``, status 4xx/5xx:
    the refusals on_upgrade may return (see reactor/app.py)."""
    if not isinstance(verdict, tuple | list) or len(verdict) not in (2, 3):
        return False
    status, reason = verdict[0], verdict[1]
    return type(status) is int and 400 <= status <= 599 and isinstance(reason, str)


def _decide(verdict: Any, answer: handshake.Accept, request: AppRequest) -> Answer:
    """What on_upgrade's answer means: the 101 (amended by an ``Accept``), or
    the rejection (a 500 with one log line for an answer that is none of the
    accepted forms, or an Accept that cannot be honoured)."""
    if verdict is None:
        return answer
    if isinstance(verdict, AppAccept):
        try:
            offered = request.headers.get_all("sec-websocket-protocol")
            return handshake.amend(answer, verdict.headers, verdict.subprotocol, offered)
        except ValueError as exc:
            log.error("application on_upgrade returned %r: %s; answering 500", verdict, exc)
            return handshake.reject(500, "internal error")
    if is_refusal(verdict):
        return handshake.reject(*verdict)
    log.error(
        "application on_upgrade returned %.100r; it must return None or "
        "reactor.app.Accept(headers=..., subprotocol=...) to accept, or "
        "(status, reason) or (status, reason, headers) with a 4xx/5xx status to refuse; "
        "answering 500",
        verdict,
    )
    return handshake.reject(500, "internal error")


def _upgrade_failed(exc: BaseException) -> handshake.Reject:
    log.error("application on_upgrade failed; answering 500", exc_info=exc)
    return handshake.reject(500, "internal error")


def _refusal_response(refusal: handshake.Reject, request: Request) -> bytes:
    return error_response(
        refusal.status,
        refusal.reason,
        keep_alive=False,
        extra_headers=refusal.headers,
        head=request.method == "HEAD",
    )


class UpgradeHandling:
    """The handshake half of ``WebSocketHandler``."""

    def _handshake_input(self, conn: Connection, state: Handshaking | None, data: memoryview):
        if state is None:
            parser, buf, end = RequestParser(), data.obj, len(data)  # parsed in place
        else:
            state.buf += data
            parser, buf, end = state.parser, state.buf, len(state.buf)
        try:
            request, head_end = parser.parse(buf, 0, end)
        except HttpError as exc:
            self._refuse_http(conn, exc)
            return
        if request is None:
            if state is None:
                conn.ctx = Handshaking(parser, bytearray(data), self.reactor.now)
            return
        if not request.wants_upgrade:
            self._log_upgrade(conn, request, 426)  # first: the answer may close it at once
            self._upgrade_required(conn, request)
            return
        if buf is self.reactor.recv_buffer:
            head = self._window.ptr  # no copy: the C call reads the receive buffer itself
        else:  # a head gathered over several reads: one copy, not a slice and a copy
            head = bytes(memoryview(buf)[:head_end])
        answer = handshake.accept_usual(
            request.method,
            request.http_version,
            head,
            head_end,
            subprotocols=self.subprotocols,
            origins=self.origins,
            extensions=self.compression.enabled,
        )  # the usual upgrade in one C call; None: validate() decides
        self._upgrade(conn, request, buf, head_end, end, answer)

    def accept_upgrade(self, conn: Connection, request: Request, buf: Any, pos: int) -> int:
        """Take over a connection whose upgrade head another handler parsed
        (``--proto auto``); ``buf[pos:]`` are the bytes that followed the head
        and are processed as frames. Returns the HTTP status answered (101
        while a coroutine on_upgrade decides: the access log cannot wait)."""
        return self._upgrade(conn, request, buf, pos, len(buf)) or 101

    def _upgrade(
        self,
        conn: Connection,
        request: Request,
        buf: Any,
        start: int,
        end: int,
        answer: Answer | None = None,
    ) -> int | None:
        """The HTTP status answered, or None while a coroutine on_upgrade decides."""
        conn.handler, conn.ctx = self, ANSWERED
        kind, params = self._route(request)
        if kind is None:
            answer = handshake.reject(404, "no WebSocket endpoint at this path")
        elif answer is None:
            answer = handshake.validate(
                request.method,
                request.http_version,
                request.headers,
                subprotocols=self.subprotocols,
                origins=self.origins,
                compression=self.compression,
            )
        if isinstance(answer, handshake.Accept):
            if not kind.wants_request:  # neither on_upgrade nor on_open to call
                self._open(conn, kind, None, request, answer, buf, start, end)
                return 101
            app_request = self._app_request(conn, request, params)
            if kind._async_upgrade:
                rest = bytes(memoryview(buf)[start:end])
                self._await_upgrade(conn, kind, app_request, request, answer, rest)
                return None
            answer = self._ask_app(kind, app_request, answer)
            if isinstance(answer, handshake.Accept):
                self._open(conn, kind, app_request, request, answer, buf, start, end)
                return 101
        self._log_upgrade(conn, request, answer.status)  # first: the answer may close it
        conn.write(_refusal_response(answer, request))
        conn.close_after_flush(linger=True)  # unread input must not turn it into a reset
        return answer.status

    def _route(self, request: Request) -> tuple[Any, dict[str, str]]:
        """(the connection class of the app serving this path, captured values);
        (None, {}) when a Router has no WebSocket app there."""
        if self.router is None:
            return self.connection_class, {}
        probe = AppRequest(request.method, request.target)
        found = self.router.match(probe.path, probe.raw_path)
        if found is None:
            return None, {}
        kind = self.app_kinds[id(found[0])]
        return (kind, found[1]) if kind.speaks_websocket else (None, {})

    def _app_request(self, conn: Connection, request: Request, params: dict) -> AppRequest:
        app_request = AppRequest(
            request.method,
            request.target,
            request.http_version,
            request.headers,
            remote_address=lambda: client_address(conn, request, self.forwarded_allow_ips),
        )
        app_request.path_params = params
        return app_request

    def _ask_app(self, kind: Any, request: AppRequest, answer: handshake.Accept) -> Answer:
        try:
            return _decide(kind._app_upgrade(request), answer, request)
        except Exception as exc:  # in the app
            return _upgrade_failed(exc)

    def _await_upgrade(self, conn, kind, app_request, request, answer, rest: bytes) -> None:
        """A coroutine on_upgrade: the handshake completes when it returns; the
        reactor serves other connections meanwhile."""
        conn.pause_reading()
        conn.ctx = waiting = AwaitingApp(ANSWERED.parser, ANSWERED.buf, self.reactor.now)

        def decided(verdict: Any, error: BaseException | None) -> None:
            if conn.ctx is not waiting or conn.handler is not self:
                return  # timed out (408) or closed meanwhile
            conn.resume_reading()
            try:
                outcome = _upgrade_failed(error) if error else _decide(verdict, answer, app_request)
            except Exception as exc:  # a malformed verdict
                outcome = _upgrade_failed(exc)
            if isinstance(outcome, handshake.Accept):
                self._open(conn, kind, app_request, request, outcome, rest, 0, len(rest))
            else:
                conn.ctx = ANSWERED
                self._log_upgrade(conn, request, outcome.status)
                conn.write(_refusal_response(outcome, request))
                conn.close_after_flush(linger=True)

        self.async_callbacks.run_upgrade(kind._app_upgrade, app_request, decided)

    def _open(self, conn, kind, app_request, request, answer, buf: Any, start: int, end: int):
        if self.access is not None:
            self._log_upgrade(conn, request, 101)
        ws = kind(conn, answer.subprotocol, self.max_message_size, answer.extension)
        ws.accept()
        conn.ctx = ws
        if self.forwarded_allow_ips:
            self._remember_client(conn, ws, request)
        self.open_count += 1
        if self.router is not None:
            kind.open_count += 1
        self.cork.parts.append(answer.response)  # the 101 leaves with on_open's and the frames'
        self.cork.owner = ws
        if app_request is not None:
            try:
                kind._app_open(ws, app_request)
            except Exception as exc:
                ws._app_failed("on_open", exc)
        self.cork.owner = None
        if start >= end:
            self._flush(conn, ws)
        elif buf is self.reactor.recv_buffer:
            self._feed(conn, ws, buf, start, end)
        else:  # another handler's buffer: a private copy (rare; keeps its exports clean)
            self._feed(conn, ws, bytes(memoryview(buf)[start:end]), 0, end - start)

    def _remember_client(self, conn: Connection, ws: WebSocketConnection, request: Request):
        """Behind a trusted proxy, ``ws.remote_address`` is the client its
        X-Forwarded-For names (see reactor/request.py ``forwarded_client``)."""
        chain = request.get("x-forwarded-for")
        if not chain:
            return
        try:
            proxy = conn.peer()[0]
        except OSError:
            return
        client = forwarded_client(proxy, chain, self.forwarded_allow_ips)
        if client is not None:
            self._forwarded[ws] = (client, 0)  # the client's port is not forwarded

    def _upgrade_required(self, conn: Connection, request: Request) -> None:
        """A plain HTTP request: 426 tells the client what this port speaks.
        RFC 9110 §15.5.22: a 426 carries Upgrade (and so Connection lists it)."""
        response = error_response(
            426,
            "this is a WebSocket endpoint",
            keep_alive=False,
            extra_headers=_UPGRADE_HEADERS,
            head=request.method == "HEAD",
        )
        conn.ctx = ANSWERED
        conn.write(response)
        conn.close_after_flush(linger=True)

    def _log_upgrade(self, conn: Connection, request: Request, status: int) -> None:
        """--proto ws: one access line per handshake outcome, as --proto auto's
        HTTP handler writes (there, ``access`` is None: that handler logs)."""
        if self.access is not None:
            self.access.write(self._peer_host(conn), request_line(request), status)

    @staticmethod
    def _peer_host(conn: Connection) -> str | None:
        try:
            peer = conn.peer()
        except OSError:
            return None
        return peer[0] if isinstance(peer, tuple) and peer else None

    def _refuse_http(self, conn: Connection, exc: HttpError) -> None:
        if self.access is not None:
            self.access.write("-", "-", exc.status)
        conn.ctx = ANSWERED
        response = error_response(
            exc.status, exc.reason, keep_alive=False, extra_headers=exc.headers
        )
        conn.write(response)
        conn.close_after_flush(linger=True)

    def _check_head(self, conn: Connection, state: Handshaking | None, tick: int) -> None:
        if state is None:  # not a byte since the accept: nothing to answer
            if tick - conn.last_active >= self.header_timeout:
                conn.close()
        elif self.reactor.now - state.since >= self.header_timeout:
            self._refuse_http(conn, HttpError(408, "request head not received in time"))
