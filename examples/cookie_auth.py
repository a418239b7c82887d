"""A cookie-authenticated WebSocket: log in over HTTP, then upgrade.

    POST /login     form or JSON {"user": ..., "password": ...}: sets the
                    session cookie (HttpOnly, SameSite=Strict) and answers 204
    POST /logout    forgets the session
    ws://host/ws    401 without a valid session cookie; otherwise the 101
                    refreshes the cookie (Accept(headers=...)) and greets
                    the user, who is then echoed by name

The user list is a demonstration (PASSWORDS below): put a real check there.
Sessions live in this worker's memory: run it with one worker (the default).

From the repository root:

    python -m reactor --proto auto --app examples.cookie_auth:app
    python examples/cookie_auth.py --port 9501

    curl -i -d 'user=ann&password=secret' http://127.0.0.1:9501/login
"""

from __future__ import annotations

import hmac
import json
import secrets
from urllib.parse import parse_qs

from reactor.app import Accept, Response, Router, WebSocketApp
from reactor.server import main

COOKIE = "session"
PASSWORDS = {"ann": "secret", "bob": "hunter2"}  # demonstration only
MAX_SESSIONS = 10_000  # bound: the oldest session is dropped past it


class Sessions:
    def __init__(self) -> None:
        self.users: dict[str, str] = {}  # token -> user, oldest first

    def start(self, user: str) -> str:
        if len(self.users) >= MAX_SESSIONS:
            del self.users[next(iter(self.users))]
        token = secrets.token_urlsafe(24)
        self.users[token] = user
        return token

    def user(self, request) -> str | None:
        return self.users.get(request.cookies.get(COOKIE, ""))


def cookie(token: str, max_age: int = 3600) -> tuple[str, str]:
    return ("Set-Cookie", f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict")


class Login:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def on_request(self, request):
        if request.method != "POST":
            return Response(b"POST only\n", status=405, headers=[("Allow", "POST")])
        if request.path == "/logout":
            self.sessions.users.pop(request.cookies.get(COOKIE, ""), None)
            return Response(b"", status=204, headers=[cookie("", max_age=0)])
        user, password = credentials(request)
        expected = PASSWORDS.get(user or "")
        if expected is None or not hmac.compare_digest(expected, password or ""):
            return Response(b"wrong user or password\n", status=403)
        return Response(b"", status=204, headers=[cookie(self.sessions.start(user))])


def credentials(request) -> tuple[str | None, str | None]:
    """(user, password) from a JSON body or a form."""
    if request.get("content-type", "").startswith("application/json"):
        try:
            sent = json.loads(request.body)
            return str(sent["user"]), str(sent["password"])
        except (ValueError, KeyError, TypeError):
            return None, None
    form = parse_qs(request.body.decode("utf-8", "replace"))
    return form.get("user", [None])[0], form.get("password", [None])[0]


class Private(WebSocketApp):
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def on_upgrade(self, request):
        if self.sessions.user(request) is None:
            return 401, "log in first (POST /login)"
        return Accept(headers=[cookie(request.cookies[COOKIE])])  # a fresh Max-Age

    def on_open(self, conn, request):
        conn.data = self.sessions.user(request)
        conn.send(f"hello {conn.data}")

    def on_message(self, conn, data):
        conn.send(f"{conn.data}: {data}")


def make_router() -> Router:
    sessions = Sessions()
    login = Login(sessions)
    return Router({"/login": login, "/logout": login, "/ws": Private(sessions)})


app = make_router()

if __name__ == "__main__":
    raise SystemExit(main(app, proto="auto"))
