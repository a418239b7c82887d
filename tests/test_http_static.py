"""Static-file logic: confinement of targets to the root (attacks, symlinks,
directories), MIME types, dates, conditional and range matrices, error responses.
Responses are read back with the stdlib's http.client, an independent parser."""

from __future__ import annotations

import http.client
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reactor.http import static
from reactor.http.request import HttpError, Request, RequestParser
from reactor.http.static import (
    UNSATISFIABLE,
    Redirect,
    content_type,
    date_line,
    error_response,
    http_date,
    parse_http_date,
    parse_range,
    plan,
    resolve,
)


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def confinement(request, monkeypatch) -> str:
    """Every test runs with both confinements: the kernel's (openat2 RESOLVE_BENEATH)
    and the walk that replaces it where openat2 is missing."""
    if request.param == "openat2" and static.CONFINE != "openat2":
        pytest.skip("openat2 is not available here")
    monkeypatch.setattr(static, "CONFINE", request.param)
    return request.param


# --- a file tree with traps ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_text("secret")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = base / "root"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "a.txt").write_text("a")
    (root / "space file.txt").write_text("s")
    (root / "ü.txt").write_text("u")
    for folder in ("sub", "empty", "evil.com", "idx_out", "idx_dir"):
        (root / folder).mkdir()
    (root / "sub" / "index.html").write_text("sub")
    (root / "sub" / "deep.css").write_text("x")
    (root / "idx_dir" / "index.html").mkdir()  # an index that is a directory
    os.symlink(root / "a.txt", root / "link_in")  # absolute, inside
    os.symlink("sub", root / "link_dir_in")  # relative, inside
    os.symlink(base / "secret.txt", root / "link_out")
    os.symlink("../secret.txt", root / "link_rel_out")
    os.symlink(outside, root / "link_dir_out")
    sibling = base / "root-sibling"  # shares the root's name as a prefix
    sibling.mkdir()
    (sibling / "secret.txt").write_text("secret")
    os.symlink(sibling, root / "link_sibling")
    os.symlink(base / "secret.txt", root / "idx_out" / "index.html")
    os.symlink("loop", root / "loop")
    os.symlink("missing", root / "dangling")
    os.mkfifo(root / "fifo")
    return root


@pytest.fixture(scope="module")
def root(tree) -> str:
    return os.path.realpath(tree)


def status_of(root: str, target: str) -> int:
    try:
        resolve(root, target)
    except HttpError as error:
        return error.status
    return 200


@pytest.mark.parametrize(
    "target,relative",
    [
        ("/", "index.html"),
        ("/a.txt", "a.txt"),
        ("/a.txt?x=1#frag", "a.txt"),
        ("/a.txt#frag", "a.txt"),
        ("/./a.txt", "a.txt"),
        ("/sub/../a.txt", "a.txt"),
        ("/sub/%2e%2e/a.txt", "a.txt"),
        ("/sub/", "sub/index.html"),
        ("/sub/.", "sub/index.html"),
        ("/sub/deep.css", "sub/deep.css"),
        ("//sub//deep.css", "sub/deep.css"),
        ("/space%20file.txt", "space file.txt"),
        ("/%C3%BC.txt", "ü.txt"),
        ("/%c3%bc.txt", "ü.txt"),
        ("/link_in", "a.txt"),  # a symlink inside the root is fine
        ("/link_dir_in/deep.css", "sub/deep.css"),
        ("/link_dir_in/", "sub/index.html"),
        ("http://example.com/a.txt?q", "a.txt"),  # absolute-form: its path
        ("HTTPS://example.com", "index.html"),
        ("/..", "index.html"),  # dot-segments never climb above the root
    ],
)
def test_resolves_inside_the_root(root, target, relative):
    assert resolve(root, target) == os.path.join(root, relative)


