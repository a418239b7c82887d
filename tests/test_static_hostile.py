"""Static files against a hostile file system and hostile headers, over real sockets.

Races are run as bounded stress tests (a few seconds) that count outcomes:
- a directory swapped with a symlink to an outside directory (renameat2
  RENAME_EXCHANGE in a loop) while a keep-alive client asks for a file in it:
  not one byte of the outside file may be served, then or later from a cache;
- a small file truncated and rewritten in a loop while a client pipelines
  requests for it: every response must be framed by its Content-Length, or the
  connection closed right after what was sent.
Both confinement paths face the race: openat2 (RESOLVE_BENEATH) and the
component-by-component walk (forced with REACTOR_CONFINE=walk).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reactor.handlers.static import HttpHandler
from reactor.http import static
from reactor.loop import Reactor

OUTSIDE = b"OUTSIDE-" + os.urandom(8).hex().encode() + b"\n"
INSIDE = b"inside, fine to serve\n"
RACE_SECONDS = 3.0
CONFINEMENTS = [
    pytest.param("openat2", id="openat2"),
    pytest.param("walk", id="walk"),
]

# Swaps two paths with renameat2(RENAME_EXCHANGE) until the deadline, an even number
# of times (the tree ends as it began); prints the count.
SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, seconds = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2]), float(sys.argv[3])
AT_FDCWD, RENAME_EXCHANGE = -100, 2
deadline, swaps = time.monotonic() + seconds, 0
while time.monotonic() < deadline or swaps % 2:
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
    swaps += 1
print(swaps)
"""


