"""Fuzz target: the HTTP request-head parser, the static path resolver and the glue.

Input: byte 0 picks the configuration, the rest is what a client sent.
    bit 0     the bytes are a bare request target for the resolver, not a request
    bits 1-7  the read size of the incremental feed (1..64 bytes)
Invariants:
- The C head scanner (http/csrc/head.c) changes nothing: the whole input gives
  the same request, or the same error, with it and without it.
- The parser agrees with itself: the whole input at once and behind an offset
  give the same request and end position, or the same error status; the same
  bytes arriving in reads of N bytes (one parser object kept between calls, as
  the glue does) and as a memoryview (copied in windows of 4 KiB, then whole)
  give the same request, or are refused too (the status may name another of
  the input's faults: the first one provable from the bytes seen so far).
- It never consumes more than given: the end position is within the input
  and just past the blank line that ends the head.
- A request is one we serve: GET/HEAD, visible-ASCII target within the limit,
  tokens as names, values without CTLs or surrounding whitespace, one Host on
  HTTP/1.1, no body; every error is one of ERROR_STATUSES (405 with Allow),
  and its error response is well framed.
- The resolver returns only a regular file inside the root, with no symlink
  left in its path, never the secrets placed beside the root (reached through
  symlinks, "..", %2e%2e, encoded separators...) nor a dot-file; otherwise
  400, 404 or a 301 to a local path. The response plan stays inside the file;
  an impossible date in a condition is ignored, never an exception.
- A handler exception is a finding: the whole input goes through the real glue
  (reactor.handlers.static on a real Reactor, over a socketpair, then FIN), and
  the reactor's per-connection catch-all must never fire ("handler failed").
  What the glue answers is a sequence of well-framed responses, then EOF, and
  never holds a secret.
- Bodies (http/body.py): the same input also goes through the endpoint parser
  (BodyRequestParser) and, when its head is accepted, the bytes after it
  through a BodyReader (Content-Length or chunked: sizes, extensions, bad hex,
  overflow, trailers), whole and in reads of N bytes: the same body and end,
  or the same error status (400, 413, 431); never more than was given, never
  a body over the limit. Then the whole input goes through the glue with an
  application's on_request (echo, raise, a wrong return, None): the catch-all
  still never fires and every answer (100 Continue included) is well framed.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import socket
import stat
import tempfile

from _harness import instrumented

with instrumented(__name__ == "__main__"):
    from reactor.app import Response
    from reactor.handlers.endpoints import Endpoints
    from reactor.handlers.static import HttpHandler
    from reactor.http import request as request_module
    from reactor.http import static
    from reactor.http.body import BodyReader
    from reactor.http.request import (
        ENDPOINT_ALLOW,
        MAX_FIELDS,
        MAX_TARGET,
        BodyRequestParser,
        HttpError,
        RequestParser,
        body_framing,
    )
    from reactor.loop import Reactor

NAME = "http"
ERROR_STATUSES = {400, 405, 413, 414, 431, 501, 505}  # what http/request.py may answer
BODY_STATUSES = {400, 413, 431}  # what http/body.py may answer
MAX_BODY = 4096  # the endpoint glue's --max-body-size: small, so 413 is reachable
RESOLVE_STATUSES = {301, 400, 404}
PLAN_STATUSES = {200, 206, 304, 412, 416}
NOW = 1_800_000_000.0  # a fixed clock: the same input always takes the same path
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
SECRET = b"never served"


def build_tree() -> tuple[str, str]:
    """A root full of traps and a secret next to it; (root, base) realpaths."""
    base = os.path.realpath(tempfile.mkdtemp(prefix="reactor-fuzz-http-"))
    atexit.register(shutil.rmtree, base, True)
    root = os.path.join(base, "root")
    folders = ("root/sub/deeper", "root/sub/.git", "root/.well-known", "root/empty", "outside")
    for folder in (*folders, "root-sibling", "root/%2e"):
        os.makedirs(os.path.join(base, folder))
    files = {
        "root/index.html": b"<h1>home</h1>",
        "root/a.txt": b"a" * 100,
        "root/100%.txt": b"percent",
        "root/space file.txt": b"space",
        "root/\u00fc.txt": b"u",
        "root/sub/index.html": b"sub",
        "root/sub/deeper/x.css": b"x{}",
        "root/.env": SECRET,
        "root/sub/.git/config": SECRET,
        "root/.well-known/security.txt": b"Contact: x",
        "secret.txt": SECRET,
        "outside/secret.txt": SECRET,
        "root-sibling/secret.txt": SECRET,
    }
    for name, content in files.items():
        with open(os.path.join(base, name), "wb") as f:
            f.write(content)
    links = {
        "root/in": "a.txt",
        "root/dir_in": "sub",
        "root/out": os.path.join(base, "secret.txt"),
        "root/rel_out": "../secret.txt",
        "root/dir_out": os.path.join(base, "outside"),
        "root/sibling": "../root-sibling",
        "root/sub/up": "../../secret.txt",
        "root/loop": "loop",
        "root/dangling": "missing",
        "root/abs_in": os.path.join(base, "root", "a.txt"),
        "root/up_and_in": "../root/a.txt",  # leaves the root on the way: refused
    }
    for name, target in links.items():
        os.symlink(target, os.path.join(base, name))
    os.mkfifo(os.path.join(root, "fifo"))
    return root, base


ROOT, BASE = build_tree()
ROOT_FD = os.open(ROOT, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def parse_all(parser: RequestParser, buf, start: int, end: int) -> tuple:
    try:
        request, pos = parser.parse(buf, start, end)
    except HttpError as exc:
        return ("error", exc.status, exc.headers)
    if request is None:
        assert pos == start, "an incomplete head consumed bytes"
        return ("need more",)
    return ("request", request.method, request.target, request.http_version, request.headers, pos)


def incremental(data: bytes, step: int) -> tuple:
    parser = RequestParser()
    for end in range(step, len(data) + step, step):
        outcome = parse_all(parser, data, 0, min(end, len(data)))
        if outcome[0] != "need more":
            return outcome
    return ("need more",)


def without_head_scanner(data: bytes) -> tuple:
    """The whole input parsed by the Python path alone (no http/csrc/head.c)."""
    scanner = request_module.switch.active
    request_module.use("python")
    try:
        return parse_all(RequestParser(), data, 0, len(data))
    finally:
        request_module.use(scanner)


def same_verdict(split: tuple, whole: tuple) -> bool:
    """Equal outcomes, except that an input with several faults may be refused
    for a different one when it arrives in pieces: the fail-fast checks see the
    first provable fault in arrival order (e.g. a NUL at byte 100 of a 9 KiB
    target is a 400 in pieces, a 414 at once). Either way it is refused."""
    if split[0] == whole[0] == "error":
        return True
    return split == whole


def shifted(outcome: tuple, offset: int) -> tuple:
    if outcome[0] != "request":
        return outcome
    return outcome[:-1] + (outcome[-1] + offset,)


def check_request(data: bytes, outcome: tuple) -> None:
    _, method, target, version, headers, pos = outcome
    assert 0 < pos <= len(data), "consumed more than given"
    assert data[:pos].endswith((b"\n\n", b"\n\r\n")), "the head does not end at a blank line"
    assert method in ("GET", "HEAD")
    assert 0 < len(target) <= MAX_TARGET and all(0x21 <= ord(c) <= 0x7E for c in target)
    assert version[0] == 1
    assert len(headers) <= MAX_FIELDS
    for name, value in headers:
        assert TOKEN.fullmatch(name) and name == name.lower(), name
        assert not BAD_VALUE.search(value) and value == value.strip(" \t"), repr(value)
    names = [name for name, _ in headers]
    assert names.count("host") == 1 or (version < (1, 1) and "host" not in names)
    assert "transfer-encoding" not in names
    for length in (v for n, v in headers if n == "content-length"):  # 0 only: no bodies
        assert all(m.strip() and not m.strip().strip("0") for m in length.split(",")), length


def check_error(status: int, headers) -> None:
    assert status in ERROR_STATUSES, f"undefined status {status}"
    if status == 405:
        assert ("Allow", "GET, HEAD") in headers or ENDPOINT_ALLOW[0] in headers
    response = static.error_response(status, "x", keep_alive=False, extra_headers=headers, now=NOW)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"Content-Length: %d\r\n" % len(body) in head + b"\r\n"


def check_resolve(target: str) -> str:
    try:
        path = static.resolve(ROOT, target)
    except static.Redirect as exc:
        location = exc.location
        assert location.startswith("/") and not location.startswith("//"), location
        assert not re.search(r"[\x00-\x20\x7f]", location), repr(location)
        return "resolved 301"
    except HttpError as exc:
        assert exc.status in RESOLVE_STATUSES, f"resolver answered {exc.status}"
        return f"resolved {exc.status}"
    assert path.startswith(ROOT + "/"), f"{target!r} resolved outside the root: {path}"
    assert os.path.realpath(path) == path, f"a symlink is left in {path}"
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode), f"not a regular file: {path}"
    with open(path, "rb") as f:
        assert f.read() != SECRET, f"{target!r} reached a secret"
    return "resolved 200"


def check_plan(outcome: tuple) -> None:
    """The response plan for a resolved request stays within the file."""
    _, method, target, version, headers, _ = outcome
    try:
        fd, st, name = static.open_target(ROOT_FD, ROOT, target)
    except HttpError:
        return
    os.close(fd)
    request = static.Request(method, target, version, headers)
    plan = static.plan(request, name, st, NOW)
    assert plan.status in PLAN_STATUSES
    assert 0 <= plan.offset and plan.offset + plan.length <= st.st_size
    if method == "HEAD":
        assert plan.length == 0
    if method == "GET" and plan.status in (200, 206):
        assert b"Content-Length: %d\r\n" % plan.length in plan.head
    assert plan.head.endswith(b"\r\n\r\n") and plan.head.count(b"\r\n\r\n") == 1


class CatchAll(logging.Handler):
    """Records what reaches the reactor's per-connection catch-all."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class FuzzApp:
    """An application whose on_request takes every path the tests know."""

    def on_request(self, request):
        if request.path == "/echo":
            return Response(request.body, headers=[("X-Method", request.method)])
        if request.path == "/json":
            return Response.json({"query": request.query, "cookies": request.cookies})
        if request.path == "/raise":
            raise RuntimeError("on purpose")
        if request.path == "/junk":
            return 42
        return None  # the static files answer


