"""Run the atheris fuzz targets: ``python tests/fuzz/run.py --seconds N [--target X]``.

Each target runs in its own subprocess (libFuzzer owns the process and ends it
abruptly on a finding), with the seed corpus of corpus/<target>/ plus a
scratch corpus that libFuzzer may grow (never written back into the repo).
A finding is saved under --artifacts and reported with the command that
replays it; make it a regression by copying it to regressions/<target>/ (the
test suite replays that folder). The run's stats (inputs tried by kind per
target, findings) are printed and written as JSON (--json, by default
bench/results/fuzz-<time>.json, like the benchmarks' results).

Exit status: 0 when every target ran to its deadline without a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TARGETS = {
    "ws_frames": "fuzz_ws_frames.py",
    "ws_handshake": "fuzz_ws_handshake.py",
    "http": "fuzz_http.py",
}
# Longest input per target: past the largest limit each parser enforces, so the
# limit paths are reachable (http: 16 KiB of fields + an 8 KiB target + slack).
MAX_LEN = {"ws_frames": 4096, "ws_handshake": 4096, "http": 32768}
INPUT_TIMEOUT = 20  # seconds for one input before libFuzzer calls it a hang
RSS_LIMIT_MB = 2048  # libFuzzer's own memory bound per target process
EXIT_GRACE = 60  # seconds past the deadline before a target process is killed


def libfuzzer_flags(name: str, seconds: float, artifacts: Path, work: Path) -> list[str]:
    regressions = HERE / "regressions" / name
    return [
        str(work / "corpus"),  # first: where libFuzzer writes new inputs
        str(HERE / "corpus" / name),  # read-only seeds
        *([str(regressions)] if regressions.is_dir() else []),  # past findings, read-only
        f"-max_len={MAX_LEN[name]}",
        f"-timeout={INPUT_TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-max_total_time={int(seconds) + 30}",  # backstop: the harness stops itself
        f"-artifact_prefix={artifacts}/{name}-",
        "-print_final_stats=0",
    ]


def build_asan(scratch: Path) -> dict[str, str]:
    """Compile ws/csrc with AddressSanitizer into ``scratch``; the environment
    that makes the ws_frames target use it (the C code is the only native code
    the targets reach). Empty when gcc or its libasan is missing."""
    if shutil.which("gcc") is None:
        print("--asan: gcc not found; no ASan replay")
        return {}
    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    if not libasan or not os.path.isabs(libasan):
        print("--asan: gcc's libasan not found; no ASan replay")
        return {}
    build = scratch / "asan"
    shutil.copytree(REPO / "ws" / "csrc", build / "ws" / "csrc")  # relative paths, as setup.py
    flags = "-fsanitize=address -fno-omit-frame-pointer -g -O1"
    code = (
        "import importlib.util as u\n"
        "s = u.spec_from_file_location('b', 'ws/csrc/build_speedups.py')\n"
        "m = u.module_from_spec(s); s.loader.exec_module(m)\n"
        f"m.ffibuilder.compile(tmpdir={str(build)!r})"
    )
    env = dict(os.environ, CFLAGS=flags, LDFLAGS="-fsanitize=address")
    subprocess.run(
        [sys.executable, "-c", code], cwd=build, env=env, check=True, capture_output=True
    )
    (library,) = (build / "reactor" / "ws").glob("_speedups*.so")
    return {
        "REACTOR_FUZZ_SPEEDUPS": str(library),
        "LD_PRELOAD": libasan,  # the ASan runtime must be loaded before Python itself
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",  # CPython's arenas look like leaks
    }


def start(name: str, seconds: float, artifacts: Path, scratch: Path) -> tuple:
    old = set(artifacts.glob(f"{name}-*"))  # findings of earlier runs are not this run's
    work = scratch / name
    (work / "corpus").mkdir(parents=True)
    stats_path = work / "stats.json"
    env = dict(os.environ)
    env.update(
        REACTOR_FUZZ_STATS=str(stats_path),
        REACTOR_FUZZ_DEADLINE=str(seconds),
        TMPDIR=str(work),  # targets' own temporary files die with the scratch folder
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
    )
    cmd = [sys.executable, str(HERE / TARGETS[name])]
    cmd += libfuzzer_flags(name, seconds, artifacts, work)
    log = open(work / "log.txt", "w+")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return name, proc, log, stats_path, old, work


REPLAY = """
import random, sys
sys.path.insert(0, sys.argv[1])
import fuzz_ws_frames as target
current, mutations = sys.argv[2], int(sys.argv[3])
rng = random.Random(0)
count = 0

def run(data):
    global count
    with open(current, "wb") as f:  # the culprit, should the next line crash
        f.write(data)
    target.check(data)
    count += 1

