"""Shared plumbing for the atheris fuzz targets in this folder.

A target module defines ``NAME`` and ``check(data: bytes) -> str``: it runs
the code under test on ``data``, asserts its invariants (an AssertionError is
a finding) and returns the *kind* of input it was (e.g. "close 1002",
"http 414"), which the stats count. The same ``check`` is replayed by
tests/test_fuzz.py over the seed corpus and every saved regression, without
atheris, so the invariants run in every test session.

Run as a script (``python tests/fuzz/fuzz_x.py [libFuzzer flags]``, normally
through tests/fuzz/run.py), a target imports the code under test with
atheris' coverage instrumentation and fuzzes until ``--seconds``. Stats go to
the JSON file named by $REACTOR_FUZZ_STATS, rewritten at least once a second
and once more at the deadline, so a crash loses at most a second of counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATS_ENV = "REACTOR_FUZZ_STATS"
SPEEDUPS_ENV = "REACTOR_FUZZ_SPEEDUPS"  # another build of reactor.ws._speedups (ASan)
DEADLINE_ENV = "REACTOR_FUZZ_DEADLINE"  # seconds of fuzzing (the runner sets it)
FLUSH_INTERVAL = 1.0  # seconds between stats rewrites: a crash loses at most this much
swapped_speedups: str | None = None  # the override build in use, reported in the stats


def instrumented(enabled: bool) -> contextlib.AbstractContextManager:
    """Coverage instrumentation for the imports in the ``with`` block, only
    when the module runs as a fuzzer (replaying in pytest needs none)."""
    if not enabled:
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["reactor"])


def use_speedups_override(unmask_module, frames_module) -> str | None:
    """Swap in the build of ``reactor.ws._speedups`` named by $REACTOR_FUZZ_SPEEDUPS
    (run.py --asan: the same C compiled with AddressSanitizer, so a read one
    byte past the window aborts instead of passing unnoticed; used to replay a
    corpus, as gcc's ASan runtime disables libFuzzer's coverage). Returns its path."""
    path = os.environ.get(SPEEDUPS_ENV)
    if not path:
        return None
    import importlib.util

    # The init function is PyInit__speedups: the module name must end in "_speedups".
    spec = importlib.util.spec_from_file_location("reactor_fuzz_asan._speedups", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from reactor.ws import native

    native.ffi, native.lib = module.ffi, module.lib
    native.use("c")  # every routine rebinds to this build; windows of the other are dropped
    global swapped_speedups
    swapped_speedups = path
    return path


class Stats:
    """Counts of inputs by kind, flushed to a JSON file."""

    def __init__(self, name: str, path: str | None) -> None:
        self.name = name
        self.path = path
        self.kinds: Counter[str] = Counter()
        self.inputs = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.flushed = self.started

    def count(self, kind: str, size: int) -> None:
        self.kinds[kind] += 1
        self.inputs += 1
        self.bytes += size

    def flush(self, finished: bool) -> None:
        self.flushed = time.monotonic()
        if self.path is None:
            return
        record = {
            "target": self.name,
            "inputs": self.inputs,
            "bytes": self.bytes,
            "seconds": round(self.flushed - self.started, 2),
            "finished": finished,
            "kinds": dict(self.kinds.most_common()),
            "c_build": swapped_speedups or "the installed one",
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, self.path)  # a reader never sees half a file


def fuzz(name: str, check: Callable[[bytes], str]) -> None:
    """Run ``check`` under libFuzzer until the deadline; never returns."""
    import atheris

    stats = Stats(name, os.environ.get(STATS_ENV))
    deadline = stats.started + float(os.environ.get(DEADLINE_ENV, "60"))

    def one_input(data: bytes) -> None:
        try:
            kind = check(data)
        except BaseException:
            stats.count("FINDING", len(data))
            stats.flush(finished=False)  # libFuzzer reports it and exits
            raise
        stats.count(kind, len(data))
        now = time.monotonic()
        if now - stats.flushed >= FLUSH_INTERVAL or now >= deadline:
            stats.flush(finished=now >= deadline)
            if now >= deadline:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)  # libFuzzer has no clean stop; the stats are written

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
