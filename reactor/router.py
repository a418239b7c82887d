"""``Router``: one application per path (reactor/app.py re-exports it).

    Router({"/chat": Chat(), "/rooms/{name}": Room, "/api/items/{id}": Items()})

The rule, checked in this order:
1. exact routes: the request's percent-decoded path equals the key
   (``/chat`` matches ``/chat?x=1``, the query being no part of the path,
   but neither ``/chat/`` nor ``/chat/x``);
2. patterns, in the order given: a key holding ``{name}`` segments matches a
   path with the same number of segments whose literal segments are equal
   and whose captured segments are not empty; each captured value is
   percent-decoded (``/rooms/a%2Fb`` gives ``name="a/b"``) and lands in
   ``request.path_params``.
No match: an upgrade gets 404; an HTTP request goes to the static files.

Values are what ``--app`` accepts (an instance, a class, a factory): a class
or factory is called once per worker. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote

_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RouteError(ValueError):
    """A route key that is not a path or a well-formed pattern."""


class Router:
    """Maps request paths to applications; see the module docstring."""

    def __init__(self, routes: Mapping[str, Any]) -> None:
        if not isinstance(routes, Mapping) or not routes:
            raise RouteError("a Router needs a non-empty mapping of path -> application")
        self.routes = dict(routes)
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[tuple[str | None, ...], tuple[str, ...], Any]] = []
        for key, app in self.routes.items():
            self._add(key, app)

    def _add(self, key: Any, app: Any) -> None:
        if not isinstance(key, str) or not key.startswith("/"):
            raise RouteError(f"route {key!r}: a path starting with '/'")
        if "{" not in key and "}" not in key:
            self.exact[key] = app
            return
        segments: list[str | None] = []
        names: list[str] = []
        for segment in key.split("/")[1:]:
            capture = _CAPTURE.fullmatch(segment)
            if capture is not None:
                names.append(capture[1])
                segments.append(None)
            elif "{" in segment or "}" in segment:
                raise RouteError(f"route {key!r}: a capture is a whole segment, {{name}}")
            else:
                segments.append(segment)
        if len(set(names)) != len(names):
            raise RouteError(f"route {key!r}: a name is captured twice")
        self.patterns.append((tuple(segments), tuple(names), app))

    def apps(self) -> Iterator[Any]:
        """Each routed application once (one may serve several paths)."""
        seen: set[int] = set()
        for app in self.routes.values():
            if id(app) not in seen:
                seen.add(id(app))
                yield app

    def match(self, path: str, raw_path: str | None = None) -> tuple[Any, dict[str, str]] | None:
        """(application, captured values) for a request path, or None.
        ``path`` is percent-decoded; ``raw_path`` (as sent) splits the
        segments for the patterns, so an encoded "/" stays inside one."""
        app = self.exact.get(path)
        if app is not None:
            return app, {}
        if not self.patterns:
            return None
        raw = (raw_path if raw_path is not None else path).split("/")[1:]
        for segments, names, app in self.patterns:
            captured = _match(segments, raw)
            if captured is not None:
                return app, dict(zip(names, captured, strict=True))
        return None

    def map(self, make: Callable[[Any], Any]) -> Router:
        """A Router with ``make(value)`` for each distinct value (a worker's
        instances); a value serving several paths stays one instance."""
        made: dict[int, Any] = {}
        routes = {}
        for key, app in self.routes.items():
            if id(app) not in made:
                made[id(app)] = make(app)
            routes[key] = made[id(app)]
        return Router(routes)

    def __repr__(self) -> str:
        return f"Router({list(self.routes)!r})"


def _match(segments: tuple[str | None, ...], raw: list[str]) -> list[str] | None:
    if len(segments) != len(raw):
        return None
    captured = []
    for expected, got in zip(segments, raw, strict=True):
        value = unquote(got, errors="replace")
        if expected is None:
            if not value:
                return None
            captured.append(value)
        elif value != expected:
            return None
    return captured
