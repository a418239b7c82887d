"""`python -m reactor --proto http` over real sockets, with independent clients.

Clients: raw sockets (byte-exact framing), `http.client`, `urllib.request` and
`curl`. A secret file lies next to the served root; no traversal attempt may
ever return a byte of it. The upgrade hook is tested in-process at the end.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from testkit import ServerProcess, fd_count, recv_until_eof, rss_bytes, wait_until

from reactor.handler import Handler
from reactor.handlers.static import SMALL_FILE, HttpHandler
from reactor.loop import Reactor

MARKER = b"TOP-SECRET-" + os.urandom(8).hex().encode()
BIG_SIZE = 100 * 1024 * 1024
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


# ---- the site ----------------------------------------------------------------------------


class Site:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        root = self.root
        (root / "sub").mkdir(parents=True)
        (root / "noindex").mkdir()
        (base / "secret.txt").write_bytes(MARKER + b"\n")
        self.files = {
            "index.html": b"<!doctype html><title>home</title><p>home page</p>\n",
            "a.txt": b"alpha\n",
            "empty.txt": b"",
            "small.bin": os.urandom(1000),
            "data.bin": os.urandom(SMALL_FILE * 6 + 123),  # past SMALL_FILE: the sendfile path
            "sub/index.html": b"<p>sub index</p>\n",
            "noindex/x.txt": b"x\n",
            "name with space.txt": b"spaced\n",
        }
        for name, content in self.files.items():
            (root / name).write_bytes(content)
        (root / "link-in").symlink_to("a.txt")
        (root / "link-out").symlink_to("../secret.txt")
        (root / "link-dir-out").symlink_to("..")
        os.mkfifo(root / "fifo")
        self.big = root / "big.bin"
        self.big_sha256 = _write_big(self.big, BIG_SIZE)

    def mtime_date(self, name: str) -> str:
        return email.utils.formatdate((self.root / name).stat().st_mtime, usegmt=True)


def _write_big(path: Path, size: int) -> str:
    """A file whose every MiB differs (a misplaced chunk cannot go unnoticed)."""
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            chunk = struct.pack(">Q", i) + block[8:]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    return Site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def server(site):
    proc = ServerProcess(["--proto", "http", "--root", str(site.root)])
    yield proc
    proc.stop()


# ---- a strict response reader ------------------------------------------------------------


class Response:
    def __init__(self, status: int, head: bytes, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.head = head
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} body={len(self.body)}>"


class Reader:
    """Reads responses one at a time from a socket, framed by Content-Length."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(f"EOF with {len(self.buf)} bytes unparsed: {bytes(self.buf[:200])!r}")
        self.buf += chunk

    def read(self, *, head_request: bool = False) -> Response:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self.buf[: end + 4])
        del self.buf[: end + 4]
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        assert re.fullmatch(r"HTTP/1\.1 \d{3} [A-Za-z -]+", status_line), status_line
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(": ")
            assert name.lower() not in headers, f"duplicate {name}"
            headers[name.lower()] = value
        status = int(status_line.split()[1])
        length = 0 if head_request or status == 304 else int(headers["content-length"])
        while len(self.buf) < length:
            self._fill()
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return Response(status, head, headers, body)

    def at_eof(self) -> bool:
        if self.buf:
            return False
        return self.sock.recv(1) == b""


def get(target: str, *, method: str = "GET", version: str = "1.1", extra: str = "") -> bytes:
    host = "Host: t\r\n" if version == "1.1" else ""
    return f"{method} {target} HTTP/{version}\r\n{host}{extra}\r\n".encode("latin-1")


def exchange(server: ServerProcess, raw: bytes, **read) -> tuple[Response, bool]:
    """Send one request; return the response and whether the server then closed
    (proved by EOF, or disproved by a second request answered on the same socket)."""
    with server.connect() as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        response = reader.read(**read)
        try:
            sock.sendall(get("/a.txt"))
            return response, reader.read().body != b"alpha\n"
        except (EOFError, ConnectionResetError, BrokenPipeError):
            return response, True