@pytest.mark.parametrize(
    "target,status",
    [
        ("/../secret.txt", 404),  # clamped to /secret.txt inside the root: missing
        ("/../../../../etc/passwd", 404),
        ("/%2e%2e/secret.txt", 404),
        ("/%2E%2E/%2e%2E/secret.txt", 404),
        ("/.%2e/secret.txt", 404),
        ("/sub/../../secret.txt", 404),
        ("//etc/passwd", 404),
        ("/..%2fsecret.txt", 400),  # encoded slash
        ("/..%2Fsecret.txt", 400),
        ("/%2f%2fetc/passwd", 400),
        ("/..\\secret.txt", 400),  # backslash
        ("/%5c..%5csecret.txt", 400),
        ("/a.txt%00.html", 400),  # NUL
        ("/%00", 400),
        ("/%zz", 400),  # invalid escapes
        ("/%4", 400),
        ("/a%", 400),
        ("*", 400),  # asterisk-form
        ("example.com:443", 400),  # authority-form
        ("ftp://x/a.txt", 400),
        ("/link_out", 404),  # symlinks leaving the root
        ("/link_rel_out", 404),
        ("/link_dir_out/secret.txt", 404),
        ("/link_dir_out/", 404),
        ("/link_sibling/secret.txt", 404),  # "/root-sibling" starts with "/root"
        ("/idx_out/", 404),  # index.html is a symlink out of the root
        ("/idx_dir/", 404),  # index.html is a directory
        ("/empty/", 404),  # no listings
        ("/missing", 404),
        ("/a.txt/", 404),  # a file is not a directory
        ("/a.txt/x", 404),
        ("/fifo", 404),  # only regular files
        ("/loop", 404),
        ("/dangling", 404),
        ("/" + "n" * 300, 404),  # name too long
    ],
)
def test_attacks_and_missing_files(root, target, status):
    assert status_of(root, target) == status


@pytest.mark.parametrize(
    "target,location",
    [
        ("/sub", "/sub/"),
        ("/sub?x=1&y", "/sub/?x=1&y"),
        ("/link_dir_in", "/link_dir_in/"),
        ("/x/../sub", "/sub/"),  # the normalised path
        ("//evil.com", "/evil.com/"),  # never "//evil.com/": that would leave the site
        ("/%65vil.com", "/%65vil.com/"),
        ("http://h/sub?q", "/sub/?q"),
    ],
)
def test_directory_without_slash_redirects(root, target, location):
    with pytest.raises(Redirect) as caught:
        resolve(root, target)
    assert caught.value.status == 301 and caught.value.location == location
    assert caught.value.headers == (("Location", location),)


def test_the_root_may_itself_be_reached_through_a_symlink(tree, tmp_path):
    alias = tmp_path / "alias"
    os.symlink(tree, alias)
    real = os.path.realpath(alias)
    assert resolve(real, "/link_in") == os.path.join(real, "a.txt")
    assert status_of(real, "/link_out") == 404


TRICKY_PIECES = [
    "/", "//", ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "%00", "%", "%2", "\\", "?", "#",
    "a.txt", "sub", "secret.txt", "outside", "link_out", "link_rel_out", "link_dir_out",
    "link_dir_in", "link_sibling", "idx_out", "fifo", "loop", "evil.com", "%C3%BC.txt", "%252e", "http://h",
    "~", ";", "index.html",
]  # fmt: skip


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.sampled_from(TRICKY_PIECES), max_size=10),
    lead=st.sampled_from(["/", "", "http://x/", "//"]),
)
def test_resolved_path_is_always_inside_the_root(root, tree, pieces, lead):
    target = lead + "".join(pieces)
    check_confined(root, tree, target)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60))
def test_any_visible_ascii_target_is_confined(root, tree, target):
    check_confined(root, tree, target)


def check_confined(root: str, tree: Path, target: str) -> None:
    try:
        path = resolve(root, target)
    except Redirect as redirect:
        location_path = redirect.location.partition("?")[0]
        assert location_path.startswith("/") and not location_path.startswith("//")
        assert "\\" not in location_path  # browsers read "\\" as "/" in a path
        return
    except HttpError as error:
        assert error.status in (400, 404)
        return
    real = os.path.realpath(path)
    assert real == path and real.startswith(root + os.sep)
    assert os.path.isfile(real) and "secret" not in Path(real).read_text()