class Reader:
    """Responses framed by Content-Length; EOF inside one is reported, not hidden."""

    STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z -]+")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.buf += chunk
        return bool(chunk)

    def read(self) -> tuple[int, dict[str, str], bytes] | None:
        """(status, headers, body), or None at EOF before a complete response."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if not self._fill():
                return None
        status_line, *lines = bytes(self.buf[:end]).split(b"\r\n")
        match = self.STATUS_LINE.fullmatch(status_line)
        assert match, f"not a status line: {bytes(self.buf[:200])!r}"
        headers = {}
        for line in lines:
            name, sep, value = line.decode("latin-1").partition(": ")
            assert sep and re.fullmatch(r"[A-Za-z-]+", name), f"not a header: {line!r}"
            headers[name.lower()] = value
        length = int(headers["content-length"])
        while len(self.buf) < end + 4 + length:
            if not self._fill():
                return None  # closed right after what was sent: allowed
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        return int(match.group(1)), headers, body


def get(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode("latin-1")


@pytest.fixture
def confined(monkeypatch, request):
    """Which confinement the server subprocess uses (an environment switch)."""
    monkeypatch.setenv("REACTOR_CONFINE", request.param)
    return request.param


# ---- 1. the symlink race ----------------------------------------------------------------


def race_tree(base: Path) -> tuple[Path, Path, Path]:
    root = base / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(INSIDE)
    (base / "outside").mkdir()
    (base / "outside" / "f.txt").write_bytes(OUTSIDE)
    (root / "x").symlink_to(base / "outside")  # always refused: it leaves the root
    return root, root / "d", root / "x"


def fetch_all(server, targets: list[str]) -> list[tuple[int, bytes] | None]:
    """GET every target on one keep-alive connection (reconnecting if closed)."""
    out: list[tuple[int, bytes] | None] = []
    sock = server.connect()
    reader = Reader(sock)
    try:
        for target in targets:
            sock.sendall(get(target))
            response = reader.read()
            out.append(None if response is None else (response[0], response[2]))
            if response is None or response[1].get("connection") == "close":
                sock.close()
                sock = server.connect()
                reader = Reader(sock)
    finally:
        sock.close()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("confined", CONFINEMENTS, indirect=True)
def test_swapping_a_directory_for_an_outside_symlink_never_leaks(
    server_factory, tmp_path, confined
):
    root, directory, link = race_tree(tmp_path)
    server = server_factory("--proto", "http", "--quiet", "--root", str(root))
    server.wait_for_log(f"implementations: .* static-confine={confined}")
    assert fetch_all(server, ["/d/f.txt", "/x/f.txt"]) == [(200, INSIDE), (404, fetch_404(server))]
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(directory), str(link), str(RACE_SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    outcomes = {"inside": 0, "404": 0, "outside": 0, "other": 0}
    used: list[str] = []
    try:
        while swapper.poll() is None and len(used) < 200_000:
            targets = [f"/d/f.txt?n={len(used) + i}" for i in range(50)]
            used += targets
            for response in fetch_all(server, targets):
                outcomes[classify(response)] += 1
    finally:
        swaps = int(swapper.communicate(timeout=30)[0])
    assert swaps > 100, "the swap loop did not run"
    print(f"swaps: {swaps}, during: {outcomes}")
    assert outcomes["inside"] and outcomes["404"], f"the race was not met: {outcomes}"
    # Afterwards (the tree is back as it began), the caches must not hold what leaked:
    # the very targets asked during the race, after the per-second shortcut expired.
    time.sleep(1.1)
    after = {"inside": 0, "404": 0, "outside": 0, "other": 0}
    for response in fetch_all(server, used[-2000:] + ["/d/f.txt"]):
        after[classify(response)] += 1
    assert outcomes["outside"] == 0 and after["outside"] == 0, (outcomes, after)
    assert outcomes["other"] == 0 and after == {"inside": 2001, "404": 0, "outside": 0, "other": 0}
    assert "handler failed" not in server.log_text()


@pytest.mark.slow
@pytest.mark.parametrize("confinement", ["openat2", "walk"])
def test_during_the_swap_race_the_caches_never_hold_outside_bytes(
    tmp_path, monkeypatch, confinement
):
    """The same race against the handler in this process, so that its small-file cache
    and per-second shortcut can be inspected after every response."""
    if confinement == "openat2" and static.CONFINE != "openat2":
        pytest.skip("openat2 is not available here")
    monkeypatch.setattr(static, "CONFINE", confinement)
    root, directory, link = race_tree(tmp_path)
    reactor = Reactor()
    handler = HttpHandler(reactor, root, access_log_enabled=False)
    ours, client = socket.socketpair()
    ours.setblocking(False)
    reactor.add_connection(ours.detach(), handler)
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(directory), str(link), str(RACE_SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    counts = {"inside": 0, "404": 0, "outside": 0, "other": 0}
    reader = Reader(client)
    try:
        n = 0
        while swapper.poll() is None and n < 200_000:
            client.sendall(get(f"/d/f.txt?n={n}") + get("/d/f.txt"))  # unique, then repeated
            n += 1
            for _ in range(2):
                while b"\r\n\r\n" not in reader.buf or not complete(reader.buf):
                    reactor.run_once(0)
                    client.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        reader.buf += client.recv(1 << 16)
                status, _, body = reader.read()
                counts[classify((status, body))] += 1
            held = list(handler.cache.entries.values()) + [c for *_, c in handler.recent.values()]
            assert not any(OUTSIDE.strip() in content for content in held), counts
    finally:
        swaps = int(swapper.communicate(timeout=30)[0])
        client.close()
        reactor.dispose()
        os.close(handler.root_fd)
    print(f"swaps: {swaps}, in process: {counts}")
    assert counts["outside"] == 0 and counts["other"] == 0, counts
    assert counts["inside"] and counts["404"], f"the race was not met: {counts}"


def complete(buf: bytearray) -> bool:
    """A whole response (head and Content-Length body) is in buf."""
    end = buf.find(b"\r\n\r\n")
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", bytes(buf[: end + 2]))
    return end >= 0 and length is not None and len(buf) >= end + 4 + int(length.group(1))


def fetch_404(server) -> bytes:
    with server.connect() as sock:
        sock.sendall(get("/x/f.txt"))
        return Reader(sock).read()[2]


def classify(response: tuple[int, bytes] | None) -> str:
    if response is None:
        return "other"
    status, body = response
    if OUTSIDE.strip() in body:
        return "outside"
    if status == 200 and body == INSIDE:
        return "inside"
    return "404" if status == 404 else "other"


# ---- 2. a small file that shrinks while it is read ---------------------------------------

# Rewrites a file in place (truncate, then write one of two contents) until the deadline.
REWRITER = r"""
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
contents = [b"L" * 20000, b"s" * 10]
deadline, writes = time.monotonic() + seconds, 0
fd = os.open(path, os.O_WRONLY)
while time.monotonic() < deadline:
    os.ftruncate(fd, 0)
    os.pwrite(fd, contents[writes % 2], 0)
    writes += 1