def url(server: ServerProcess, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


# ---- what must work --------------------------------------------------------------------


def test_http_client_keep_alive_and_headers(server, site):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        ports = set()
        for name in ("index.html", "a.txt", "small.bin", "data.bin", "a.txt"):
            conn.request("GET", "/" + name)
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == site.files[name]
            assert int(response.getheader("Content-Length")) == len(site.files[name])
            assert response.getheader("Last-Modified") == site.mtime_date(name)
            assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', response.getheader("ETag"))
            date = email.utils.parsedate_to_datetime(response.getheader("Date")).timestamp()
            assert abs(date - time.time()) < 60
            ports.add(conn.sock.getsockname()[1])
        assert len(ports) == 1, "the connection was not reused"
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "text/html; charset=utf-8"
        assert response.read() == site.files["index.html"]
    finally:
        conn.close()


def test_content_types(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for name, expected in [
            ("a.txt", "text/plain; charset=utf-8"),
            ("small.bin", "application/octet-stream"),
            ("sub/", "text/html; charset=utf-8"),
        ]:
            conn.request("HEAD", "/" + name)
            response = conn.getresponse()
            response.read()
            assert response.getheader("Content-Type") == expected
    finally:
        conn.close()


def test_urllib_get_redirect_and_errors(server, site):
    with urllib.request.urlopen(url(server, "/a.txt"), timeout=10) as response:
        assert response.read() == b"alpha\n"
    with urllib.request.urlopen(url(server, "/sub"), timeout=10) as response:
        assert response.url.endswith("/sub/")  # followed the 301
        assert response.read() == site.files["sub/index.html"]
    with urllib.request.urlopen(url(server, "/name%20with%20space.txt"), timeout=10) as response:
        assert response.read() == b"spaced\n"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url(server, "/missing"), timeout=10)
    assert info.value.code == 404
    request = urllib.request.Request(url(server, "/a.txt"), data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code in (405, 413)  # a body is refused before the method is judged


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CURL, "-s", "--max-time", "20", *args], capture_output=True, timeout=30, check=False
    )


@needs_curl
def test_curl_head_range_conditional_and_http10(server, site):
    done = curl("-I", url(server, "/data.bin"))
    head = done.stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(site.files['data.bin'])}\r\n" in head
    assert head.endswith("\r\n\r\n")  # headers only

    done = curl("-r", "100-199", "-w", "%{http_code}", "-o", "-", url(server, "/data.bin"))
    assert done.stdout == site.files["data.bin"][100:200] + b"206"

    done = curl("-z", site.mtime_date("a.txt"), "-w", "%{http_code}", url(server, "/a.txt"))
    assert done.stdout == b"304"
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    done = curl("-z", old, "-w", "%{http_code}", url(server, "/a.txt"))
    assert done.stdout == b"alpha\n200"

    done = curl("--http1.0", "-D", "-", url(server, "/a.txt"))
    out = done.stdout.decode()
    assert out.startswith("HTTP/1.1 200 OK\r\n")
    assert "Connection: close\r\n" in out
    assert out.endswith("\r\n\r\nalpha\n")


@needs_curl
def test_curl_reuses_the_connection(server, site):
    done = curl("-v", url(server, "/a.txt"), url(server, "/small.bin"))
    assert done.stdout == b"alpha\n" + site.files["small.bin"]
    assert b"Re-using existing connection" in done.stderr, done.stderr.decode()


# ---- every status ------------------------------------------------------------------------

