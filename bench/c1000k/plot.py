"""The PNG of a run: connections, kernel memory and process memory over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(record: dict[str, Any], path: Path) -> bool:
    """Connections, kernel memory and process memory over time; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = record["timeline"]
    t = [s["t"] for s in samples]
    base = samples[0] if samples else {}

    def delta(key: str, unit: int) -> list[float]:
        return [(s[key] - base.get(key, 0)) / unit for s in samples]

    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 8), constrained_layout=True)
    conns, kernel, procs = axes
    settings = record["settings"]
    conns.set_title(f"C1000K: {settings['connections']:,} WebSocket connections, "
                    f"{settings['workers']} workers")  # fmt: skip
    conns.plot(t, [s["open"] for s in samples], label="open connections")
    conns.plot(t, [s["echo_ok"] for s in samples], label="echoed byte-exact", linestyle="--")
    conns.plot(t, [s["failures_total"] for s in samples], label="failures", color="red")
    kernel.plot(t, delta("slab", 2**30), label="kernel slab (growth)", color="tab:orange")
    kernel.plot(t, [s["mem_available"] / 2**30 for s in samples], label="MemAvailable",
                color="gray")  # fmt: skip
    procs.plot(t, delta("server_rss", 2**20), label="server RSS, all workers (growth)")
    procs.plot(
        t, [s["client_rss"] / 2**20 for s in samples], label="clients RSS", color="tab:green"
    )
    marks = record["marks"]
    spans = [("ramp", "clients_started", "ramp_done", "tab:blue"),
             ("echo", "echo_started", "echo_done", "tab:orange"),
             ("close", "close_started", "closed", "tab:green")]  # fmt: skip
    for axis, unit in ((conns, "connections"), (kernel, "GiB"), (procs, "MiB")):
        axis.set_ylabel(unit)
        for name, start, end, color in spans:
            if start in marks and end in marks:
                label = f"{name} stage" if axis is conns else None
                axis.axvspan(marks[start], marks[end], color=color, alpha=0.07, label=label)
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(alpha=0.3)
    procs.set_xlabel("seconds")
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True
