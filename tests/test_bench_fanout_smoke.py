"""bench/fanout.py works: a short run per configuration, every delivery checked by
the benchmark itself (it fails on a loss, duplicate, reordering or corruption).
Correctness only: no figure is asserted."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from testkit import REPO, run_bench

FANOUT = REPO / "bench" / "fanout.py"


def configs() -> str:
    chosen = ["one", "workers2"]
    if shutil.which("redis-server") and importlib.util.find_spec("hiredis"):
        chosen.append("redis")
    if importlib.util.find_spec("socketify"):  # the bench extra
        chosen.append("socketify")
    return ",".join(chosen)


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
def test_fanout_bench_smoke(tmp_path: Path) -> None:
    chosen = configs()
    out, record = run_bench(
        FANOUT,
        *("--subscribers", "50", "--duration", "0.5", "--warmup", "0.2", "--configs", chosen),
        results_dir=tmp_path,
        timeout=120,
    )
    results = record["results"]
    assert [r["config"] for r in results] == chosen.split(",")
    for result in results:
        assert result["subscribers"] == 50 and result["lost"] == 0
        assert result["publishes"] > 0 and result["deliveries_measured"] > 0
        assert result["latency_us_p50"] <= result["latency_us_p99"]
    assert "| one | 50 |" in out


def test_fanout_bench_detects_a_wrong_delivery() -> None:
    """The checker itself: bytes that are not the expected publishes fail."""
    spec = importlib.util.spec_from_file_location("fanout", FANOUT)
    fanout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fanout)
    run = fanout.Run.__new__(fanout.Run)
    run.next_seq, run.rest, run.published = [0], [b""], 2
    run.frames = [fanout.HEADER + fanout.payload(n, 5) for n in range(2)]
    run.sent_ns = [5, 5]

    class Sock:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def recv(self, size: int) -> bytes:
            return self.data

    run.subs = [Sock(run.frames[1] + run.frames[0])]  # reordered
    with pytest.raises(fanout.Failure):
        run.receive(0, None)
    run.subs = [Sock(run.frames[0] + run.frames[1])]
    assert run.receive(0, None) == 2