print(writes)
"""


@pytest.mark.slow
def test_a_file_rewritten_while_served_never_breaks_the_framing(server_factory, tmp_path):
    path = tmp_path / "flux.txt"
    path.write_bytes(b"L" * 20000)
    (tmp_path / "ok.txt").write_bytes(b"ok\n")
    server = server_factory("--proto", "http", "--quiet", "--root", str(tmp_path))
    writer = subprocess.Popen(
        [sys.executable, "-c", REWRITER, str(path), str(RACE_SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    counts = {"complete": 0, "closed after a short body": 0, "ok.txt": 0}
    try:
        n = 0
        while writer.poll() is None and n < 100_000:
            with server.connect() as sock:
                batch = b"".join(get(f"/flux.txt?n={n + i}") + get("/ok.txt") for i in range(20))
                n += 20
                sock.sendall(batch)
                reader = Reader(sock)
                for _ in range(20):
                    response = reader.read()
                    if response is None:
                        counts["closed after a short body"] += 1
                        break
                    status, headers, body = response
                    assert status == 200 and len(body) == int(headers["content-length"])
                    assert body.strip(b"L") == b"" or body.strip(b"s") == b"", body[:40]
                    counts["complete"] += 1
                    after = reader.read()
                    if after is None:
                        counts["closed after a short body"] += 1
                        break
                    assert after[0] == 200 and after[2] == b"ok\n", after
                    counts["ok.txt"] += 1
    finally:
        writes = int(writer.communicate(timeout=30)[0])
    print(f"rewrites: {writes}, outcomes: {counts}")
    assert writes > 100 and counts["complete"] > 100, (writes, counts)
    assert "handler failed" not in server.log_text()


# ---- 3. dates no calendar holds --------------------------------------------------------

BAD_DATES = [
    "Sat, 01 Jan 0000 00:00:00 GMT",
    "Sat Jan  1 00:00:00 0000",
    "Saturday, 01-Jan-00 00:00:00 GMT",  # year 2000: valid, must still be answered
    "Mon, 31 Feb 2026 00:00:00 GMT",
    "Mon, 00 Jan 2026 00:00:00 GMT",
    "Mon Feb 30 00:00:00 9999",
]


@pytest.mark.parametrize("field", ["If-Modified-Since", "If-Unmodified-Since", "If-Range"])
def test_dates_out_of_range_are_ignored_and_the_pipeline_answered(server_factory, tmp_path, field):
    (tmp_path / "a.txt").write_bytes(b"alpha\n")
    server = server_factory("--proto", "http", "--quiet", "--root", str(tmp_path))
    extra = "Range: bytes=0-1\r\n" if field == "If-Range" else ""
    with server.connect() as sock:
        sock.sendall(b"".join(get("/a.txt", f"{field}: {date}\r\n{extra}") for date in BAD_DATES))
        reader = Reader(sock)
        for date in BAD_DATES:
            status, _, body = reader.read()
            if field == "If-Modified-Since" and "-00 " in date:  # 2000: valid, before mtime
                assert (status, body) == (200, b"alpha\n")
            elif field == "If-Range" and "-00 " in date:  # valid but not equal: whole file
                assert (status, body) == (200, b"alpha\n")
            elif field == "If-Unmodified-Since" and "-00 " in date:
                assert status == 412
            elif field == "If-Range":
                assert (status, body) == (200, b"alpha\n"), date  # invalid: not a match
            else:
                assert (status, body) == (200, b"alpha\n"), date  # invalid: ignored
    assert "handler failed" not in server.log_text()


# ---- 4. a cached file that became unreadable ------------------------------------------


def without_dac_override() -> None:
    """preexec_fn: the server keeps uid 0 but loses CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (dropped from the bounding set, so the exec cannot get them
    back): file modes then bind it as they bind any user. With them, root reads a
    chmod 000 file and the test would prove nothing."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_cached_file_made_unreadable_is_no_longer_served(server_factory, tmp_path):
    page = tmp_path / "page.txt"
    page.write_bytes(b"public for now\n")
    if os.geteuid() == 0:
        server = server_factory(
            "--proto", "http", "--quiet", "--root", str(tmp_path), preexec_fn=without_dac_override
        )
    else:
        server = server_factory("--proto", "http", "--quiet", "--root", str(tmp_path))
    served = (200, b"public for now\n")
    assert fetch_all(server, ["/page.txt", "/page.txt?again"]) == [served, served]
    page.chmod(0o000)
    time.sleep(1.1)  # past the per-second shortcut: the small-file cache itself must notice
    assert [r[0] for r in fetch_all(server, ["/page.txt", "/page.txt?later"])] == [404, 404]
    page.chmod(0o644)
    time.sleep(1.1)
    assert fetch_all(server, ["/page.txt"]) == [served]