class Glue:
    """The static-file handler on a real reactor, fed one input per connection;
    with ``endpoints``, an application's on_request in front of the files."""

    def __init__(self, endpoints: bool = False) -> None:
        self.reactor = Reactor()
        self.handler = HttpHandler(
            self.reactor,
            ROOT,
            header_timeout=0,
            keepalive_timeout=0,
            access_log_enabled=False,
            endpoints=Endpoints(self.reactor, FuzzApp(), max_body_size=MAX_BODY)
            if endpoints
            else None,
        )
        self.catch_all = CatchAll()
        logging.getLogger("reactor").addHandler(self.catch_all)
        # The application's own mistakes are logged by design: not the catch-all.
        self.catch_all.addFilter(lambda record: "application on_request" not in record.msg)

    def answer(self, payload: bytes) -> bytes:
        """Send the payload then FIN; everything the server wrote until its EOF."""
        self.catch_all.records.clear()
        ours, theirs = socket.socketpair()
        with theirs:
            ours.setblocking(False)
            self.reactor.add_connection(ours.detach(), self.handler)
            theirs.sendall(payload)
            theirs.shutdown(socket.SHUT_WR)
            theirs.setblocking(False)
            out = bytearray()
            for _ in range(100_000):  # bounded: a hang is a finding too
                self.reactor.run_once(0)
                try:
                    chunk = theirs.recv(1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                out += chunk
            else:
                raise AssertionError("the glue never closed the connection")
        failures = self.catch_all.records
        assert not failures, (
            "handler exception: " + failures[0].getMessage() + repr(failures[0].exc_info)
        )
        return bytes(out)


_glues: dict[bool, Glue] = {}


def check_glue(payload: bytes, endpoints: bool = False) -> None:
    """The real handler answers with well-framed responses only, no secret, no exception."""
    glue = _glues.get(endpoints)
    if glue is None:
        glue = _glues[endpoints] = Glue(endpoints)
    answer = glue.answer(payload)
    assert SECRET not in answer, "a secret was served"
    methods = request_methods(payload, endpoints)
    pos = index = 0
    for _ in range(len(answer)):  # at most one response per byte: a bound, not a count
        if pos == len(answer):
            break
        end = answer.find(b"\r\n\r\n", pos)
        assert end > 0, f"an unterminated head at {pos}: {answer[pos : pos + 100]!r}"
        head = answer[pos : end + 2].decode("latin-1")
        assert re.match(r"HTTP/1\.1 \d{3} [A-Za-z -]*\r\n", head), head[:80]
        if head.startswith("HTTP/1.1 100 "):  # interim (Expect: 100-continue): no body
            assert endpoints, "100 Continue without an endpoint"
            pos = end + 4
            continue
        length = re.search(r"\r\nContent-Length: (\d+)\r\n", head)
        assert length or head[9:12] == "304", f"no Content-Length: {head!r}"
        is_head = index < len(methods) and methods[index] == "HEAD"
        pos = end + 4 + (0 if is_head or length is None else int(length.group(1)))
        assert pos <= len(answer), "a body shorter than its Content-Length"
        index += 1


def request_methods(payload: bytes, bodies: bool = False) -> list[str]:
    """The methods of the complete requests at the start of the input, in order
    (with ``bodies``: endpoint requests, their bodies skipped)."""
    parser, methods, pos = (BodyRequestParser() if bodies else RequestParser()), [], 0
    while pos < len(payload):
        try:
            request, pos = parser.parse(payload, pos, len(payload))
            if request is not None and bodies:
                methods.append(request.method)
                reader = BodyReader(*body_framing(request), MAX_BODY)
                pos = reader.feed(payload, pos, len(payload))
                if not reader.done:
                    break
                continue
        except HttpError:
            break
        if request is None:
            break
        methods.append(request.method)
    return methods


def read_body(data: bytes, start: int, request, step: int) -> tuple:
    """("body", body, end) or ("error", status) or ("need more", consumed) of
    the body after a head, fed in reads of ``step`` bytes."""
    try:
        reader = BodyReader(*body_framing(request), MAX_BODY)
        pos = start
        while pos < len(data) and not reader.done:
            stop = min(len(data), pos + step)
            got = reader.feed(data, pos, stop)
            assert pos <= got <= stop, "a body reader consumed what it was not given"
            assert reader.done or got == stop, "an incomplete body left bytes unread"
            pos = got
    except HttpError as exc:
        assert exc.status in BODY_STATUSES, f"unexpected body status {exc.status}"
        return ("error", exc.status)
    if not reader.done:
        return ("need more", pos)
    body = reader.body
    assert len(body) <= MAX_BODY, "a body over the limit was accepted"
    length, chunked = body_framing(request)
    assert chunked or len(body) == (length or 0), "a body of another length than announced"
    return ("body", body, pos)


def check_body(payload: bytes, step: int) -> str:
    """The endpoint parser, then the body reader whole and in reads of ``step``."""
    try:
        request, start = BodyRequestParser().parse(payload, 0, len(payload))
    except HttpError as exc:
        check_error(exc.status, exc.headers)
        return f"endpoint parser {exc.status}"
    if request is None:
        return "endpoint incomplete head"
    whole = read_body(payload, start, request, len(payload) or 1)
    split = read_body(payload, start, request, step)
    if whole[0] == "need more":
        assert split[0] == "need more", f"reads of {step} bytes disagree: {split!r}"
    else:
        assert split == whole, f"reads of {step} bytes disagree: {split[:2]!r} {whole[:2]!r}"
    if whole[0] == "error":
        return f"body {whole[1]}"
    return "body read" if whole[0] == "body" else "body incomplete"


def check(data: bytes) -> str:
    options = data[0] if data else 0
    payload = data[1:]
    if options & 1:  # a bare target: visible ASCII only, as the parser guarantees
        target = bytes(b for b in payload if 0x21 <= b <= 0x7E).decode("ascii") or "/"
        return check_resolve(target)
    check_glue(payload)
    check_glue(payload, endpoints=True)
    step = 1 + (options >> 1) % 64
    body_kind = check_body(payload, step)
    whole = parse_all(RequestParser(), payload, 0, len(payload))
    assert without_head_scanner(payload) == whole, "the C head scanner disagrees with Python"
    assert same_verdict(incremental(payload, step), whole), f"reads of {step} bytes disagree"
    view = parse_all(RequestParser(), memoryview(payload), 0, len(payload))
    assert same_verdict(view, whole), "the memoryview path (copied in windows) disagrees"
    behind = parse_all(RequestParser(), b"\r\nxx" + payload, 4, len(payload) + 4)
    assert behind == shifted(whole, 4), "an offset changes the result"
    if whole[0] == "error":
        check_error(whole[1], whole[2])
        # a request the endpoints read (the static parser refuses bodies and methods)
        return body_kind if body_kind.startswith("body") else f"parser {whole[1]}"
    if whole[0] == "need more":
        return "incomplete head"
    check_request(payload, whole)
    check_plan(whole)
    return check_resolve(whole[2])


if __name__ == "__main__":
    from _harness import fuzz

    fuzz(NAME, check)
