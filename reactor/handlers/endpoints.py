"""An application's HTTP endpoints (``on_request``) for the HTTP handler.

``Endpoints`` finds the ``on_request`` that serves a request (the app's, or
the one of the app its Router maps the path to), builds the application's
``Request`` (reactor/request.py) with the complete body, calls it, and turns
what it returns into response bytes (http/response.py): a ``Response``, or
None to let the static files answer. An exception, or anything else
returned, is logged once and answered 500; the request was well framed, so
the connection may persist.

A coroutine ``on_request`` runs on the asyncio companion thread (the one
the WebSocket callbacks use, reactor/handlers/ws_async.py); the HTTP handler
waits for it with reading paused, so pipelined requests stay in order.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ..app import Response, Router
from ..http.request import Request as Head
from ..http.response import render
from ..http.static import error_response
from ..loop import Connection, Reactor
from ..request import Request, forwarded_client
from .ws_async import AsyncCallbacks

log = logging.getLogger("reactor.http")

DEFAULT_MAX_BODY_SIZE = 1024 * 1024  # bytes: a form or a JSON document, not an upload store

_INTERNAL_ERROR = "internal error"


def serves_requests(app: Any) -> bool:
    """Whether ``app`` (or an app behind it, for a Router) has on_request."""
    apps = app.apps() if isinstance(app, Router) else (app,)
    return any(callable(getattr(one, "on_request", None)) for one in apps)


class Endpoints:
    """The on_request callbacks of one worker's application (or Router)."""

    def __init__(
        self,
        reactor: Reactor,
        app: Any,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        forwarded_allow_ips: frozenset[str] = frozenset(),
        async_callbacks: Callable[[], AsyncCallbacks] | None = None,
    ) -> None:
        self.reactor = reactor
        self.app = app
        self.max_body_size = max_body_size
        self.forwarded_allow_ips = frozenset(forwarded_allow_ips)
        self._async: AsyncCallbacks | None = None
        self._coroutines: dict[Any, bool] = {}
        self._make_async = async_callbacks or (lambda: AsyncCallbacks(reactor))
        apps = app.apps() if isinstance(app, Router) else (app,)
        if any(inspect.iscoroutinefunction(getattr(one, "on_request", None)) for one in apps):
            self._async = self._make_async()  # started before the first request needs it

    def find(self, head: Head, conn: Connection, body: bytes) -> tuple[Callable, Request] | None:
        """(on_request, the application's request) for this head, or None. A
        path no route takes builds no Request (static files behind a Router)."""
        app, params = self.app, {}
        if isinstance(app, Router):
            raw_path = _raw_path(head.target)
            path = unquote(raw_path, errors="replace") if "%" in raw_path else raw_path
            found = app.match(path, raw_path)
            if found is None:
                return None
            app, params = found
        on_request = getattr(app, "on_request", None)
        if on_request is None:
            return None
        request = Request(
            head.method,
            head.target,
            head.http_version,
            head.headers,
            body=body,
            remote_address=lambda: self.client_address(conn, head),
        )
        request.path_params = params
        return on_request, request

    def client_address(self, conn: Connection, head: Head) -> Any:
        return client_address(conn, head, self.forwarded_allow_ips)

    def call(self, on_request: Callable, request: Request) -> Any:
        """Run a synchronous on_request; an exception is logged and becomes 500."""
        try:
            return on_request(request)
        except Exception as exc:
            return _failed(request, exc)

    def is_async(self, on_request: Callable) -> bool:
        """Whether on_request is a coroutine function (remembered per function:
        the apps' few on_request, so the dict stays that small)."""
        function = getattr(on_request, "__func__", on_request)
        known = self._coroutines.get(function)
        if known is None:
            known = self._coroutines[function] = inspect.iscoroutinefunction(on_request)
        return known

    def call_async(
        self, on_request: Callable, request: Request, then: Callable[[Any], None]
    ) -> None:
        """Await a coroutine on_request on the companion thread; ``then(result)``
        runs on the reactor thread (an exception already turned into 500)."""
        if self._async is None:
            self._async = self._make_async()

        def done(result: Any, error: BaseException | None) -> None:
            then(_failed(request, error) if error is not None else result)

        self._async.run_upgrade(on_request, request, done)

    def answer(
        self, head: Head, request: Request, result: Any, keep_alive: bool
    ) -> tuple[bytes, int, int]:
        """(bytes, status, body bytes sent) of the response to ``result`` (not
        None: the caller serves the static files then); 500 for what is no
        Response."""
        is_head = head.method == "HEAD"
        if isinstance(result, Response):
            try:
                response = render(
                    result.status,
                    result.headers,
                    result.body,
                    result.content_type,
                    keep_alive=keep_alive,
                    head=is_head,
                )
                return response, result.status, len(response) - response.index(b"\r\n\r\n") - 4
            except ValueError as exc:
                log.error("application on_request for %s: %s; answering 500", request.path, exc)
        elif result is not _FAILED:
            log.error(
                "application on_request for %s returned %.100r; it must return a "
                "reactor.app.Response (e.g. Response(body), Response.json(obj)) or None "
                "to let the static files answer; answering 500",
                request.path,
                result,
            )
        return error_response(500, _INTERNAL_ERROR, keep_alive=keep_alive, head=is_head), 500, -1


_FAILED = object()  # what a failed on_request "returned": already logged


def client_address(conn: Connection, head: Head, trusted: frozenset[str]) -> Any:
    """``Request.remote_address``: (host, port) of the peer; behind a proxy in
    ``trusted`` (--forwarded-allow-ips), (client IP, 0) from X-Forwarded-For."""
    try:
        peer = conn.peer()
    except OSError:
        return None
    if trusted and isinstance(peer, tuple):
        client = forwarded_client(peer[0], head.get("x-forwarded-for"), trusted)
        if client is not None:
            return (client, 0)
    return peer


def _raw_path(target: str) -> str:
    """The path of a request target as Request.raw_path reads it."""
    if target.startswith("/") and "#" not in target:
        return target.split("?", 1)[0] or "/"  # origin-form, the usual case
    return Request("GET", target).raw_path


def _failed(request: Request, exc: BaseException) -> Any:
    log.error("application on_request failed for %s; answering 500", request.path, exc_info=exc)
    return _FAILED
