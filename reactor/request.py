"""What an application sees of an HTTP request, and what it answers with.

``Request`` is handed to ``on_request``, ``on_upgrade`` and ``on_open``
(reactor/app.py re-exports every name here). It wraps the parsed head and
computes each view (path, query, cookies, headers mapping, peer address) the
first time it is read and keeps it: a handshake whose application reads
nothing pays for one small object. ``Response`` and ``Accept`` are plain data
that the glue (reactor/handlers/) renders; nothing here does I/O.

Standard library only: the parsed head is duck-typed (method, target,
http_version, headers as lowercased ``(name, value)`` pairs), so this module
sits beside the core and applications can build a Request in their tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote

HeaderPairs = Sequence[tuple[str, str]]


class Headers(Mapping[str, str]):
    """Request header fields, case-insensitive and multi-valued, in arrival order.

    ``headers["accept"]`` / ``headers.get("Accept")``: the value, repeated
    fields joined with ", " (RFC 9110 §5.3); ``headers.get_all(name)``: each
    field line's value; ``items()``: every ``(name, value)`` pair, names
    lowercased, repeats kept. Iterating gives each distinct name once."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = [(name.lower(), value) for name, value in pairs]

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._pairs if key == name]

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return values[0] if len(values) == 1 else ", ".join(values)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        return any(key == name for key, _ in self._pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key for key, _ in self._pairs))

    def __len__(self) -> int:
        return len(dict.fromkeys(key for key, _ in self._pairs))

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """Every field line as ``(lowercased name, value)``, repeats kept."""
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


class Request:
    """One HTTP request (an endpoint's, or a WebSocket upgrade's).

    Attributes: ``method``, ``target`` (as sent), ``http_version`` (major,
    minor), ``path`` (the target's path, percent-decoded), ``query`` (dict of
    lists: every value of each parameter), ``headers`` (``Headers``),
    ``cookies`` (dict, the first value of each name), ``remote_address``
    ((host, port); behind a proxy listed in --forwarded-allow-ips: (client IP,
    0)), ``subprotocols`` (what an upgrade offered, in order), ``body``
    (bytes, complete; b"" for an upgrade) and ``path_params`` (what a Router
    pattern captured). ``get(name)`` is ``headers.get(name)``."""

    __slots__ = (
        "method",
        "target",
        "http_version",
        "body",
        "path_params",
        "_fields",
        "_remote",
        "_headers",
        "_split",
        "_path",
        "_query",
        "_cookies",
    )

    def __init__(
        self,
        method: str,
        target: str,
        http_version: tuple[int, int] = (1, 1),
        headers: HeaderPairs = (),
        *,
        body: bytes = b"",
        remote_address: Any = None,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.body = body
        self.path_params: dict[str, str] = {}
        self._fields = headers  # lowercased pairs from the parser (or the caller's)
        self._remote = remote_address  # the address, or a callable computing it once
        self._headers: Headers | None = None
        self._split: tuple[str, str] | None = None
        self._path: str | None = None
        self._query: dict[str, list[str]] | None = None
        self._cookies: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target}>"

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._fields)
        return self._headers

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def _parts(self) -> tuple[str, str]:
        """(raw path, raw query) of the target, no fragment: origin-form split
        at "?" (a path may start with "//"); absolute-form (RFC 9112 §3.2.2)
        after its authority, which is not parsed (urlsplit raises on some
        hosts a client may send, e.g. a stray "]")."""
        if self._split is None:
            target = self.target.partition("#")[0]
            scheme_end = -1 if target.startswith("/") else target.find("://")
            if scheme_end > 0:
                rest = target[scheme_end + 3 :]
                ends = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
                target = rest[min(ends) :] if ends else ""
            path, _, query = target.partition("?")
            self._split = (path or "/", query)
        return self._split

    @property
    def raw_path(self) -> str:
        """The path as sent (still percent-encoded), without the query."""
        return self._parts()[0]

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = unquote(self.raw_path, errors="replace")
        return self._path

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self._parts()[1], keep_blank_values=True)
        return self._query

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers.get_all("cookie"))
        return self._cookies

    @property
    def subprotocols(self) -> list[str]:
        offered = self.headers.get_all("sec-websocket-protocol")
        return [p.strip(" \t") for v in offered for p in v.split(",") if p.strip(" \t")]

    @property
    def remote_address(self) -> Any:
        if callable(self._remote):
            self._remote = self._remote()
        return self._remote


def parse_cookies(values: Iterable[str]) -> dict[str, str]:
    """``Cookie`` field values (RFC 6265 §5.4: ``name=value`` pairs separated by
    ";"); the first value of a name wins, as browsers send the most specific
    first; a pair without "=" is skipped; surrounding quotes are removed."""
    cookies: dict[str, str] = {}
    for value in values:
        for pair in value.split(";"):
            name, eq, content = pair.partition("=")
            name = name.strip(" \t")
            if not eq or not name:
                continue
            content = content.strip(" \t")
            if len(content) >= 2 and content[0] == content[-1] == '"':
                content = content[1:-1]
            cookies.setdefault(name, content)
    return cookies


def forwarded_client(peer_host: str, chain: str | None, trusted: frozenset[str]) -> str | None:
    """Behind a trusted proxy, the client is the right-most X-Forwarded-For
    entry that is not itself a trusted proxy (entries to its left are what
    the client claimed; only proxies we trust appended the rest). None when
    the peer is not a trusted proxy or names nobody."""
    if not chain or ("*" not in trusted and peer_host not in trusted):
        return None  # a direct client may claim anything: ignored
    entries = [entry.strip() for entry in chain.split(",") if entry.strip()]
    if not entries:
        return None
    return next((e for e in reversed(entries) if e not in trusted), entries[0])


class Response:
    """What ``on_request`` returns: ``Response(body, status=200, headers=...,
    content_type=...)``. ``body`` is bytes, or str (sent as UTF-8; the default
    content type then says so). ``headers``: ``(name, value)`` pairs or a dict;
    Content-Length, Connection and Date are the server's and may not be given.
    ``Response.json(obj)`` sends ``json.dumps(obj)`` as application/json."""

    __slots__ = ("body", "status", "headers", "content_type")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeaderPairs | Mapping[str, str] = (),
        content_type: str | None = None,
    ) -> None:
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        elif not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"a Response body is bytes or str, not {type(body).__name__}")
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"a Response status is an int from 200 to 599, not {status!r}")
        self.body = bytes(body)
        self.status = status
        if headers:
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            self.headers = [(str(name), str(value)) for name, value in pairs]
        else:
            self.headers = []
        self.content_type = content_type or "application/octet-stream"

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: HeaderPairs = ()) -> Response:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return cls(body, status, headers, "application/json")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.content_type} {len(self.body)} bytes>"


class Accept:
    """What ``on_upgrade`` may return to accept with more than the defaults:
    ``headers`` added to the 101 (e.g. ``[("Set-Cookie", "sid=...")]``) and
    ``subprotocol``, one of those the client offered (``request.subprotocols``),
    chosen instead of the --subprotocol rule."""

    __slots__ = ("headers", "subprotocol")

    def __init__(self, headers: HeaderPairs = (), subprotocol: str | None = None) -> None:
        self.headers = tuple((str(name), str(value)) for name, value in headers)
        self.subprotocol = subprotocol

    def __repr__(self) -> str:
        return f"Accept(headers={list(self.headers)!r}, subprotocol={self.subprotocol!r})"