# --- MIME -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/r/index.html", "text/html; charset=utf-8"),
        ("/r/INDEX.HTM", "text/html; charset=utf-8"),
        ("/r/app.js", "text/javascript; charset=utf-8"),
        ("/r/mod.mjs", "text/javascript; charset=utf-8"),
        ("/r/style.css", "text/css; charset=utf-8"),
        ("/r/a.txt", "text/plain; charset=utf-8"),
        ("/r/data.json", "application/json"),
        ("/r/logo.svg", "image/svg+xml"),
        ("/r/p.png", "image/png"),
        ("/r/p.JPG", "image/jpeg"),
        ("/r/p.jpeg", "image/jpeg"),
        ("/r/p.gif", "image/gif"),
        ("/r/p.webp", "image/webp"),
        ("/r/favicon.ico", "image/vnd.microsoft.icon"),
        ("/r/m.wasm", "application/wasm"),
        ("/r/f.xml", "application/xml"),
        ("/r/f.pdf", "application/pdf"),
        ("/r/f.woff", "font/woff"),
        ("/r/f.woff2", "font/woff2"),
        ("/r/v.mp4", "video/mp4"),
        ("/r/v.webm", "video/webm"),
        ("/r/archive.tar.gz", "application/gzip"),
        ("/r/blob.bin", "application/octet-stream"),
        ("/r/README", "application/octet-stream"),
        ("/r/.htaccess", "application/octet-stream"),  # a dot file has no extension
        ("/r/dir.d/file", "application/octet-stream"),
        ("/r/file.", "application/octet-stream"),
    ],
)
def test_content_type(path, expected):
    assert content_type(path) == expected


# --- dates ------------------------------------------------------------------------------------

RFC_EXAMPLE = 784111777  # RFC 9110 §5.6.7: Sun, 06 Nov 1994 08:49:37 GMT


def test_http_date_is_imf_fixdate():
    assert http_date(RFC_EXAMPLE) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(RFC_EXAMPLE + 0.999) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "  Sun, 06 Nov 1994 08:49:37 GMT ",
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
    ],
)
def test_parse_http_date_accepts_the_three_formats(text):
    assert parse_http_date(text, now=RFC_EXAMPLE) == RFC_EXAMPLE


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",  # Arabic-Indic digits are not DIGIT
        "1994-11-06T08:49:37Z",
        "Sat, 01 Jan 0000 00:00:00 GMT",  # no year 0 in any calendar timegm knows
        "Sat Jan  1 00:00:00 0000",
        "Mon, 31 Feb 2026 00:00:00 GMT",  # days the month does not have
        "Mon Feb 29 00:00:00 2026",
        "Monday, 31-Apr-26 00:00:00 GMT",
        "Mon, 00 Jan 2026 00:00:00 GMT",
    ],
)
def test_parse_http_date_rejects_others(text):
    assert parse_http_date(text, now=RFC_EXAMPLE) is None


@pytest.mark.parametrize(
    "two_digits,year", [("30", 2030), ("76", 2076), ("77", 1977), ("99", 1999)]
)
def test_two_digit_years_never_land_more_than_50_years_ahead(two_digits, year):
    now_2026 = 1_780_000_000
    seconds = parse_http_date(f"Friday, 01-Jan-{two_digits} 00:00:00 GMT", now_2026)
    assert http_date(seconds).endswith(f" {year} 00:00:00 GMT")


def test_date_line_is_formatted_once_per_second():
    first = date_line(RFC_EXAMPLE + 0.1)
    assert first == b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
    assert date_line(RFC_EXAMPLE + 0.9) is first
    assert date_line(RFC_EXAMPLE + 1) == b"Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n"


# --- response plans ----------------------------------------------------------------------------

MTIME = 1_700_000_000
NOW = MTIME + 100
SIZE = 1024


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> tuple[str, os.stat_result]:
    path = tmp_path_factory.mktemp("plan") / "data.bin"
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    os.utime(path, ns=(MTIME * 10**9 + 123, MTIME * 10**9 + 123))
    return str(path), os.stat(path)


def make_request(*headers: str, method: str = "GET", version: str = "1.1") -> Request:
    lines = [f"{method} /data.bin HTTP/{version}", "Host: h", *headers]
    return RequestParser().parse(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))[0]


