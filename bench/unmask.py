"""Unmasking bandwidth (RFC 6455 §5.3): our cffi routine against the fallback and the peers.

For payloads of 125 B (the largest control frame), 4 KiB, 64 KiB and 1 MiB, in bytes of
payload per second, median of ``--repeat`` timings of about ``--target`` seconds each:

- ``cffi window``: ``Window.unmask`` on the cached window of a long-lived bytearray, the path
  the receive loop takes (``reactor.ws.unmask.window``; no ``ffi.from_buffer`` per call);
- ``cffi unmask()``: the public ``unmask(buf, key)``, which wraps the buffer on every call;
- ``frame scanner``: ``frames.scan_frames`` over a buffer of masked frames of that size (up to
  64 KiB of them per call): header parsing + validation + unmasking in one C call, the hot
  path's full per-frame cost; its ns/call column is per frame;
- ``python fallback``: ``unmask_python`` (the int-XOR trick), used only without the build;
- ``websockets C``: ``websockets.speedups.apply_mask`` (SSE2, returns a new bytes object), when
  importable;
- ``memory copy``: ``dst[:] = src`` between two memoryviews, i.e. memcpy plus the same Python
  call overhead: the ceiling the goal is stated against (>= 50% at 64 KiB).

Every implementation is first checked against the pure-Python result on the same data (a
wrong result voids the run). The process pins itself to ``--cpu`` and waits (bounded) for the
shared machine to be idle. Results go to bench/results/unmask-<time>.json and a markdown table.

    .venv/bin/python bench/unmask.py            # 7 x ~0.2 s per size and implementation
    .venv/bin/python bench/unmask.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import benchkit

from reactor.ws import frames, native
from reactor.ws import unmask as ws_unmask

SIZES = (125, 4096, 65536, 1 << 20)
KEY = b"\x37\xfa\x21\x3d"  # RFC 6455 §5.7's example masking key
SCAN_WINDOW = 64 * 1024  # bytes of frames per scanner call: one receive buffer's worth
GOAL_SIZE = 65536  # the goal: unmask >= 50% of memory-copy bandwidth at 64 KiB
GOAL_SHARE = 0.5

try:
    from websockets.speedups import apply_mask
except ImportError:  # not installed, or installed without its C extension
    apply_mask = None


# ---- the implementations: each returns (statement, namespace, check) ------------------------
# The statement is what timeit runs; ``check()`` returns the unmasked bytes it produces, to be
# compared with the pure-Python result before anything is timed.


def payload(size: int) -> bytes:
    return bytes((i * 131 + 7) & 0xFF for i in range(size))


def expected(data: bytes) -> bytes:
    buf = bytearray(data)
    ws_unmask.unmask_python(buf, KEY)
    return bytes(buf)


def cffi_window(data: bytes):
    buf = bytearray(data)
    window = ws_unmask.window(buf)
    key_be = int.from_bytes(KEY, "big")
    namespace = {"f": window.unmask, "n": len(buf), "k": key_be}

    def check() -> bytes:
        buf[:] = data
        window.unmask(0, len(buf), key_be, 0)
        return bytes(buf)

    return "f(0, n, k, 0)", namespace, check


def in_place(unmask: Callable[[bytearray, bytes], None]) -> Callable:
    """An implementation that unmasks a whole buffer in place: ``unmask(buf, key)``."""

    def implementation(data: bytes):
        buf = bytearray(data)

        def check() -> bytes:
            work = bytearray(data)
            unmask(work, KEY)
            return bytes(work)

        return "f(buf, k)", {"f": unmask, "buf": buf, "k": KEY}, check

    return implementation


def websockets_c(data: bytes):
    return "f(d, k)", {"f": apply_mask, "d": data, "k": KEY}, lambda: apply_mask(data, KEY)


def memory_copy(data: bytes):
    src, dst = memoryview(data), memoryview(bytearray(len(data)))

    def check() -> bytes:
        dst[:] = src
        return expected(bytes(dst))  # a copy is not an unmask: check the copy, not the XOR

    return "d[:] = s", {"d": dst, "s": src}, check


def masked_frames(data: bytes) -> tuple[bytearray, int]:
    """Masked binary frames whose payload bytes on the wire are ``data`` (so the scanner's
    result compares with the other implementations'): as many as fit in SCAN_WINDOW and in
    one scanner call, at least one."""
    frame = frames.serialize_masked_frame(frames.OP_BINARY, expected(data), KEY)
    count = max(1, min(frames.SCAN_CAPACITY, SCAN_WINDOW // len(frame)))
    return bytearray(frame * count), count


def frame_scanner(data: bytes):
    buf, count = masked_frames(data)
    scan = frames.scan_frames
    limit = len(data) + 1

    def check() -> bytes:
        work, _ = masked_frames(data)
        _kind, start, end = scan(work, max_size=limit)[-3:]
        return bytes(work[start:end])

    namespace = {"f": scan, "buf": buf, "m": limit}
    return "f(buf, max_size=m)", namespace, check, count


IMPLEMENTATIONS: dict[str, Callable] = {
    "cffi window (hot path)": cffi_window,
    "cffi unmask()": in_place(ws_unmask.unmask),
    "frame scanner (parse + unmask)": frame_scanner,
    "python fallback": in_place(ws_unmask.unmask_python),
    "websockets C apply_mask": websockets_c,
    "memory copy": memory_copy,
}
COPY = "memory copy"


# ---- timing -------------------------------------------------------------------------------


def calls_for(timer: timeit.Timer, target: float) -> int:
    """Calls that take about ``target`` seconds: grow a trial run tenfold until it lasts a
    tenth of the target (long enough for the clock), then scale it."""
    number = 1
    while (seconds := timer.timeit(number)) < target / 10:
        number *= 10
    return max(1, int(number * target / seconds))


def time_one(name: str, size: int, repeat: int, target: float) -> dict:
    data = payload(size)
    made = IMPLEMENTATIONS[name](data)
    statement, namespace, check = made[:3]
    frames_per_call = made[3] if len(made) > 3 else 1
    correct = check() == expected(data)
    timer = timeit.Timer(statement, globals=namespace)
    number = calls_for(timer, target)
    seconds = [timer.timeit(number) / number for _ in range(repeat)]
    per_call = statistics.median(seconds)
    return {
        "implementation": name,
        "size": size,
        "correct": correct,
        "calls_per_timing": number,
        "seconds_per_call_all": seconds,
        "ns_per_frame": per_call / frames_per_call * 1e9,
        "bytes_per_s": size * frames_per_call / per_call,
        "frames_per_call": frames_per_call,
    }


def available(name: str) -> bool:
    if name == "websockets C apply_mask":
        return apply_mask is not None
    if name in ("cffi window (hot path)", "cffi unmask()", "frame scanner (parse + unmask)"):
        return native.active == "c"
    return True


# ---- report -------------------------------------------------------------------------------


def gbps(value: float) -> str:
    return f"{value / 1e9:.2f}" if value >= 1e8 else f"{value / 1e9:.3f}"


def table(results: list[dict], sizes: list[int]) -> str:
    by = {(r["implementation"], r["size"]): r for r in results}
    names = list(dict.fromkeys(r["implementation"] for r in results))
    copy = {s: by.get((COPY, s), {}).get("bytes_per_s") for s in sizes}
    heads = " | ".join(f"{label(s)} GB/s (vs copy)" for s in sizes)
    lines = [f"| implementation | {heads} | {label(sizes[0])} ns/frame |",
             "|---|" + "---:|" * (len(sizes) + 1)]  # fmt: skip
    for name in names:
        cells = [cell(by.get((name, s)), copy[s]) for s in sizes]
        first = by.get((name, sizes[0]))
        ns = f"{first['ns_per_frame']:,.0f}" if first else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ns} |")
    return "\n".join(lines)


def cell(result: dict | None, copy: float | None) -> str:
    if result is None:
        return "-"
    mark = "" if result["correct"] else " WRONG"
    share = f" ({result['bytes_per_s'] / copy:.0%})" if copy else ""
    return f"{gbps(result['bytes_per_s'])}{share}{mark}"


def label(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    return f"{size >> 10} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def goal_line(results: list[dict]) -> str:
    by = {(r["implementation"], r["size"]): r["bytes_per_s"] for r in results}
    ours, copy = by.get(("cffi window (hot path)", GOAL_SIZE)), by.get((COPY, GOAL_SIZE))
    if not ours or not copy:
        return "goal (unmask >= 50% of memory copy at 64 KiB): not measured"
    share = ours / copy
    verdict = "met" if share >= GOAL_SHARE else "NOT met"
    return f"goal (unmask >= 50% of memory copy at 64 KiB): {share:.0%} -> {verdict}"


# ---- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 3 x ~0.02 s per cell")
    p.add_argument("--repeat", type=int, default=7, help="timings per cell (median)")
    p.add_argument("--target", type=float, default=0.2, help="seconds per timing")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma list of bytes")
    p.add_argument("--cpu", type=int, default=1, help="CPU to pin to (-1: no pinning)")
    p.add_argument("--results-dir", type=Path, default=benchkit.RESULTS_DIR)
    p.add_argument("--quiet-timeout", type=float, default=30.0,
                   help="max s to wait for the shared machine to be idle")  # fmt: skip
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        args.repeat, args.target = 3, 0.02
        args.quiet_timeout = min(args.quiet_timeout, 2.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    quiet = benchkit.wait_for_quiet(args.quiet_timeout)
    results = []
    for size in args.sizes:
        for name in filter(available, IMPLEMENTATIONS):
            results.append(time_one(name, size, args.repeat, args.target))
    text = table(results, args.sizes) + "\n\n" + goal_line(results)
    skipped = [n for n in IMPLEMENTATIONS if not available(n)]
    record = {"benchmark": "unmask", "command": sys.argv, "impl": native.active,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": benchkit.machine_note(), "quiet": quiet, "skipped": skipped,
              "results": results, "table": text}  # fmt: skip
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"unmask-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(text + (f"\n\nskipped (not available): {', '.join(skipped)}" if skipped else ""))
    print(f"\nresults: {out}", file=sys.stderr)
    return 0 if all(r["correct"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