# ---- 5. dot-files ------------------------------------------------------------------------


def dot_tree(root: Path) -> None:
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_bytes(b"[core]\n")
    (root / ".env").write_bytes(b"PASSWORD=x\n")
    (root / ".well-known").mkdir()
    (root / ".well-known" / "security.txt").write_bytes(b"Contact: x\n")
    (root / "sub" / ".hidden").mkdir(parents=True)
    (root / "sub" / ".hidden" / "a.txt").write_bytes(b"a\n")
    (root / "sub" / ".well-known").mkdir()
    (root / "sub" / ".well-known" / "b.txt").write_bytes(b"b\n")
    (root / "visible.txt").write_bytes(b"v\n")
    (root / "to-env").symlink_to(".env")


DOT_TARGETS = {
    "/.git/config": (404, 200),
    "/.env": (404, 200),
    "/%2eenv": (404, 200),
    "/sub/.hidden/a.txt": (404, 200),
    "/sub/.well-known/b.txt": (404, 200),  # RFC 8615: only at the top
    "/.well-known/security.txt": (200, 200),
    "/visible.txt": (200, 200),
    "/to-env": (200, 200),  # the rule is about the names in the URL
    "/.git/": (404, 404),  # no index.html, no listings
}


@pytest.mark.parametrize("serve_hidden", [False, True], ids=["default", "serve-hidden"])
def test_dot_files_are_hidden_unless_asked(server_factory, tmp_path, serve_hidden):
    dot_tree(tmp_path)
    args = ["--proto", "http", "--quiet", "--root", str(tmp_path)]
    server = server_factory(*args, *(["--serve-hidden"] if serve_hidden else []))
    statuses = [status for status, _ in fetch_all(server, list(DOT_TARGETS))]
    assert statuses == [expected[serve_hidden] for expected in DOT_TARGETS.values()]


def test_the_resolver_hides_dot_files_by_default(tmp_path):
    dot_tree(tmp_path)
    root = os.path.realpath(tmp_path)
    for target, (default, shown) in DOT_TARGETS.items():
        for serve_hidden, expected in ((False, default), (True, shown)):
            try:
                static.resolve(root, target, serve_hidden=serve_hidden)
                status = 200
            except static.HttpError as exc:
                status = exc.status
            assert status == expected, (target, serve_hidden)