class FakeSocket:
    def __init__(self, data: bytes) -> None:
        self.file = io.BytesIO(data)

    def makefile(self, *args, **kwargs):
        return self.file


def read_response(data: bytes, method: str = "GET") -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(FakeSocket(data), method=method)
    response.begin()
    return response


def run_plan(data_file, *headers: str, method: str = "GET", version: str = "1.1", now=NOW):
    path, st_result = data_file
    result = plan(make_request(*headers, method=method, version=version), path, st_result, now)
    response = read_response(result.head, method="HEAD")  # the head only: no body follows
    assert result.head.endswith(b"\r\n\r\n") and result.head.count(b"\r\n\r\n") == 1
    return result, response


ETAG = f'"{MTIME * 10**9 + 123:x}-{SIZE:x}"'
LAST_MODIFIED = http_date(MTIME)


def test_plain_200(data_file):
    result, response = run_plan(data_file)
    assert (result.status, result.offset, result.length) == (200, 0, SIZE)
    assert response.status == 200 and response.version == 11
    assert response.getheader("Content-Length") == str(SIZE)
    assert response.getheader("Content-Type") == "application/octet-stream"
    assert response.getheader("ETag") == ETAG
    assert response.getheader("Last-Modified") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert response.getheader("Date") == http_date(NOW)
    assert response.getheader("Accept-Ranges") == "bytes"
    assert response.getheader("Connection") is None and result.keep_alive


def test_head_has_the_same_head_and_no_body(data_file):
    get, _ = run_plan(data_file)
    head, response = run_plan(data_file, method="HEAD")
    assert head.head == get.head and head.length == 0
    assert response.getheader("Content-Length") == str(SIZE)


@pytest.mark.parametrize(
    "version,connection,header,keep_alive",
    [
        ("1.1", None, None, True),
        ("1.1", "close", "close", False),
        ("1.0", None, "close", False),
        ("1.0", "keep-alive", "keep-alive", True),
    ],
)
def test_connection_header(data_file, version, connection, header, keep_alive):
    headers = [f"Connection: {connection}"] if connection else []
    for extra in ([], ["Range: bytes=0-0"]):  # the cached and the general path
        result, response = run_plan(data_file, *headers, *extra, version=version)
        assert response.getheader("Connection") == header and result.keep_alive is keep_alive


def test_the_glue_may_force_close(data_file):
    path, st_result = data_file
    for headers in ((), ("Range: bytes=0-0",)):
        result = plan(make_request(*headers), path, st_result, NOW, keep_alive=False)
        assert result.keep_alive is False
        assert read_response(result.head, "HEAD").getheader("Connection") == "close"


def test_the_etag_follows_the_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("one")
    first = static.file_meta(str(path), os.stat(path))
    os.utime(path, ns=(5, 5))
    second = static.file_meta(str(path), os.stat(path))
    path.write_text("three")
    os.utime(path, ns=(5, 5))
    third = static.file_meta(str(path), os.stat(path))
    assert len({first.etag, second.etag, third.etag}) == 3
    assert third.size == 5 and b"Content-Length: 5\r\n" in third.full_200


def test_the_metadata_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(static, "_META_CACHE_SIZE", 3)
    monkeypatch.setattr(static, "_meta_cache", {})
    path = tmp_path / "f"
    path.write_text("x")
    for ns in range(10):
        os.utime(path, ns=(ns, ns))
        static.file_meta(str(path), os.stat(path))
    assert len(static._meta_cache) == 3


OLD = http_date(MTIME - 1)
NEWER = http_date(MTIME + 50)