STATUS_CASES = [
    # (id, raw request, status, server closes afterwards)
    ("200", get("/a.txt"), 200, False),
    ("206", get("/a.txt", extra="Range: bytes=1-3\r\n"), 206, False),
    ("301", get("/sub"), 301, False),
    ("400-no-host", b"GET /a.txt HTTP/1.1\r\n\r\n", 400, True),
    ("400-bad-field", get("/a.txt", extra="Bad Field: x\r\n"), 400, True),
    ("400-nul", get("/a.txt%00"), 400, False),
    ("404", get("/missing"), 404, False),
    ("404-fifo", get("/fifo"), 404, False),
    ("404-no-index", get("/noindex/"), 404, False),
    ("405", get("/a.txt", method="POST", extra="Content-Length: 0\r\n"), 405, True),
    ("413", get("/a.txt", extra="Content-Length: 5\r\n") + b"hello", 413, True),
    ("414", get("/" + "a" * 9000), 414, True),
    ("416", get("/a.txt", extra="Range: bytes=100-\r\n"), 416, False),
    ("431-size", get("/a.txt", extra="X-Big: " + "b" * 17000 + "\r\n"), 431, True),
    ("431-count", get("/a.txt", extra="".join(f"X-{i}: v\r\n" for i in range(101))), 431, True),
    ("505", b"GET /a.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505, True),
]


@pytest.mark.parametrize(
    "raw, status, closes", [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_status_and_close_semantics(server, raw, status, closes):
    """Parser errors close (framing is lost); a well-framed request keeps the connection."""
    response, closed = exchange(server, raw)
    assert response.status == status
    assert closed == closes
    assert (response.headers.get("connection") == "close") == closes
    if status >= 400 and status not in (416,):
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert str(status).encode() in response.body


def test_status_details(server, site):
    response, _ = exchange(server, get("/a.txt", extra="Range: bytes=1-3\r\n"))
    assert response.body == b"lph"
    assert response.headers["content-range"] == "bytes 1-3/6"
    response, _ = exchange(server, get("/a.txt", extra="Range: bytes=-2\r\n"))
    assert (response.status, response.body) == (206, b"a\n")
    response, _ = exchange(server, get("/a.txt", extra="Range: bytes=2-\r\n"))
    assert (response.status, response.body) == (206, b"pha\n")
    response, _ = exchange(server, get("/a.txt", extra="Range: bytes=0-0,2-3\r\n"))
    assert (response.status, response.body) == (200, b"alpha\n")  # several ranges: all
    response, _ = exchange(server, get("/a.txt", extra="Range: bytes=100-\r\n"))
    assert response.headers["content-range"] == "bytes */6"
    response, _ = exchange(server, get("/sub"))
    assert response.headers["location"] == "/sub/"
    response, _ = exchange(server, get("/a.txt", method="DELETE"))
    assert response.headers["allow"] == "GET, HEAD"
    etag = exchange(server, get("/a.txt"))[0].headers["etag"]
    response, _ = exchange(server, get("/a.txt", extra=f"If-None-Match: {etag}\r\n"))
    assert (response.status, response.body, response.headers["etag"]) == (304, b"", etag)
    since = site.mtime_date("a.txt")
    response, _ = exchange(server, get("/a.txt", extra=f"If-Modified-Since: {since}\r\n"))
    assert response.status == 304
    response, _ = exchange(server, get("/data.bin", extra="Range: bytes=40000-40009\r\n"))
    assert response.body == site.files["data.bin"][40000:40010]  # a range of a sendfile body


def test_http10_closes_unless_keep_alive_is_asked(server):
    response, closed = exchange(server, get("/a.txt", version="1.0"))
    assert (response.status, closed, response.headers["connection"]) == (200, True, "close")
    raw = get("/a.txt", version="1.0", extra="Connection: keep-alive\r\n")
    response, closed = exchange(server, raw)
    assert (closed, response.headers["connection"]) == (False, "keep-alive")
    response, closed = exchange(server, get("/a.txt", extra="Connection: close\r\n"))
    assert (response.body, closed) == (b"alpha\n", True)


def test_head_has_no_body(server, site):
    with server.connect() as sock:
        sock.sendall(get("/data.bin", method="HEAD") + get("/a.txt"))
        reader = Reader(sock)
        head = reader.read(head_request=True)
        assert head.status == 200
        assert int(head.headers["content-length"]) == len(site.files["data.bin"])
        after = reader.read()  # straight after the HEAD's blank line: no body in between
        assert after.body == b"alpha\n"
        sock.sendall(get("/missing", method="HEAD") + get("/a.txt"))
        assert reader.read(head_request=True).status == 404
        assert reader.read().body == b"alpha\n"


# ---- hostile input -----------------------------------------------------------------------

TRAVERSALS = [
    "/../secret.txt",
    "/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "//../secret.txt",
    "/secret.txt%00",
    "/%00../secret.txt",
    "/link-out",
    "/link-dir-out/secret.txt",
    "/link-dir-out/root/a.txt",
    "/link-dir-out/",
    "http://t/../secret.txt",
    "/%252e%252e/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_never_leaves_the_root(server, target):
    with server.connect() as sock:
        sock.sendall(get(target, extra="Connection: close\r\n"))
        sock.settimeout(10)
        everything = recv_until_eof(sock)
    assert MARKER not in everything
    assert everything.startswith(b"HTTP/1.1 ")
    status = int(everything.split(b" ", 2)[1])
    assert status in (400, 404), everything[:200]


@needs_curl
def test_traversal_with_curl_path_as_is(server):
    for target in ("/../secret.txt", "/%2e%2e/secret.txt", "/link-out", "/link-dir-out/secret.txt"):
        done = curl("--path-as-is", "-i", url(server, target))
        assert MARKER not in done.stdout
        assert done.stdout.split(b" ", 2)[1] in (b"400", b"404")


def test_symlink_inside_the_root_is_served(server):
    response, _ = exchange(server, get("/link-in"))
    assert (response.status, response.body) == (200, b"alpha\n")


TLS_CLIENT_HELLO = bytes.fromhex("160301020001000001fc0303") + os.urandom(32) + b"\x00" * 64
GARBAGE = [
    pytest.param(TLS_CLIENT_HELLO, id="tls-client-hello"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="http2-preface"),
    pytest.param(b"hello there, server\r\n\r\n", id="text"),
    pytest.param(b"\x00\xff\xfe\x01garbage", id="binary"),
    pytest.param(b"GET / HTTP/1.1\rHost: t\r\n\r\n", id="bare-cr"),
]


@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_gets_400_and_close(server, payload):
    with server.connect() as sock:
        sock.sendall(payload)
        sock.settimeout(10)
        everything = recv_until_eof(sock)  # EOF proves the close
    assert everything.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nConnection: close\r\n" in everything


# ---- pipelining --------------------------------------------------------------------------


def pipeline_batch(site: Site) -> tuple[bytes, list[tuple[dict, bytes | None]]]:
    """Requests and what each response must be: (expected fields, exact body)."""
    data = site.files["data.bin"]
    since = site.mtime_date("index.html")
    steps = [
        (get("/a.txt"), {"status": 200}, b"alpha\n", False),
        (get("/data.bin", method="HEAD"), {"status": 200}, b"", True),
        (get("/data.bin"), {"status": 200}, data, False),
        (get("/missing"), {"status": 404}, None, False),
        (get("/small.bin", extra="Range: bytes=10-19\r\n"), {"status": 206}, None, False),
        (get("/sub"), {"status": 301, "location": "/sub/"}, None, False),
        (get("/", extra=f"If-Modified-Since: {since}\r\n"), {"status": 304}, b"", False),
        (get("/data.bin", extra="Range: bytes=70000-\r\n"), {"status": 206}, data[70000:], False),
        (get("/empty.txt"), {"status": 200}, b"", False),
        (get("/a.txt", extra="Connection: close\r\n"), {"status": 200}, b"alpha\n", False),
    ]
    steps[4] = (steps[4][0], steps[4][1], site.files["small.bin"][10:20], False)
    raw = b"".join(step[0] for step in steps)
    return raw, [(step[1], step[2], step[3]) for step in steps]


def check_pipeline(sock: socket.socket, expected) -> None:
    reader = Reader(sock)
    for fields, body, is_head in expected:
        response = reader.read(head_request=is_head)
        assert response.status == fields["status"], response
        for name, value in fields.items():
            if name != "status":
                assert response.headers[name] == value
        if body is not None:
            assert response.body == body
    sock.settimeout(10)
    assert reader.at_eof()  # the last asked to close; nothing follows it


def test_pipelined_requests_in_one_send_answer_in_order(server, site):
    raw, expected = pipeline_batch(site)
    with server.connect() as sock:
        sock.sendall(raw)
        check_pipeline(sock, expected)


def test_pipelined_requests_split_at_odd_offsets(server, site):
    raw, expected = pipeline_batch(site)
    with server.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for offset in range(0, len(raw), 7):  # heads cut mid-line, mid-CRLF, mid-name
            sock.sendall(raw[offset : offset + 7])
        check_pipeline(sock, expected)


def test_pipelined_request_waits_for_a_stalled_body(server, site):
    """A body far larger than the socket buffers meets EAGAIN; the requests
    behind it must wait until it is handed over, then follow it in order."""
    span = 16 * 1024 * 1024  # > tcp_wmem's 4 MiB autotuning cap: sendfile must stall
    with open(site.big, "rb") as f:
        expected = f.read(span)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    with sock:
        sock.sendall(
            get("/big.bin", extra=f"Range: bytes=0-{span - 1}\r\n")
            + get("/a.txt")
            + get("/data.bin", extra="Range: bytes=0-99999\r\n")
            + get("/small.bin", extra="Connection: close\r\n")
        )
        time.sleep(0.3)  # not reading yet: the server is stuck mid-body
        sock.settimeout(30)
        reader = Reader(sock)
        first = reader.read()
        assert first.status == 206 and first.body == expected
        assert reader.read().body == b"alpha\n"
        assert reader.read().body == site.files["data.bin"][:100000]
        assert reader.read().body == site.files["small.bin"]
        assert reader.at_eof()


def test_pipelined_flood_is_answered_completely(server, site):
    """Thousands of requests in one go: the server must neither lose nor reorder
    any, nor buffer responses without bound while the client is not reading."""
    count = 3000
    targets = ["/a.txt", "/small.bin", "/missing"]
    raw = b"".join(get(targets[i % 3]) for i in range(count)) + get("/a.txt", method="HEAD")
    with server.connect() as sock:
        sender = threading.Thread(target=sock.sendall, args=(raw,))
        sender.start()
        time.sleep(0.2)  # let the server face a client that does not read yet
        reader = Reader(sock)
        for i in range(count):
            response = reader.read()
            if i % 3 == 0:
                assert response.body == b"alpha\n"
            elif i % 3 == 1:
                assert response.body == site.files["small.bin"]
            else:
                assert response.status == 404
        assert reader.read(head_request=True).status == 200
        sender.join()


# ---- big bodies, slow readers, disconnects -------------------------------------------------


def test_hundred_mebibyte_file_byte_exact(server, site):
    rss_before = rss_bytes(server.pid)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/big.bin")
        response = conn.getresponse()
        assert response.status == 200
        assert int(response.getheader("Content-Length")) == BIG_SIZE
        digest, got = hashlib.sha256(), 0
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            got += len(chunk)
        assert got == BIG_SIZE
        assert digest.hexdigest() == site.big_sha256
    finally:
        conn.close()
    # sendfile: the body never passed through the server's memory
    assert rss_bytes(server.pid) - rss_before < 32 * 1024 * 1024


def test_slow_reader_does_not_block_other_clients(server, site):
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    try:
        slow.sendall(get("/big.bin"))
        time.sleep(0.3)  # the server fills the slow socket and meets EAGAIN
        latencies = []
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(20):
            started = time.monotonic()
            conn.request("GET", "/a.txt")
            assert conn.getresponse().read() == b"alpha\n"
            latencies.append(time.monotonic() - started)
        conn.close()
        # the slow transfer is still stalled (nothing read; the kernel holds a few MB at most)
        assert len(slow.recv(65536, socket.MSG_PEEK)) > 0
        # ... and it resumes across EAGAIN to the last byte
        slow.settimeout(30)
        reader = Reader(slow)
        while b"\r\n\r\n" not in reader.buf:
            reader._fill()
        head_end = reader.buf.find(b"\r\n\r\n") + 4
        digest = hashlib.sha256(reader.buf[head_end:])
        got = len(reader.buf) - head_end
        while got < BIG_SIZE:
            chunk = slow.recv(1 << 20)
            assert chunk, f"EOF after {got} body bytes"
            digest.update(chunk)
            got += len(chunk)
        assert got == BIG_SIZE and digest.hexdigest() == site.big_sha256
        print(f"other client's latency while one reader stalls: max {max(latencies) * 1e3:.1f} ms")
    finally:
        slow.close()


def test_disconnect_mid_body_releases_everything(server_factory, site):
    server = server_factory("--proto", "http", "--root", str(site.root), "--quiet")
    with server.connect() as warm:
        warm.sendall(get("/a.txt", extra="Connection: close\r\n"))
        warm.settimeout(10)
        recv_until_eof(warm)
    time.sleep(0.2)  # the warm-up connection is fully closed on the server too
    baseline = fd_count(server.pid)
    socks = []
    for _ in range(20):
        sock = server.connect()
        sock.sendall(get("/big.bin"))
        sock.recv(65536)  # the body has started
        socks.append(sock)
    assert fd_count(server.pid) >= baseline + 20  # each holds its socket and the file
    other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for i, sock in enumerate(socks):
        if i % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        sock.close()
        other.request("GET", "/a.txt")
        assert other.getresponse().read() == b"alpha\n"  # unaffected meanwhile
    other.close()
    assert wait_until(lambda: fd_count(server.pid) == baseline, 10), (
        f"fds: {fd_count(server.pid)} vs baseline {baseline}"
    )


def test_graceful_stop_finishes_the_body_in_progress(server_factory, site):
    server = server_factory(
        "--proto", "http", "--root", str(site.root), "--quiet", "--shutdown-timeout", "30"
    )  # fmt: skip
    with server.connect() as downloading, server.connect() as idle:
        idle.sendall(get("/a.txt"))
        assert Reader(idle).read().body == b"alpha\n"
        downloading.sendall(get("/big.bin"))
        reader = Reader(downloading)
        while b"\r\n\r\n" not in reader.buf:
            reader._fill()  # the body has started
        server.proc.send_signal(signal.SIGTERM)
        idle.settimeout(10)
        assert idle.recv(1) == b""  # an idle keep-alive connection is closed at once
        downloading.settimeout(30)
        head_end = reader.buf.find(b"\r\n\r\n") + 4
        digest, got = hashlib.sha256(reader.buf[head_end:]), len(reader.buf) - head_end
        while chunk := downloading.recv(1 << 20):
            digest.update(chunk)
            got += len(chunk)
        assert got == BIG_SIZE and digest.hexdigest() == site.big_sha256  # then EOF
    assert server.proc.wait(30) == 0


# ---- timeouts ----------------------------------------------------------------------------


@pytest.fixture
def impatient(server_factory, site):
    # keep-alive 2 s: a busy client pausing 0.2 s between requests keeps a wide margin
    return server_factory(
        "--proto", "http", "--root", str(site.root), "--header-timeout", "1",
        "--keepalive-timeout", "2",
    )  # fmt: skip


def test_slowloris_gets_408_and_close(impatient):
    with impatient.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sock.settimeout(0.2)
        received = b""
        while time.monotonic() - started < 15 and not received:
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # always progressing, never finishing
                received = sock.recv(65536)
            except TimeoutError:
                continue
        assert time.monotonic() - started >= 1  # not before its time
        sock.settimeout(10)
        everything = received + recv_until_eof(sock)
    assert everything.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nConnection: close\r\n" in everything


def test_silent_connection_is_closed_without_a_response(impatient):
    with impatient.connect() as sock:
        sock.settimeout(15)
        assert sock.recv(1) == b""


def test_idle_keep_alive_closes_but_an_active_one_stays(impatient):
    with impatient.connect() as idle, impatient.connect() as busy:
        idle.sendall(get("/a.txt"))
        assert Reader(idle).read().body == b"alpha\n"
        reader = Reader(busy)
        started = time.monotonic()
        while time.monotonic() - started < 3.5:  # past the keep-alive timeout, in short steps
            busy.sendall(get("/a.txt"))
            assert reader.read().body == b"alpha\n"
            time.sleep(0.2)
        idle.settimeout(10)
        assert idle.recv(1) == b""  # closed quietly after its keep-alive timeout


# ---- access log --------------------------------------------------------------------------

CLF = re.compile(
    r"reactor\.access: 127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
    r'"GET /a\.txt\?log-(\w+) HTTP/1\.1" (\d{3}) (\d+|-)$'
)


def test_access_log_in_common_log_format(server):
    tag = os.urandom(4).hex()
    exchange(server, get(f"/a.txt?log-{tag}"))
    (line,) = server.wait_for_log(rf"log-{tag}")
    match = CLF.search(line)
    assert match and match.groups() == (tag, "200", "6"), line


def test_quiet_turns_the_access_log_off(server_factory, site):
    quiet = server_factory("--proto", "http", "--root", str(site.root), "--quiet")
    exchange(quiet, get("/a.txt?quiet"))
    exchange(quiet, get("/missing"))
    quiet.stop()
    assert "reactor.access" not in quiet.log_text()


# ---- the upgrade hook, in-process ---------------------------------------------------------

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
FRAME = bytes.fromhex("818537fa213d7f9f4d5158")  # RFC 6455 §5.7: masked "Hello"


class UpgradeRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, conn, request, buf, pos) -> None:
        state = conn.ctx
        self.calls.append((request.target, bytes(buf[pos:]), state.file_fd, conn.pending()))
        conn.ctx = None
        conn.handler = _Sink()  # the callee takes over the connection


class _Sink(Handler):  # the default callbacks: ignore data, close on EOF
    pass


def run_until(reactor: Reactor, condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.run_once(0.01)


@pytest.fixture
def in_process(site):
    reactor = Reactor()
    recorder = UpgradeRecorder()
    handler = HttpHandler(reactor, site.root, access_log_enabled=False, upgrade=recorder)
    peers = []

    def connect() -> socket.socket:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        reactor.add_connection(ours.detach(), handler)
        peers.append(theirs)
        return theirs

    yield reactor, handler, recorder, connect
    for peer in peers:
        peer.close()
    reactor.dispose()


def test_upgrade_gets_the_bytes_behind_the_head(in_process):
    reactor, handler, recorder, connect = in_process
    peer = connect()
    peer.sendall(UPGRADE + FRAME)  # the frame arrives in the same read as the head
    run_until(reactor, lambda: recorder.calls)
    assert recorder.calls == [("/chat", FRAME, -1, 0)]
    assert not handler.heads and not handler.idle  # no HTTP timer will touch it
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # the HTTP side answered nothing


def test_upgrade_waits_for_the_response_in_progress(in_process, site):
    reactor, handler, recorder, connect = in_process
    peer = connect()
    span = 4 * 1024 * 1024  # far past a socketpair's buffers: the body meets EAGAIN
    peer.sendall(get("/big.bin", extra=f"Range: bytes=0-{span - 1}\r\n") + UPGRADE + FRAME)
    reader = Reader(peer)
    peer.settimeout(0.05)
    with open(site.big, "rb") as f:
        data = f.read(span)
    while not recorder.calls:  # read slowly so the body meets EAGAIN on the way
        reactor.run_once(0.01)
        try:
            reader._fill()
        except TimeoutError:
            pass
    assert recorder.calls == [("/chat", FRAME, -1, 0)]  # only after the whole body was handed over
    peer.settimeout(5)
    assert reader.read().body == data


def test_without_an_upgrade_callee_the_request_is_a_plain_get(in_process, site):
    reactor, _, _, connect = in_process
    plain = HttpHandler(reactor, site.root, access_log_enabled=False)
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    reactor.add_connection(ours.detach(), plain)
    try:
        peer.sendall(UPGRADE.replace(b"/chat", b"/a.txt"))
        peer.settimeout(0.05)
        reader = Reader(peer)
        deadline = time.monotonic() + 10
        while b"alpha\n" not in reader.buf and time.monotonic() < deadline:
            reactor.run_once(0.01)
            try:
                reader._fill()
            except TimeoutError:
                pass
        assert reader.read().status == 200  # RFC 9110 §7.8: Upgrade may be ignored
    finally:
        peer.close()


def test_a_changed_file_is_served_fresh_within_about_a_second(server_factory, tmp_path):
    """Small files are answered from memory, and a target's resolution is reused for the
    rest of the current second: a change on disk shows within about a second."""
    (tmp_path / "news.txt").write_bytes(b"old\n")
    server = server_factory("--proto", "http", "--root", str(tmp_path), "--quiet")

    def fetch() -> bytes:
        with server.connect() as sock:
            sock.sendall(get("/news.txt"))
            return Reader(sock).read().body

    assert fetch() == b"old\n"
    (tmp_path / "news.txt").write_bytes(b"brand new\n")
    assert fetch() in (b"old\n", b"brand new\n")  # the same second may still say old
    time.sleep(1.1)  # the next second of the server's clock
    assert fetch() == b"brand new\n"
    (tmp_path / "news.txt").unlink()
    time.sleep(1.1)
    with server.connect() as sock:
        sock.sendall(get("/news.txt"))
        assert Reader(sock).read().status == 404
