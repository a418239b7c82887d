"""The application's view of a request (reactor.app.Request, Headers), its
answers (Response, Accept) and the Router's matching rule, without a server."""

from __future__ import annotations

import json

import pytest

from reactor.app import (
    Accept,
    AppError,
    Headers,
    Request,
    Response,
    RouteError,
    Router,
    WebSocketApp,
    check_app,
    make_app,
)


def test_headers_are_case_insensitive_and_keep_repeats_in_order():
    headers = Headers([("Accept", "a"), ("X-Tag", "1"), ("x-tag", "2")])
    assert headers["ACCEPT"] == "a" and headers.get("accept") == "a"
    assert headers["x-tag"] == "1, 2"  # RFC 9110 §5.3: one comma list
    assert headers.get_all("X-TAG") == ["1", "2"]
    assert list(headers) == ["accept", "x-tag"] and len(headers) == 2
    assert headers.items() == [("accept", "a"), ("x-tag", "1"), ("x-tag", "2")]
    assert "X-Tag" in headers and "missing" not in headers and 3 not in headers
    assert headers.get("missing") is None
    with pytest.raises(KeyError):
        headers["missing"]


def test_request_path_is_percent_decoded_and_query_multi_valued():
    request = Request("GET", "/a%20b/%C3%BC?x=1&x=2&empty=&sp=a+b&enc=%26")
    assert request.path == "/a b/\u00fc"
    assert request.raw_path == "/a%20b/%C3%BC"
    assert request.query == {"x": ["1", "2"], "empty": [""], "sp": ["a b"], "enc": ["&"]}
    assert Request("GET", "http://example.com/p?q=1").path == "/p"  # absolute-form
    assert Request("OPTIONS", "*").path == "*"
    assert Request("GET", "//double?q=1").path == "//double"  # a path, not a network location
    assert Request("GET", "/frag#x").path == "/frag"
    assert Request("GET", "http://h?q=1").path == "/"
    assert Request("GET", "http://h?q=1").query == {"q": ["1"]}
    # an authority urlsplit refuses ("Invalid IPv6 URL") is never parsed (found by fuzzing)
    assert Request("GET", "http://wject.h]ml/x?y=1").path == "/x"
    assert Request("GET", "http://[::1/p").path == "/p"


def test_request_cookies_first_value_wins_and_quotes_are_removed():
    request = Request(
        "GET",
        "/",
        headers=[("cookie", 'sid=abc; theme="dark"; sid=later'), ("cookie", "b=2; junk")],
    )
    assert request.cookies == {"sid": "abc", "theme": "dark", "b": "2"}
    assert Request("GET", "/").cookies == {}


def test_request_subprotocols_and_header_shortcut():
    request = Request(
        "GET",
        "/",
        headers=[("sec-websocket-protocol", "chat, v2"), ("sec-websocket-protocol", "x")],
    )
    assert request.subprotocols == ["chat", "v2", "x"]
    assert request.get("Sec-WebSocket-Protocol") == "chat, v2, x"
    assert request.get("nope", "default") == "default"


def test_remote_address_is_computed_once_and_only_when_read():
    calls = []

    def lookup():
        calls.append(1)
        return ("10.0.0.1", 5)

    request = Request("GET", "/", remote_address=lookup)
    assert calls == []
    assert request.remote_address == ("10.0.0.1", 5)
    assert request.remote_address == ("10.0.0.1", 5)
    assert calls == [1]


def test_response_defaults_str_bodies_and_json():
    response = Response("h\u00e9")
    assert (response.body, response.status) == ("h\u00e9".encode(), 200)
    assert response.content_type == "text/plain; charset=utf-8"
    assert Response(b"\x00").content_type == "application/octet-stream"
    made = Response.json({"a": [1, 2]}, status=201, headers=[("X-A", "1")])
    assert json.loads(made.body) == {"a": [1, 2]}
    assert (made.status, made.content_type, made.headers) == (
        201,
        "application/json",
        [("X-A", "1")],
    )
    assert Response(b"", headers={"X-B": "2"}).headers == [("X-B", "2")]


@pytest.mark.parametrize("status", [100, 101, 600, "200", 200.0])
def test_response_refuses_a_status_it_cannot_send(status):
    with pytest.raises(ValueError, match="status"):
        Response(b"", status=status)


def test_response_refuses_a_body_that_is_not_bytes_or_str():
    with pytest.raises(TypeError, match="bytes or str"):
        Response({"a": 1})


def test_accept_holds_headers_and_subprotocol():
    accept = Accept(headers=[("Set-Cookie", "a=1")], subprotocol="chat")
    assert accept.headers == (("Set-Cookie", "a=1"),) and accept.subprotocol == "chat"


# ---- Router ------------------------------------------------------------------


def test_router_exact_paths_win_over_patterns_in_given_order():
    chat, room, lobby, item = object(), object(), object(), object()
    router = Router(
        {"/rooms/{name}": room, "/rooms/lobby": lobby, "/chat": chat, "/i/{a}/{b}": item}
    )
    assert router.match("/chat") == (chat, {})
    assert router.match("/rooms/lobby") == (lobby, {})
    assert router.match("/rooms/x") == (room, {"name": "x"})
    assert router.match("/i/1/2") == (item, {"a": "1", "b": "2"})
    for miss in ("/chat/", "/rooms", "/rooms/", "/rooms/a/b", "/i/1", "/", "/other"):
        assert router.match(miss) is None, miss


def test_router_captures_are_decoded_but_an_encoded_slash_stays_in_one_segment():
    room = object()
    router = Router({"/rooms/{name}": room})
    assert router.match("/rooms/a/b", "/rooms/a%2Fb") == (room, {"name": "a/b"})
    assert router.match("/rooms/caf\u00e9", "/rooms/caf%C3%A9") == (room, {"name": "caf\u00e9"})


@pytest.mark.parametrize("key", ["chat", "", "/a/{x}/{x}", "/a/pre{x}", "/a/{x", "/a/{1x}", 5])
def test_router_refuses_malformed_routes(key):
    with pytest.raises(RouteError):
        Router({key: WebSocketApp()})


def test_router_needs_routes():
    with pytest.raises(RouteError):
        Router({})


class Chat(WebSocketApp):
    pass


class HttpOnly:
    def on_request(self, request):
        return None


def test_check_app_accepts_a_router_of_apps_and_refuses_a_bad_entry():
    check_app(Router({"/a": Chat, "/b": Chat(), "/c": HttpOnly()}))
    with pytest.raises(AppError):
        check_app(Router({"/a": Chat, "/b": 42}))


def test_make_app_instantiates_each_routed_class_once_per_worker():
    shared = Chat
    made = make_app(Router({"/a": shared, "/b": shared, "/c": HttpOnly()}))
    assert isinstance(made, Router)
    a, b = made.match("/a")[0], made.match("/b")[0]
    assert isinstance(a, Chat) and a is b  # one class serving two paths: one instance
    assert isinstance(made.match("/c")[0], HttpOnly)


def test_an_http_only_app_is_an_application():
    check_app(HttpOnly())
    assert isinstance(make_app(HttpOnly), HttpOnly)


def test_a_factory_may_return_a_router():
    made = make_app(lambda: Router({"/a": Chat}))
    assert isinstance(made, Router) and isinstance(made.match("/a")[0], Chat)
