"""The fuzz targets of tests/fuzz/: seeds and regressions replayed, their
oracles shown able to fail, and a short coverage-guided run of each.

The replays need no atheris: every target's ``check`` runs in-process on the
committed inputs. The timed run needs atheris and lasts REACTOR_FUZZ_SECONDS
per target (default 30; the three run side by side, about 30 s of wall time
on two cores). Set REACTOR_FUZZ_SECONDS=0 to skip it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from testkit import REPO

FUZZ = REPO / "tests" / "fuzz"
TARGETS = {"ws_frames": "fuzz_ws_frames", "ws_handshake": "fuzz_ws_handshake", "http": "fuzz_http"}
FUZZ_SECONDS = float(os.environ.get("REACTOR_FUZZ_SECONDS", "30"))


def load_target(name: str):
    """Import tests/fuzz/<module>.py (the folder is not a package)."""
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))  # for their `from _harness import ...`
    module_name = TARGETS[name]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, FUZZ / f"{module_name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def inputs(folder: str, name: str) -> list[Path]:
    return sorted((FUZZ / folder / name).glob("*"))


def replay_ids() -> list:
    cases = []
    for folder in ("corpus", "regressions"):
        for name in TARGETS:
            cases += [
                pytest.param(name, path, id=f"{folder}/{name}/{path.name}")
                for path in inputs(folder, name)
            ]
    return cases


@pytest.mark.parametrize("name", TARGETS)
def test_every_target_has_seeds(name):
    assert len(inputs("corpus", name)) >= 10


def test_committed_seeds_are_what_seeds_py_writes():
    """The corpus files and their documented origin (tests/fuzz/seeds.py) agree."""
    spec = importlib.util.spec_from_file_location("fuzz_seeds", FUZZ / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    for name, made in (
        ("ws_frames", seeds.ws_frames()),
        ("ws_handshake", seeds.ws_handshake()),
        ("http", seeds.http()),
    ):
        on_disk = {path.name: path.read_bytes() for path in inputs("corpus", name)}
        assert on_disk == made, f"corpus/{name} differs from seeds.py: run it"


@pytest.mark.parametrize(("name", "path"), replay_ids())
def test_replay(name, path):
    """Seeds and every saved finding hold all invariants (findings: since their fix)."""
    load_target(name).check(path.read_bytes())


# ---- the oracles can fail: break the code under test, the target must notice -----------


def test_frames_target_notices_a_truncated_message(monkeypatch):
    target = load_target("ws_frames")
    from reactor.ws import protocol

    real = protocol._Message.result
    monkeypatch.setattr(protocol._Message, "result", lambda self: real(self)[:-1])
    seed = (FUZZ / "corpus" / "ws_frames" / "masked-fragmented-hello.bin").read_bytes()
    with pytest.raises(AssertionError):
        target.check(seed)


def test_frames_target_notices_c_and_python_disagreeing(monkeypatch):
    target = load_target("ws_frames")
    from reactor.ws import frames

    real = frames.scan_window_python

    def off_by_one(window, start, end, max_size, rsv=0):
        out = real(window, start, end, max_size, rsv)
        return out[:-1] + [out[-1] + 1] if out and out[-1] < end else out

    monkeypatch.setattr(frames, "scan_window_python", off_by_one)
    seed = (FUZZ / "corpus" / "ws_frames" / "masked-256-binary.bin").read_bytes()
    with pytest.raises(AssertionError):
        target.check(seed + b"\x81")
    # The check failed on the Python pass; the process is back on the compiled path
    # (tests that follow in this process build reactors and expect it).
    assert frames.scan_window is frames.scan_window_c
    from reactor.ws import unmask

    assert unmask.window(bytearray(8)).ptr is not None


def test_handshake_target_notices_a_wrong_accept_key(monkeypatch):
    target = load_target("ws_handshake")
    from reactor.ws import handshake

    monkeypatch.setattr(handshake, "accept_key", lambda key: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    seed = (FUZZ / "corpus" / "ws_handshake" / "rfc6455-1.2.txt").read_bytes()
    with pytest.raises(AssertionError):
        target.check(seed)


def test_http_target_notices_an_escape_from_the_root(monkeypatch):
    target = load_target("http")
    from reactor.http import static

    def unconfined(root_fd, root_real, names):  # follows any symlink, as open() does
        fd = os.open(os.path.join(root_real, *names), static.FILE_FLAGS)
        return fd, os.fstat(fd)

    monkeypatch.setattr(static, "open_beneath", unconfined)
    with pytest.raises(AssertionError, match="outside the root"):
        target.check(b"\x01/out")  # a symlink to the secret beside the root


def test_http_target_notices_a_handler_exception(monkeypatch):
    """The glue is driven too: an exception that reaches the reactor's catch-all
    (here an impossible date that crashes the date parser) is a finding."""
    target = load_target("http")
    from reactor.http import static

    def strict(year, month, day, hh, mm, ss):
        from calendar import timegm

        return timegm((year, static._MONTH_NUMBER[month], day, hh, mm, ss, 0, 0, 0))

    monkeypatch.setattr(static, "_to_epoch", strict)
    seed = (FUZZ / "corpus" / "http" / "year-0000-if-modified-since.txt").read_bytes()
    with pytest.raises((AssertionError, ValueError)):
        target.check(seed)


def test_http_target_notices_a_parser_reading_past_its_input(monkeypatch):
    target = load_target("http")
    from reactor.http.request import RequestParser

    real = RequestParser.parse

    def greedy(self, buf, start=0, end=None):
        request, pos = real(self, buf, start, end)
        return request, pos + 1 if request is not None else pos

    monkeypatch.setattr(RequestParser, "parse", greedy)
    seed = (FUZZ / "corpus" / "http" / "rfc9112-example.txt").read_bytes()
    with pytest.raises(AssertionError):
        target.check(seed)


def test_http_target_notices_a_head_scanner_that_misreads(monkeypatch):
    target = load_target("http")
    from reactor.http import request as request_module

    monkeypatch.setattr(request_module, "_SCANNED_VERSIONS", ((1, 1), (1, 0)))
    seed = (FUZZ / "corpus" / "http" / "rfc9112-example.txt").read_bytes()
    with pytest.raises(AssertionError, match="head scanner"):
        target.check(seed)


# ---- findings, as named regressions -----------------------------------------------------


def test_handshake_ignores_only_ows_around_values():
    """Found by the handshake target: str.strip() also removes NBSP and NEL
    (obs-text the HTTP parser lets through), so 'websocket\\xa0', a key
    followed by \\x85 and 'Version: 13\\xa0' were accepted. RFC 9110 §5.5
    trims only SP and HTAB around a field value."""
    from reactor.http.request import RequestParser
    from reactor.ws import handshake

    raw = (FUZZ / "regressions" / "ws_handshake" / "nbsp-nel-after-values.bin").read_bytes()[1:]
    request, _ = RequestParser().parse(raw)
    result = handshake.validate(request.method, request.http_version, request.headers)
    assert isinstance(result, handshake.Reject) and result.status == 400


SANITIZED_ITERATIONS = 300_000  # ~1 s each; every mutant in a heap block of its exact size
WS_CSRC = REPO / "ws" / "csrc"


class SanitizedDriver(NamedTuple):
    """tests/fuzz/<driver>.c runs a C parser on mutated, truncated heads, each in a heap block
    of its exact size, under ASan and UBSan; ``breakage`` turns the parser's source into one
    that reads a byte past the head (the driver must then abort)."""

    driver: str
    source: Path
    helpers: tuple[Path, ...]
    breakage: tuple[str, str]


SANITIZED = {
    "head scanner": SanitizedDriver(
        "head_sanitized", REPO / "http" / "csrc" / "head.c", (),
        ("if (i < len && p[i] == '\\n') { /* the empty line, bare LF */",
         "if (i <= len && p[i] == '\\n') { /* the empty line, bare LF */"),
    ),
    "upgrade fast path": SanitizedDriver(
        "upgrade_sanitized", WS_CSRC / "upgrade.c", (WS_CSRC / "sha1.c",),
        ("memchr(p, '\\n', (size_t)(end - p))", "memchr(p, '\\n', (size_t)(end - p) + 1)"),
    ),
}  # fmt: skip


def build_sanitized(tmp_path: Path, driver: SanitizedDriver, source: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    binary = tmp_path / driver.driver
    subprocess.run(
        ["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-I", str(driver.source.parent), "-I", str(FUZZ), str(FUZZ / f"{driver.driver}.c"),
         str(source), *map(str, driver.helpers), "-o", str(binary)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return binary


@pytest.mark.parametrize("name", list(SANITIZED))
def test_c_parsers_are_memory_safe_under_sanitizers(tmp_path, name):
    """http/csrc/head.c and ws/csrc/upgrade.c (with its SHA-1) on 300k mutants each."""
    driver = SANITIZED[name]
    binary = build_sanitized(tmp_path, driver, driver.source)
    run = subprocess.run(
        [str(binary), str(SANITIZED_ITERATIONS)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    accepted = int(run.stdout.split()[1])
    assert accepted > SANITIZED_ITERATIONS // 20  # the mutants reach the accepting paths


@pytest.mark.parametrize("name", list(SANITIZED))
def test_sanitizer_check_catches_a_read_past_the_head(tmp_path, name):
    """The same driver on a parser that looks one byte past the end aborts."""
    driver = SANITIZED[name]
    source = driver.source.read_text()
    broken = source.replace(*driver.breakage)
    assert broken != source
    (tmp_path / driver.source.name).write_text(broken)
    binary = build_sanitized(tmp_path, driver, tmp_path / driver.source.name)
    run = subprocess.run([str(binary), "100000"], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "heap-buffer-overflow" in run.stderr


def test_asan_build_catches_an_overflow(tmp_path):
    """run.py --asan really swaps in a sanitized build: unmasking 8 bytes past
    a 4-byte buffer through it aborts with an AddressSanitizer report."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    sys.path.insert(0, str(FUZZ))
    import run as fuzz_runner

    env = fuzz_runner.build_asan(tmp_path)
    if not env:
        pytest.skip("gcc has no libasan")
    code = (
        "import _harness\n"
        "from reactor.ws import frames, unmask\n"
        "assert _harness.use_speedups_override(unmask, frames)\n"
        "buf = unmask._ffi.new('unsigned char[]', 4)\n"
        "unmask._lib.ws_unmask(buf, 12, 0x01020304, 0)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=FUZZ,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "AddressSanitizer: heap-buffer-overflow" in run.stderr


# ---- the coverage-guided run ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(FUZZ_SECONDS <= 0, reason="REACTOR_FUZZ_SECONDS=0")
def test_fuzz_targets_find_nothing(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    stats_path = tmp_path / "fuzz.json"
    cmd = [sys.executable, str(FUZZ / "run.py"), "--seconds", str(FUZZ_SECONDS), "--jobs", "3"]
    cmd += ["--artifacts", str(tmp_path / "findings"), "--json", str(stats_path)]
    run = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=FUZZ_SECONDS * 3 + 180
    )
    print(run.stdout)
    results = json.loads(stats_path.read_text())["targets"]
    assert {r["target"] for r in results} == set(TARGETS)
    for result in results:
        assert result["findings"] == [], run.stdout
        assert result["exit_code"] == 0, run.stdout
        assert result["finished"], f"{result['target']} stopped before its deadline"
        assert result["inputs"] > 0
    assert run.returncode == 0, run.stdout + run.stderr