def mutate(data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        if rng.random() < 0.5 and at < len(data):
            data[at] = rng.randrange(256)
        else:
            data[at:at] = bytes([rng.randrange(256)])
    return bytes(data)

for path in sys.stdin.read().splitlines():
    seed = open(path, "rb").read()
    run(seed)
    for _ in range(mutations):
        run(mutate(seed))
print("replayed", count, flush=True)
"""
ASAN_MUTATIONS = 20  # mutants replayed per corpus input: the corpus is coverage-minimal
#                      for the Python code, the C code's edge cases need more inputs


def asan_replay(work: Path, asan_env: dict, artifacts: Path) -> dict:
    """Run every input of the fuzzed corpus, the seeds and the regressions of
    ws_frames, and ASAN_MUTATIONS mutants of each, on the ASan build. Coverage
    guidance does not survive gcc's ASan runtime (it takes over libFuzzer's
    coverage hooks), so the C code is fuzzed on the normal build and replayed here."""
    folders = (work / "corpus", HERE / "corpus" / "ws_frames", HERE / "regressions" / "ws_frames")
    paths = sorted(str(p) for folder in folders if folder.is_dir() for p in folder.iterdir())
    current = work / "asan-current.bin"
    env = {**os.environ, **asan_env, "TMPDIR": str(work)}
    run = subprocess.run(
        [sys.executable, "-c", REPLAY, str(HERE), str(current), str(ASAN_MUTATIONS)],
        input="\n".join(paths),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=3600,
    )
    lines = run.stdout.splitlines()
    if run.returncode == 0 and lines and lines[-1].startswith("replayed"):
        return {"asan_replayed": int(lines[-1].split()[1]), "asan_findings": []}
    saved = str(artifacts / f"ws_frames-asan-{int(time.time())}.bin")
    if current.exists():
        shutil.copyfile(current, saved)
    else:
        saved = "(the replay failed before its first input: see asan_log_tail)"
    return {"asan_replayed": None, "asan_findings": [saved], "asan_log_tail": run.stderr[-4000:]}


def finish(job: tuple, seconds: float, artifacts: Path, asan_env: dict) -> dict:
    name, proc, log, stats_path, old, work = job
    try:
        code = proc.wait(timeout=seconds + EXIT_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    log.seek(0)
    output = log.read()
    log.close()
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {"target": name}
    findings = sorted(str(p) for p in set(artifacts.glob(f"{name}-*")) - old)
    stats.update(exit_code=code, findings=findings)
    if name == "ws_frames" and asan_env:
        replay = asan_replay(work, asan_env, artifacts)
        stats.update(replay)
        stats["findings"] += replay["asan_findings"]
    if code != 0 or findings:
        stats["log_tail"] = output[-4000:]
    return stats


def run(names: list[str], seconds: float, jobs: int, artifacts: Path, asan: bool) -> list[dict]:
    artifacts.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="reactor-fuzz-") as scratch:
        asan_env = build_asan(Path(scratch)) if asan and "ws_frames" in names else {}
        pending = list(names)
        while pending:
            batch, pending = pending[:jobs], pending[jobs:]
            running = [start(name, seconds, artifacts, Path(scratch)) for name in batch]
            results += [finish(job, seconds, artifacts, asan_env) for job in running]
    return results


def report(results: list[dict]) -> None:
    for stats in results:
        ok = stats["exit_code"] == 0 and not stats["findings"]
        print(
            f"{stats['target']:>13}: {'ok' if ok else 'FAILED'}  "
            f"{stats.get('inputs', 0):,} inputs, {stats.get('bytes', 0):,} bytes "
            f"in {stats.get('seconds', 0)} s"
        )
        for kind, count in stats.get("kinds", {}).items():
            print(f"{'':>15}{count:>10,}  {kind}")
        if stats.get("asan_replayed") is not None:
            print(f"{'':>15}{stats['asan_replayed']:>10,}  replayed on the C built with ASan")
        for finding in stats["findings"]:
            replay = f"{sys.executable} tests/fuzz/{TARGETS[stats['target']]} {finding}"
            print(f"{'':>15}finding: {finding}\n{'':>15}replay:  {replay}")
        for tail in ("log_tail", "asan_log_tail"):
            if tail in stats:
                print(stats[tail])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="fuzzing time per target")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at the same time")
    parser.add_argument(
        "--asan",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replay ws_frames' corpus on the C scanner/unmask built with AddressSanitizer "
        "(needs gcc; skipped without it)",
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=REPO / "build" / "fuzz-artifacts",
        help="where findings are saved",
    )
    parser.add_argument(
        "--json", type=Path, help="the run's stats (default: bench/results/fuzz-<time>.json)"
    )
    options = parser.parse_args(argv)
    try:
        import atheris  # noqa: F401  (the targets import it; say so once, clearly)
    except ImportError:
        print("atheris is not installed: pip install atheris (wheels for CPython 3.11, Linux)")
        return 2
    names = options.target or list(TARGETS)
    started = time.time()
    results = run(names, options.seconds, max(1, options.jobs), options.artifacts, options.asan)
    report(results)
    path = options.json or REPO / "bench" / "results" / time.strftime("fuzz-%Y%m%d-%H%M%S.json")
    record = {"started": started, "seconds_per_target": options.seconds, "targets": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"stats: {path}")
    failed = [r for r in results if r["exit_code"] != 0 or r["findings"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
