"""Static files (sans-I/O except the confinement walk): target -> path, MIME types,
conditional and range logic (RFC 9110 §13, §14), response heads, error responses.

Choices:
- Targets: origin-form; absolute-form (http/https) is reduced to its path
  because RFC 9112 §3.2.2 says a server MUST accept it; asterisk- and
  authority-form -> 400.
- Encoded "/" (%2F) and any backslash (raw or %5C) -> 400: a path segment
  that smuggles a separator is malformed, not missing. %00 -> 400.
- %2E%2E is "..", as RFC 3986 §6.2.2.2 says; dot-segments are resolved before
  the path touches the file system and never climb above the root.
- Confinement: the file is opened relative to a descriptor of the root, the
  kernel refusing any step out of it (openat2 RESOLVE_BENEATH), or by a walk
  holding a descriptor per directory where openat2 is missing; a symlink is
  followed while it stays inside the root (else 404). The caller serves from
  the descriptor. Only regular files are served: directories -> index.html,
  FIFOs/devices -> 404.
- Dot-files: a name starting with "." (.git, .env) is 404 unless the server
  is told to serve them; the top-level /.well-known/ (RFC 8615) is served.
- ETag is STRONG: "<mtime_ns hex>-<size hex>". A rewrite that keeps both the
  nanosecond mtime and the size is not distinguished (nginx does the same at
  second resolution). Strong tags make If-Range with an ETag usable.
- Range: one range -> 206; several ranges -> 200 with the whole file (no
  multipart/byteranges); malformed or non-bytes -> ignored (200). A zero-length
  file ignores Range (200): a suffix range of it is "satisfiable" per RFC 9110
  §14.1.1 yet no Content-Range can describe an empty range, and §14.2 lets a
  server ignore Range. Range is ignored on HEAD (§14.2: defined for GET only).
- Errors 412 and 416 carry no body (Content-Length: 0).
- The "200, whole file, no conditionals" head is built from a per-file cached
  header block plus a per-second cached Date line: a dict lookup and a join.
"""

from __future__ import annotations

import errno
import html
import os
import re
import stat
import time
from calendar import monthrange, timegm
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus  # the stdlib package (this folder has no __init__.py)
from operator import itemgetter
from urllib.parse import unquote_to_bytes

from .. import rfc9110
from .request import HttpError, Request

try:  # openat2 through cffi (http/csrc/confine.c); without it the walk confines alone
    from ._speedups import lib as _speedups_lib

    _openat2 = _speedups_lib.http_open_beneath
except (ImportError, AttributeError):
    _openat2 = None

# --- MIME types ------------------------------------------------------------------------

_TEXT = "; charset=utf-8"
MIME_TYPES: dict[str, str] = {
    "html": "text/html" + _TEXT,
    "htm": "text/html" + _TEXT,
    "css": "text/css" + _TEXT,
    "js": "text/javascript" + _TEXT,  # RFC 9239
    "mjs": "text/javascript" + _TEXT,
    "txt": "text/plain" + _TEXT,
    "md": "text/markdown" + _TEXT,
    "csv": "text/csv" + _TEXT,
    "json": "application/json",  # RFC 8259 §11: no charset parameter; JSON is UTF-8
    "map": "application/json",
    "webmanifest": "application/manifest+json",
    "xml": "application/xml",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "ico": "image/vnd.microsoft.icon",
    "bmp": "image/bmp",
    "wasm": "application/wasm",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "gz": "application/gzip",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "mp4": "video/mp4",
    "webm": "video/webm",
}
DEFAULT_TYPE = "application/octet-stream"


def content_type(path: str) -> str:
    """MIME type by the file name's extension (case-insensitive)."""
    name = path[path.rfind("/") + 1 :]
    dot = name.rfind(".")
    if dot <= 0:  # no extension, or a dot file such as ".htaccess"
        return DEFAULT_TYPE
    return MIME_TYPES.get(name[dot + 1 :].lower(), DEFAULT_TYPE)


# --- target -> file --------------------------------------------------------------------


