"""Soak: bench/soak.py for REACTOR_SOAK_SECONDS (default 60) against one
`--proto auto` server: 1,000 churning WebSocket clients (0 B - 1 MiB, text and
binary, some fragmented) and 200 keep-alive HTTP clients, every byte compared.
See bench/soak.py for the load and for why the RSS bound is what it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from testkit import REPO

SOAK_SECONDS = float(os.environ.get("REACTOR_SOAK_SECONDS", "60"))


@pytest.mark.slow
@pytest.mark.skipif(SOAK_SECONDS <= 0, reason="REACTOR_SOAK_SECONDS=0")
def test_soak_nothing_lost_no_fd_leak_rss_flat(tmp_path):
    path = tmp_path / "soak.json"
    cmd = [sys.executable, str(REPO / "bench" / "soak.py"), "--seconds", str(SOAK_SECONDS)]
    cmd += ["--json", str(path)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=SOAK_SECONDS + 400)
    print(run.stdout, run.stderr[-3000:])
    result = json.loads(path.read_text())
    counts = result["counts"]
    assert result["errors"] == {}, result["problems"]
    # every client kind really ran: churn, drops, fragments, both message types, HTTP
    assert counts["ws connections"] > result["ws_clients"]  # each client came back at least once
    for kind in ("ws dropped without close", "ws messages sent fragmented", "ws text", "ws binary"):
        assert counts.get(kind, 0) > 0, kind
    assert counts["http responses checked"] > result["http_clients"]
    assert result["fds_back_to_baseline"], (result["fd_baseline"], result["fd_end"])
    assert result["fd_peak"] > result["ws_clients"]  # the clients were there at once
    growth = result["rss_growth_second_half_mib"]
    assert growth < result["rss_bound_mib"], f"RSS grew {growth} MiB in the second half"
    assert result["server_exit_code"] == 0
    assert result["passed"] and run.returncode == 0
