"""bench/ab.py, the A/B runner for two checkouts, in a small version (both sides
this checkout): it runs, alternates, and reports a ratio from real measurements."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import REPO, run_bench

pytestmark = pytest.mark.slow


def test_ab_compares_two_checkouts_per_scenario(tmp_path: Path) -> None:
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("bench/ab.py runs each checkout's .venv (make install creates it)")
    stdout, record = run_bench(
        REPO / "bench" / "ab.py", "--a", str(REPO), "--b", str(REPO),
        "--scenarios", "ws-echo64,ws-rtt", "--repeat", "2", "--duration", "1",
        results_dir=tmp_path, timeout=120,
    )  # fmt: skip
    assert set(record["runs"]) == {"ws-echo64", "ws-rtt"}
    for by_name in record["runs"].values():
        for name in ("A", "B"):
            assert len(by_name[name]) == 2
            for run in by_name[name]:
                assert run["rate"] > 0 and run["server_us_per_op"] > 0
                assert 0 < run["server_cpu_share"] <= 1.1  # pinned to one core
    assert "| ws-echo64 |" in stdout and "| ws-rtt |" in stdout