class Redirect(HttpError):
    """301 to `location` (a directory asked without its trailing slash)."""

    def __init__(self, location: str) -> None:
        super().__init__(301, "Moved Permanently", (("Location", location),))
        self.location = location


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE_FORM = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://[^/?#]*")
INDEX_FILE = "index.html"
WELL_KNOWN = ".well-known"  # RFC 8615: served even though it starts with a dot


def open_target(
    root_fd: int, root_real: str, target: str, *, serve_hidden: bool = False
) -> tuple[int, os.stat_result, str]:
    """Open the regular file `target` names under the root: ``root_fd`` is an
    O_PATH descriptor of the directory whose realpath is ``root_real``. Returns
    (fd, fstat of fd, file name for the Content-Type); the caller owns the fd
    and must serve from it, never reopen by name. Raises HttpError 400/404/503,
    or Redirect for a directory asked without its trailing "/".

    Unless ``serve_hidden``, a name starting with "." anywhere in the path is
    404, except the top-level ".well-known" (RFC 8615)."""
    path, query = _split_target(target)
    raw_segments, trailing_slash = _remove_dot_segments(path.split("/")[1:])
    names = [_decode_segment(raw) for raw in raw_segments]
    if not serve_hidden and _hidden(names):
        raise HttpError(404, "not found")
    fd, st = open_beneath(root_fd, root_real, names)
    if stat.S_ISREG(st.st_mode) and not (trailing_slash and names):
        return fd, st, names[-1]
    os.close(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise HttpError(404, "not a directory" if trailing_slash else "not a regular file")
    if not trailing_slash and names:
        raise Redirect(_slash_location(raw_segments, query))
    try:
        fd, st = open_beneath(root_fd, root_real, [*names, INDEX_FILE])
    except HttpError as exc:
        raise HttpError(exc.status, "no index file") from None  # no directory listings
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise HttpError(404, "no index file")
    return fd, st, INDEX_FILE


def resolve(root_real: str, target: str, *, serve_hidden: bool = False) -> str:
    """The real path of the file open_target() would serve (for tools and
    tests: a server must serve from the descriptor, not from this name)."""
    root_fd = os.open(root_real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd, _, _ = open_target(root_fd, root_real, target, serve_hidden=serve_hidden)
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def _hidden(names: list[str]) -> bool:
    """A dot-file or dot-directory (.git, .env...) outside the top-level
    /.well-known/ that RFC 8615 reserves for exactly this kind of publishing."""
    return any(name[:1] == "." for name in names) and not (
        names[0] == WELL_KNOWN and not any(name[:1] == "." for name in names[1:])
    )


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of an origin-form or absolute-form target; fragment dropped."""
    if target[:1] != "/":
        authority = _ABSOLUTE_FORM.match(target)
        if authority is None:
            raise HttpError(400, "request target is not a path")
        target = "/" + target[authority.end() :].lstrip("/")
    path, _, query = target.partition("?")
    return path.partition("#")[0], query.partition("#")[0]


def _remove_dot_segments(raw_segments: list[str]) -> tuple[list[str], bool]:
    """RFC 3986 §5.2.4 on still-encoded segments (%2E counts as a dot, §6.2.2.2);
    empty segments ("//") are dropped. Returns (segments, ends with a slash)."""
    kept: list[str] = []
    for raw in raw_segments:
        dots = raw.replace("%2e", ".").replace("%2E", ".")
        if dots == "..":
            if kept:
                kept.pop()
        elif raw and dots != ".":
            kept.append(raw)
    last = raw_segments[-1] if raw_segments else ""
    return kept, last.replace("%2e", ".").replace("%2E", ".") in ("", ".", "..")


def _decode_segment(raw: str) -> str:
    """Percent-decode one segment to a file-system name (UTF-8, other bytes kept
    via surrogateescape, like os.fsdecode)."""
    if "\\" in raw:
        raise HttpError(400, "backslash in path")
    if "%" not in raw:
        return raw
    if _BAD_ESCAPE.search(raw):
        raise HttpError(400, "invalid percent-encoding")
    name = unquote_to_bytes(raw)
    if b"\0" in name:
        raise HttpError(400, "NUL in path")
    if b"/" in name or b"\\" in name:
        raise HttpError(400, "encoded path separator")
    return os.fsdecode(name)


# --- confinement: the only file-system access in this package ----------------------------
#
# Atomic: a path is resolved against a descriptor of the root by the kernel
# (openat2 RESOLVE_BENEATH: any step out of the root, symlinks included, fails
# with EXDEV), or, where openat2 is missing, by _walk_open, which holds a
# descriptor of every directory on the way and opens each name relative to it
# with O_NOFOLLOW, expanding symlinks itself. Either way nothing is checked by
# name and then reopened by name, so a directory swapped for a symlink between
# two steps cannot lead outside. A symlink is followed while it stays inside:
# relative targets whose ".." never climb above the root, and absolute targets
# under the root's realpath (openat2 refuses those with EXDEV: the walk decides).

FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY  # no FIFO open blocks
MAX_SYMLINKS = 40  # as the kernel's own limit (ELOOP)
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
# "openat2" or "walk". REACTOR_CONFINE=walk forces the walk (tests run both paths);
# an ENOSYS from openat2 (kernel < 5.6, or a seccomp filter) switches to it for good.
CONFINE = "walk" if _openat2 is None or os.environ.get("REACTOR_CONFINE") == "walk" else "openat2"


def open_beneath(root_fd: int, root_real: str, names: list[str]) -> tuple[int, os.stat_result]:
    """Open root/names[0]/... confined to the root: (fd, fstat); HttpError 404
    (or 503 when out of descriptors) otherwise."""
    global CONFINE
    try:
        if CONFINE == "openat2":
            relative = os.fsencode("/".join(names)) if names else b"."
            fd = _openat2(root_fd, relative, FILE_FLAGS)
            if fd >= 0:
                return _with_stat(fd)
            if -fd == errno.ENOSYS:
                CONFINE = "walk"
            elif -fd != errno.EXDEV:  # EXDEV: left the root, or an absolute symlink
                raise OSError(-fd, os.strerror(-fd))
        return _with_stat(_walk_open(root_fd, root_real, names))
    except OSError as exc:  # missing, not a directory, a loop, no permission, too long
        if exc.errno in _OUT_OF_FDS:
            raise HttpError(503, "out of file descriptors") from None
        raise HttpError(404, "not found") from None


def _with_stat(fd: int) -> tuple[int, os.stat_result]:
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def _walk_open(root_fd: int, root_real: str, names: list[str]) -> int:
    """The openat2 walk done by hand, component by component (see above)."""
    held: list[int] = []  # descriptors of the directories below the root, deepest last
    pending = names[::-1]  # a stack: the next name is at the end
    links = 0
    try:
        while pending:
            name = pending.pop()
            here = held[-1] if held else root_fd
            if name in ("", "."):
                continue
            if name == "..":
                if not held:
                    raise OSError(errno.EXDEV, "a symlink leaves the root")
                os.close(held.pop())
                continue
            if not pending:  # the last name: open it for reading unless it is a symlink
                try:
                    return os.open(name, FILE_FLAGS | os.O_NOFOLLOW, dir_fd=here)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=here)
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                held.append(fd)
                continue
            if not stat.S_ISLNK(mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, "not a directory")
            try:
                link = os.readlink("", dir_fd=fd)  # this very link, whatever the name holds now
            finally:
                os.close(fd)
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, "too many symlinks")
            if link.startswith("/"):
                inside = _under_root(root_real, link)
                if inside is None:
                    raise OSError(errno.EXDEV, "a symlink leaves the root")
                while held:
                    os.close(held.pop())
                link = inside
            pending.extend(reversed(link.split("/")))
        return os.open(".", FILE_FLAGS, dir_fd=held[-1] if held else root_fd)
    finally:
        for fd in held:
            os.close(fd)


def _under_root(root_real: str, absolute: str) -> str | None:
    """`absolute` relative to the root, or None when it is not under it."""
    root = root_real.rstrip("/")
    if absolute == root:
        return ""
    return absolute[len(root) + 1 :] if absolute.startswith(root + "/") else None


def _slash_location(raw_segments: list[str], query: str) -> str:
    location = "/" + "/".join(raw_segments) + "/"  # one leading "/": never "//host"
    return location + "?" + query if query else location


# --- dates (RFC 9110 §5.6.7) -------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, 1)}
_WEEKDAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_IMF_FIXDATE = re.compile(_WEEKDAY + r", (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT", re.A)
_RFC850_DATE = re.compile(r"[A-Z][a-z]{5,8}, (\d\d)-(\w{3})-(\d\d) (\d\d):(\d\d):(\d\d) GMT", re.A)
_ASCTIME_DATE = re.compile(_WEEKDAY + r" (\w{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})", re.A)


def http_date(timestamp: float) -> str:
    """IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" (never locale-dependent)."""
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(text: str, now: float) -> int | None:
    """Seconds since the epoch, or None. Accepts the three formats a recipient
    MUST accept (RFC 9110 §5.6.7); a two-digit year more than 50 years ahead
    of `now` is taken as the previous century."""
    text = text.strip()
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hh, mm, ss = match.groups()
    elif match := _ASCTIME_DATE.fullmatch(text):
        month, day, hh, mm, ss, year = match.groups()
    elif match := _RFC850_DATE.fullmatch(text):
        day, month, year, hh, mm, ss = match.groups()
        year = _full_year(int(year), now)
    else:
        return None
    return _to_epoch(int(year), month, int(day), int(hh), int(mm), int(ss))


def _full_year(two_digits: int, now: float) -> int:
    this_year = time.gmtime(now).tm_year
    year = this_year - this_year % 100 + two_digits
    return year - 100 if year > this_year + 50 else year


def _to_epoch(year: int, month: str, day: int, hh: int, mm: int, ss: int) -> int | None:
    """None for a date no calendar holds (year 0000, 31 Feb...): RFC 9110
    §13.1.3-§13.1.5 make an invalid date in a condition ignored, not an error."""
    number = _MONTH_NUMBER.get(month)
    if number is None or not (1 <= year and hh < 24 and mm < 60 and ss < 61):
        return None
    if not 1 <= day <= monthrange(year, number)[1]:
        return None
    return timegm((year, number, day, hh, mm, ss, 0, 0, 0))


_date_second = -1
_date_line = b""


def date_line(now: float) -> bytes:
    """b"Date: <IMF-fixdate>\\r\\n", formatted once per second (the glue passes a coarse clock)."""
    global _date_second, _date_line
    second = int(now)
    if second != _date_second:
        _date_line = f"Date: {http_date(second)}\r\n".encode("ascii")
        _date_second = second
    return _date_line


# --- per-file metadata, cached ----------------------------------------------------------


class FileMeta:
    """What the response heads of one version of one file share."""

    __slots__ = ("size", "mtime", "etag", "last_modified", "content_type", "full_200")

    def __init__(self, path: str, st: os.stat_result) -> None:
        self.size = st.st_size
        self.mtime = st.st_mtime_ns // 1_000_000_000  # whole seconds, as Last-Modified
        self.etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        self.last_modified = http_date(self.mtime)
        self.content_type = content_type(path)
        self.full_200 = (
            f"Content-Type: {self.content_type}\r\nContent-Length: {self.size}\r\n"
            f"{self.validators()}Accept-Ranges: bytes\r\n"
        ).encode("latin-1")

    def validators(self) -> str:
        return f"Last-Modified: {self.last_modified}\r\nETag: {self.etag}\r\n"


# A bounded memo of a pure function of (name, device, inode, mtime, size): a changed
# file gets a new key, so nothing stale is ever served; old keys just age out.
_META_CACHE_SIZE = 4096  # ~1 KB per entry: a few MB at most, more files than a site serves hot
_meta_cache: dict[tuple, FileMeta] = {}


def file_meta(path: str, st: os.stat_result) -> FileMeta:
    key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    meta = _meta_cache.get(key)
    if meta is None:
        if len(_meta_cache) >= _META_CACHE_SIZE:
            del _meta_cache[next(iter(_meta_cache))]  # oldest first (dicts keep order)
        meta = _meta_cache[key] = FileMeta(path, st)
    return meta


# --- the response plan ------------------------------------------------------------------


@dataclass(slots=True, eq=False, repr=False)
class ResponsePlan:
    """What to send: `head` (complete, through the blank line), then `length`
    bytes of the file from `offset` (length 0: no body, e.g. HEAD or 304)."""

    status: int
    head: bytes
    offset: int
    length: int
    keep_alive: bool

    def __repr__(self) -> str:
        return f"ResponsePlan({self.status}, offset={self.offset}, length={self.length})"


_STATUS_LINES = {
    status: f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("ascii")
    for status in (200, 206, 304, 412, 416)
}
# The fields that can turn a plain 200 into something else (RFC 9110 §13.1, §14.2).
_CONDITIONAL_FIELDS = frozenset(
    ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "range", "if-range")
)
_field_name = itemgetter(0)


def connection_line(keep_alive: bool, http_version: tuple[int, int]) -> bytes:
    """The Connection header a response needs (none for a persistent HTTP/1.1)."""
    if not keep_alive:
        return b"Connection: close\r\n"
    return b"" if http_version >= (1, 1) else b"Connection: keep-alive\r\n"


def plan(
    request: Request, path: str, st: os.stat_result, now: float, keep_alive: bool | None = None
) -> ResponsePlan:
    """The response to a GET/HEAD of the regular file `path` whose stat is `st`
    (from fstat of the opened file). `keep_alive` defaults to what the request
    asks; pass False to close anyway (e.g. the server is stopping)."""
    meta = file_meta(path, st)
    if keep_alive is None:
        keep_alive = request.keep_alive
    tail = connection_line(keep_alive, request.http_version) + b"\r\n"
    if _CONDITIONAL_FIELDS.isdisjoint(map(_field_name, request.headers)):
        head = b"".join((_STATUS_LINES[200], date_line(now), meta.full_200, tail))
        length = 0 if request.method == "HEAD" else meta.size
        return ResponsePlan(200, head, 0, length, keep_alive)
    status, extra, offset, length = _evaluate(request, meta, now)
    head = b"".join((_STATUS_LINES[status], date_line(now), extra.encode("latin-1"), tail))
    if request.method == "HEAD":
        length = 0
    return ResponsePlan(status, head, offset, length, keep_alive)


def _evaluate(request: Request, meta: FileMeta, now: float) -> tuple[int, str, int, int]:
    """RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since, If-None-Match,
    If-Modified-Since, then If-Range + Range. Returns (status, header lines,
    body offset, body length)."""
    if not _preconditions_pass(request, meta, now):
        return 412, f"ETag: {meta.etag}\r\nContent-Length: 0\r\n", 0, 0
    if _not_modified(request, meta, now):
        return 304, meta.validators(), 0, 0
    byte_range = _applicable_range(request, meta, now)
    if byte_range is None:
        return 200, meta.full_200.decode("latin-1"), 0, meta.size
    if byte_range is UNSATISFIABLE:
        return 416, f"Content-Range: bytes */{meta.size}\r\nContent-Length: 0\r\n", 0, 0
    first, last = byte_range
    length = last - first + 1
    return 206, _partial_fields(meta, first, last), first, length


def _partial_fields(meta: FileMeta, first: int, last: int) -> str:
    return (
        f"Content-Type: {meta.content_type}\r\nContent-Length: {last - first + 1}\r\n"
        f"Content-Range: bytes {first}-{last}/{meta.size}\r\n"
        f"{meta.validators()}Accept-Ranges: bytes\r\n"
    )


def _preconditions_pass(request: Request, meta: FileMeta, now: float) -> bool:
    if_match = request.get("if-match")
    if if_match is not None:
        return _etag_list_matches(if_match, meta.etag, weak=False)  # §13.1.1
    since = request.get("if-unmodified-since")
    if since is not None:
        date = parse_http_date(since, now)
        return date is None or meta.mtime <= date  # §13.1.4: an invalid date is ignored
    return True


def _not_modified(request: Request, meta: FileMeta, now: float) -> bool:
    """If-None-Match, else If-Modified-Since (§13.2.2 step 3-4): a 304 for GET/HEAD."""
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:
        return _etag_list_matches(if_none_match, meta.etag, weak=True)  # §13.1.2
    since = request.get("if-modified-since")
    if since is None:
        return False
    date = parse_http_date(since, now)
    return date is not None and meta.mtime <= date  # §13.1.3


def _etag_list_matches(value: str, etag: str, *, weak: bool) -> bool:
    """ "*" or a list of entity-tags (§8.8.3). Our tag is strong, so weak
    comparison also accepts W/"tag"; strong comparison never matches a weak tag.
    Our tag holds no comma, so splitting on commas cannot fake a match."""
    members = [member.strip() for member in value.split(",")]
    if "*" in members:
        return True
    return etag in members or (weak and "W/" + etag in members)


# --- Range (RFC 9110 §14) ---------------------------------------------------------------

UNSATISFIABLE = (-1, -1)  # a sentinel: the Range is valid but asks past the end


def _applicable_range(request: Request, meta: FileMeta, now: float) -> tuple[int, int] | None:
    """(first, last) to send, UNSATISFIABLE, or None for the whole file."""
    value = request.get("range")
    if value is None or request.method != "GET" or meta.size == 0:
        return None
    if_range = request.get("if-range")
    if if_range is not None and not _if_range_matches(if_range.strip(), meta, now):
        return None  # §13.1.5: the representation changed, send it whole
    return parse_range(value, meta.size)


def _if_range_matches(value: str, meta: FileMeta, now: float) -> bool:
    if value.startswith(('"', "W/")):
        return value == meta.etag  # strong comparison: a weak tag never matches
    date = parse_http_date(value, now)
    # A date validates only if it is exact and Last-Modified is strong: at
    # least one second older than now (§13.1.5, §8.8.2.2).
    return date is not None and date == meta.mtime and int(now) > meta.mtime


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range of a `size`-byte file as inclusive (first, last), clamped
    to the end; UNSATISFIABLE; or None (malformed, another unit, several ranges)."""
    unit, equals, range_set = value.partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    members = [member.strip(" \t") for member in range_set.split(",")]
    members = [member for member in members if member]  # §5.6.1.2: ignore empty elements
    if len(members) != 1:
        return None  # several ranges: answered with the whole file
    first_text, dash, last_text = members[0].partition("-")
    first, last = _digits(first_text), _digits(last_text)
    if not dash or (first is None and (last is None or first_text)):
        return None
    if first is None:
        return _suffix_range(last, size)
    if last_text and (last is None or last < first):
        return None  # §14.1.1: last < first makes the range invalid
    if first >= size:
        return UNSATISFIABLE
    return first, size - 1 if last is None else min(last, size - 1)


def _suffix_range(length: int, size: int) -> tuple[int, int]:
    if length == 0:
        return UNSATISFIABLE  # §14.1.1: a zero suffix-length is unsatisfiable
    return max(0, size - length), size - 1


_digits = rfc9110.digits  # absurdly long numbers read as 2**63: past any file


# --- small complete responses -----------------------------------------------------------


def error_response(
    status: int,
    reason: str,
    *,
    keep_alive: bool,
    extra_headers: Sequence[tuple[str, str]] = (),
    now: float | None = None,
    head: bool = False,
) -> bytes:
    """A complete response with a short HTML body (just the head when `head`,
    as for a HEAD request, with the Content-Length the body would have): every
    HTTP error answer of the server, WebSocket rejections included. A sender of
    an Upgrade header lists "upgrade" in Connection (RFC 9110 §7.8)."""
    phrase = _phrase(status)
    title = f"{status} {phrase}".rstrip()
    body = (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{html.escape(reason)}</p></body></html>\n"
    ).encode()
    lines = [
        f"HTTP/1.1 {status} {phrase}\r\n",  # the SP stays without a phrase (RFC 9112 §4)
        date_line(time.time() if now is None else now).decode("ascii"),
        "Content-Type: text/html; charset=utf-8\r\n",
        f"Content-Length: {len(body)}\r\n",
        _connection_field(keep_alive, extra_headers),
    ]
    lines.extend(rfc9110.header_line(name, value) for name, value in extra_headers)
    response = "".join(lines).encode("latin-1") + b"\r\n"
    return response if head else response + body


def _connection_field(keep_alive: bool, extra_headers: Sequence[tuple[str, str]]) -> str:
    persistence = "keep-alive" if keep_alive else "close"
    if any(name.lower() == "upgrade" for name, _ in extra_headers):
        return f"Connection: upgrade, {persistence}\r\n"
    return f"Connection: {persistence}\r\n"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status the stdlib does not name (an application's 4xx/5xx)
        return ""
