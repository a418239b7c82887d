"""The report of a run: counts and latencies from the clients, memory per connection from
the snapshots, CPU between marks, and the table printed at the end."""

from __future__ import annotations

import math
from typing import Any

from .plan import Plan
from .preflight import gib
from .procfs import slab_growth
from .run import Run


def merge_hist(reports: list[dict[str, Any]], key: str) -> list[tuple[int, int]]:
    merged: dict[int, int] = {}
    for report in reports:
        for value, count in report.get(key, []):
            merged[value] = merged.get(value, 0) + count
    return sorted(merged.items())


def quantile(hist: list[tuple[int, int]], q: float) -> float | None:
    """The value at quantile q of a merged histogram (the clients' bucket rule: rank ceil(qN))."""
    total = sum(count for _, count in hist)
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for value, count in hist:
        seen += count
        if seen >= rank:
            return value
    return hist[-1][0]


def latency_us(hist: list[tuple[int, int]]) -> dict[str, float | None]:
    out = {}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)):
        value = quantile(hist, q)
        out[name] = None if value is None else round(value / 1e3, 1)
    return out


def failures_by_cause(reports: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for report in reports:
        for stage, causes in report.get("failures", {}).items():
            for cause, count in causes.items():
                out[f"{stage}.{cause}"] = out.get(f"{stage}.{cause}", 0) + count
    return dict(sorted(out.items()))


def per_conn(delta: float, count: int) -> float | None:
    return round(delta / count, 1) if count else None


def ramp_slope(samples: list[dict[str, Any]], key: str) -> float | None:
    """Bytes per added connection during the ramp (least squares of `key` against open
    connections): the marginal cost, free of start-up costs the baseline difference includes.
    None when the ramp was too short to give at least 4 samples."""
    points = [(s["open"], s[key]) for s in samples if s["stage"] == "ramp" and s["open"] > 0]
    if len(points) < 4 or points[-1][0] == points[0][0]:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return round(sxy / sxx, 1) if sxx else None


def summarize(run: Run) -> dict[str, Any]:
    """The report: counts and times from the clients, memory from the snapshots."""
    return {**connection_figures(run), **memory_figures(run)}


def span(run: Run, start: str, end: str) -> float | None:
    if start not in run.marks or end not in run.marks:
        return None
    return round(run.marks[end] - run.marks[start], 3)


def connection_figures(run: Run) -> dict[str, Any]:
    reports = [c.events.get("report", c.last) for c in run.clients]
    established = sum(r.get("established", 0) for r in reports)
    # Time to full: from a client's start to its last handshake, the slowest client's.
    to_full = max((r.get("ramp_s", 0) for r in reports), default=0)
    failures = failures_by_cause(reports)
    return {
        "target": run.plan.connections,
        "established": established,
        "held_at_echo": run.snapshots.get("held", {}).get("open", 0),
        "failures": failures,
        "failures_total": sum(failures.values()),
        "time_to_full_s": round(to_full, 3),
        "ramp_stage_s": span(run, "clients_started", "ramp_done"),
        "connections_per_s": round(established / to_full, 1) if to_full else None,
        "handshake_us": latency_us(merge_hist(reports, "handshake_hist")),
        "echo_sent": sum(r.get("echo_sent", 0) for r in reports),
        "echo_ok": sum(r.get("echo_ok", 0) for r in reports),
        "echo_round_s": span(run, "echo_started", "echo_done"),
        "echo_us": latency_us(merge_hist(reports, "echo_hist")),
        "closed_clean": sum(r.get("closed", 0) for r in reports),
        "close_round_s": span(run, "close_started", "closed"),
        "cpu_in_ramp": run.cpu_between("clients_started", "ramp_done"),
        "cpu_in_echo": run.cpu_between("echo_started", "echo_done"),
    }


def memory_figures(run: Run) -> dict[str, Any]:
    """Per connection: growth from the baseline (no connection) to a snapshot, divided by the
    connections open at that snapshot."""
    base = run.snapshots.get("baseline", {})

    def growth(snapshot: str, key: str, sign: int = 1) -> float | None:
        snap = run.snapshots.get(snapshot, {})
        return per_conn(sign * (snap.get(key, 0) - base.get(key, 0)), snap.get("open", 0))

    held = run.snapshots.get("held", {})
    return {
        "server_rss_per_conn_b": growth("held", "server_rss"),
        "server_uss_per_conn_b": growth("held", "server_uss"),
        "server_rss_per_conn_after_echo_b": growth("after_echo", "server_rss"),
        "server_rss_slope_per_conn_b": ramp_slope(run.samples, "server_rss"),
        "server_rss_per_conn_from_cold_b": per_conn(
            held.get("server_rss", 0) - run.snapshots.get("cold", {}).get("server_rss", 0),
            held.get("open", 0),
        ),
        "kernel_slab_per_conn_b": growth("held", "slab"),
        "kernel_slab_slope_per_conn_b": ramp_slope(run.samples, "slab"),
        "mem_available_drop_per_conn_b": growth("held", "mem_available", -1),
        "client_rss_per_conn_b": per_conn(held.get("client_rss", 0), held.get("open", 0)),
        "kernel_slab_caches_per_conn_b": slab_growth(
            base.get("slab_caches", {}), held.get("slab_caches", {}), held.get("open", 0)
        ),
        "server_rss_baseline_b": base.get("server_rss"),
        "server_rss_held_b": held.get("server_rss"),
        "min_mem_available_b": run.min_available,
    }


def result_ok(result: dict[str, Any], plan: Plan) -> bool:
    return (
        result["failures_total"] == 0
        and result["established"] == plan.connections
        and result["echo_ok"] == plan.connections
        and result["closed_clean"] == plan.connections
    )


def format_result(r: dict[str, Any]) -> str:
    def num(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        return (f"{value:,.1f}" if isinstance(value, float) else f"{value:,}") + unit

    hs, echo = r["handshake_us"], r["echo_us"]
    failures = ", ".join(f"{k} {v:,}" for k, v in r["failures"].items()) or "none"
    rows = [
        ("established", f"{r['established']:,} / {r['target']:,}"),
        ("failures", failures),
        ("time to full", num(r["time_to_full_s"], " s")),
        ("connections/s", num(r["connections_per_s"])),
        ("handshake p50 / p99", f"{num(_ms(hs['p50']), ' ms')} / {num(_ms(hs['p99']), ' ms')}"),
        ("echo round (all)", f"{num(r['echo_round_s'], ' s')}, {r['echo_ok']:,} byte-exact"),
        ("echo p50 / p99", f"{num(_ms(echo['p50']), ' ms')} / {num(_ms(echo['p99']), ' ms')}"),
        ("close handshakes", f"{r['closed_clean']:,} in {num(r['close_round_s'], ' s')}"),
        ("server RSS / conn (idle)", num(r["server_rss_per_conn_b"], " B")),
        ("server USS / conn (idle)", num(r["server_uss_per_conn_b"], " B")),
        ("server RSS / conn after echo", num(r["server_rss_per_conn_after_echo_b"], " B")),
        ("server RSS slope in ramp", num(r["server_rss_slope_per_conn_b"], " B/conn")),
        ("server RSS / conn from cold", num(r["server_rss_per_conn_from_cold_b"], " B")),
        ("kernel slab / conn pair", num(r["kernel_slab_per_conn_b"], " B")),
        ("client RSS / conn", num(r["client_rss_per_conn_b"], " B")),
        ("min MemAvailable", gib(r["min_mem_available_b"])),
        ("CPU-seconds in ramp", cpu_text(r["cpu_in_ramp"])),
        ("CPU-seconds in echo round", cpu_text(r["cpu_in_echo"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


def cpu_text(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "-"
    parts = ("server", "clients", "ksoftirqd", "others", "idle")
    return (
        ", ".join(f"{name} {cpu[name + '_s']:.1f}" for name in parts)
        + f" (in {cpu['seconds']:.1f} s)"
    )


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1e3