@pytest.mark.parametrize(
    "headers,status",
    [
        # If-None-Match (weak comparison, lists, "*") beats If-Modified-Since
        ([f"If-None-Match: {ETAG}"], 304),
        ([f"If-None-Match: W/{ETAG}"], 304),
        ([f'If-None-Match: "x", {ETAG}'], 304),
        (['If-None-Match: "x"', f"If-None-Match: {ETAG}"], 304),  # two field lines
        (["If-None-Match: *"], 304),
        (['If-None-Match: "x"'], 200),
        ([f'If-None-Match: {ETAG[:-2]}"'], 200),
        (['If-None-Match: "x"', f"If-Modified-Since: {NEWER}"], 200),  # INM wins
        ([f"If-None-Match: {ETAG}", f"If-Modified-Since: {OLD}"], 304),
        ([f"If-Modified-Since: {LAST_MODIFIED}"], 304),
        ([f"If-Modified-Since: {NEWER}"], 304),
        ([f"If-Modified-Since: {OLD}"], 200),
        (["If-Modified-Since: not a date"], 200),
        ([f"If-Modified-Since: {LAST_MODIFIED}", f"If-Modified-Since: {NEWER}"], 200),  # 2 dates
        # preconditions (RFC 9110 §13.1.1, §13.1.4) come first
        ([f"If-Match: {ETAG}"], 200),
        (["If-Match: *"], 200),
        (['If-Match: "x"'], 412),
        ([f"If-Match: W/{ETAG}"], 412),  # If-Match compares strongly
        ([f"If-Match: {ETAG}", f"If-Unmodified-Since: {OLD}"], 200),  # If-Match wins
        ([f"If-Unmodified-Since: {OLD}"], 412),
        ([f"If-Unmodified-Since: {LAST_MODIFIED}"], 200),
        (["If-Unmodified-Since: garbage"], 200),
        (['If-Match: "x"', f"If-None-Match: {ETAG}"], 412),
    ],
)
def test_conditionals(data_file, headers, status):
    result, response = run_plan(data_file, *headers)
    assert result.status == response.status == status
    if status == 304:
        assert result.length == 0 and response.getheader("Content-Length") is None
        assert response.getheader("ETag") == ETAG
        assert response.getheader("Last-Modified") == LAST_MODIFIED
        assert response.getheader("Date") == http_date(NOW)
    if status == 200:
        assert result.length == SIZE and response.getheader("Content-Length") == str(SIZE)
    if status == 412:
        assert result.length == 0 and response.getheader("Content-Length") == "0"


def test_304_for_head_too(data_file):
    result, response = run_plan(data_file, f"If-None-Match: {ETAG}", method="HEAD")
    assert result.status == 304 and result.length == 0


@pytest.mark.parametrize(
    "value,expected",
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=0-0", (0, 0)),
        ("bytes=5-", (5, 1023)),
        ("bytes=-10", (1014, 1023)),
        ("bytes=-1024", (0, 1023)),
        ("bytes=-5000", (0, 1023)),  # a suffix longer than the file: the whole file
        ("bytes=1000-5000", (1000, 1023)),  # end clamped to size - 1
        ("bytes=1023-1023", (1023, 1023)),
        ("bytes=0-" + "9" * 40, (0, 1023)),
        ("BYTES=0-1", (0, 1)),  # range units are case-insensitive
        ("bytes= 0-1 ", (0, 1)),
        ("bytes=0-1,", (0, 1)),  # empty list elements are ignored
        ("bytes=, 0-1", (0, 1)),
        ("bytes=1024-", UNSATISFIABLE),
        ("bytes=1024-2000", UNSATISFIABLE),
        ("bytes=" + "9" * 40 + "-", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("bytes=0-1, 0-1", None),
        ("bytes=5-1", None),  # last < first: invalid
        ("bytes=", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes=1-2-3", None),
        ("bytes=0x1-2", None),
        ("bytes=\u0661-2", None),  # a non-ASCII digit
        ("bytes=0 - 1", None),
        ("bytes 0-1", None),
        ("items=0-1", None),
        ("=0-1", None),
        ("bytes=+1-2", None),
    ],
)
def test_parse_range(value, expected):
    assert parse_range(value, SIZE) == expected


@pytest.mark.parametrize(
    "headers,status,first,length",
    [
        (["Range: bytes=0-9"], 206, 0, 10),
        (["Range: bytes=-10"], 206, 1014, 10),
        (["Range: bytes=1000-"], 206, 1000, 24),
        (["Range: bytes=0-99999"], 206, 0, SIZE),
        (["Range: bytes=1024-"], 416, 0, 0),
        (["Range: bytes=-0"], 416, 0, 0),
        (["Range: bytes=0-1,4-5"], 200, 0, SIZE),
        (["Range: bytes=9-1"], 200, 0, SIZE),
        (["Range: pages=1"], 200, 0, SIZE),
        # If-Range: a strong ETag or the exact Last-Modified date (§13.1.5)
        ([f"If-Range: {ETAG}", "Range: bytes=0-9"], 206, 0, 10),
        (['If-Range: "old"', "Range: bytes=0-9"], 200, 0, SIZE),
        ([f"If-Range: W/{ETAG}", "Range: bytes=0-9"], 200, 0, SIZE),
        ([f"If-Range: {LAST_MODIFIED}", "Range: bytes=0-9"], 206, 0, 10),
        ([f"If-Range: {NEWER}", "Range: bytes=0-9"], 200, 0, SIZE),
        (["If-Range: garbage", "Range: bytes=0-9"], 200, 0, SIZE),
        ([f"If-Range: {ETAG}", "Range: bytes=5000-"], 416, 0, 0),
        ([f"If-Range: {ETAG}"], 200, 0, SIZE),  # If-Range without Range: nothing to do
        # conditionals come before Range
        ([f"If-None-Match: {ETAG}", "Range: bytes=0-9"], 304, 0, 0),
        (['If-None-Match: "x"', "Range: bytes=0-9"], 206, 0, 10),
        (['If-Match: "x"', "Range: bytes=0-9"], 412, 0, 0),
    ],
)
def test_range_matrix(data_file, headers, status, first, length):
    result, response = run_plan(data_file, *headers)
    assert (result.status, result.offset, result.length) == (status, first, length)
    assert response.status == status
    if status == 206:
        last = first + length - 1
        assert response.getheader("Content-Range") == f"bytes {first}-{last}/{SIZE}"
        assert response.getheader("Content-Length") == str(length)
        assert response.getheader("ETag") == ETAG
        assert response.getheader("Content-Type") == "application/octet-stream"
    if status == 416:
        assert response.getheader("Content-Range") == f"bytes */{SIZE}"
        assert response.getheader("Content-Length") == "0"
    if status == 200:
        assert response.getheader("Content-Range") is None
        assert response.getheader("Content-Length") == str(SIZE)


def test_if_range_date_needs_a_strong_last_modified(data_file):
    """A file modified in the current second has a weak Last-Modified (RFC 9110
    §8.8.2.2): an If-Range date then never matches."""
    headers = (f"If-Range: {LAST_MODIFIED}", "Range: bytes=0-9")
    assert run_plan(data_file, *headers, now=MTIME + 0.5)[0].status == 200
    assert run_plan(data_file, *headers, now=MTIME + 1)[0].status == 206


def test_range_is_ignored_on_head(data_file):
    result, response = run_plan(data_file, "Range: bytes=0-9", method="HEAD")
    assert result.status == 200 and result.length == 0
    assert response.getheader("Content-Length") == str(SIZE)


def test_zero_length_file_ignores_range(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    for value in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        request = make_request(f"Range: {value}")
        result = plan(request, str(path), os.stat(path), NOW)
        assert (result.status, result.length) == (200, 0)
        response = read_response(result.head, "HEAD")
        assert response.getheader("Content-Length") == "0"
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8"


@settings(max_examples=300)
@given(
    size=st.integers(min_value=1, max_value=5000),
    first=st.integers(min_value=0, max_value=6000) | st.none(),
    last=st.integers(min_value=0, max_value=6000) | st.none(),
)
def test_a_satisfied_range_is_always_within_the_file(size, first, last):
    value = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    result = parse_range(value, size)
    if result is None or result is UNSATISFIABLE:
        return
    lo, hi = result
    assert 0 <= lo <= hi < size
    if first is not None:
        assert lo == first and hi == min(size - 1, size - 1 if last is None else last)
    else:
        assert hi == size - 1 and hi - lo + 1 == min(last, size)


# --- small complete responses -----------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 405, 408, 413, 414, 426, 431, 500, 501, 505])
@pytest.mark.parametrize("keep_alive", [True, False])
def test_error_response(status, keep_alive):
    data = error_response(status, "why <not>", keep_alive=keep_alive, now=RFC_EXAMPLE)
    response = read_response(data)
    body = response.read()
    assert response.status == status and response.reason == http.HTTPStatus(status).phrase
    assert response.getheader("Content-Length") == str(len(body))
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert response.getheader("Date") == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert response.getheader("Connection") == ("keep-alive" if keep_alive else "close")
    assert b"why &lt;not&gt;" in body and str(status).encode() in body
    assert data.endswith(body) and data.count(b"\r\n\r\n") == 1


def test_error_response_extra_headers_and_head():
    extra = (("Allow", "GET, HEAD"), ("Sec-WebSocket-Version", "13"))
    full = error_response(405, "no", keep_alive=False, extra_headers=extra, now=0)
    head_only = error_response(405, "no", keep_alive=False, extra_headers=extra, now=0, head=True)
    response = read_response(full)
    assert response.getheader("Allow") == "GET, HEAD"
    assert response.getheader("Sec-WebSocket-Version") == "13"
    assert full.startswith(head_only) and head_only.endswith(b"\r\n\r\n")
    assert len(full) - len(head_only) == int(response.getheader("Content-Length"))


@pytest.mark.parametrize(
    "name,value", [("X", "a\r\nSet-Cookie: x"), ("X\n", "a"), ("X", "a\0"), ("", "a")]
)
def test_error_response_refuses_header_injection(name, value):
    with pytest.raises(ValueError):
        error_response(400, "x", keep_alive=False, extra_headers=((name, value),), now=0)


def test_error_response_uses_a_real_clock_by_default():
    date = read_response(error_response(404, "x", keep_alive=True)).getheader("Date")
    assert parse_http_date(date, now=0) > 1_600_000_000


@pytest.mark.parametrize("keep_alive", [True, False])
def test_an_answer_that_names_upgrade_lists_it_in_connection(keep_alive):
    """RFC 9110 §7.8: a sender of Upgrade lists "upgrade" in Connection (a 426)."""
    extra = (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"))
    response = read_response(error_response(426, "x", keep_alive=keep_alive, extra_headers=extra))
    persistence = "keep-alive" if keep_alive else "close"
    assert response.getheader("Connection") == f"upgrade, {persistence}"
    assert response.getheader("Upgrade") == "websocket"


def test_http_errors_render_through_error_response(root):
    """The glue's uniform path: error_response(e.status, e.reason, extra_headers=e.headers)."""
    with pytest.raises(HttpError) as caught:
        resolve(root, "/sub")
    error = caught.value
    data = error_response(error.status, error.reason, keep_alive=True, extra_headers=error.headers)
    assert read_response(data).getheader("Location") == "/sub/"


@pytest.mark.parametrize("field", ["If-Modified-Since", "If-Unmodified-Since", "If-Range"])
@pytest.mark.parametrize(
    "date", ["Sat, 01 Jan 0000 00:00:00 GMT", "Sat Jan  1 00:00:00 0000", "Mon, 30 Feb 2026 1:2:3"]
)
def test_an_impossible_date_in_a_condition_is_ignored(data_file, field, date):
    """RFC 9110 §13.1.3-§13.1.5: an invalid date makes the condition ignored (never
    an exception that would cost the connection its pipelined requests)."""
    result, response = run_plan(data_file, f"{field}: {date}", "Range: bytes=0-1")
    assert result.status == (200 if field == "If-Range" else 206)


def test_without_openat2_the_walk_takes_over(root, monkeypatch):
    """ENOSYS (a kernel before 5.6, or a seccomp filter) switches to the walk for good;
    the answers stay the same."""
    import errno

    calls = []

    def no_openat2(dirfd, path, flags):
        calls.append(path)
        return -errno.ENOSYS

    monkeypatch.setattr(static, "_openat2", no_openat2)
    monkeypatch.setattr(static, "CONFINE", "openat2")
    assert resolve(root, "/link_dir_in/deep.css") == os.path.join(root, "sub", "deep.css")
    assert static.CONFINE == "walk" and len(calls) == 1
    assert status_of(root, "/link_dir_out/secret.txt") == 404
    assert len(calls) == 1  # not asked again
