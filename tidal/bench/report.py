"""How a bench run reads to a person: the live progress line and the summary table (pure text rendering)."""

from __future__ import annotations

from tidal.bench.histogram import PERCENTILES
from tidal.bench.runner import Result, Snapshot


def progress_line(s: Snapshot) -> str:
    target = f"/{s.target_rate:,.0f}" if s.target_rate is not None else ""
    parts = [
        f"{s.elapsed:6.1f}s",
        f"sent {s.sent_rate:8,.1f}{target}/s",
        f"answered {s.answered_rate:8,.1f}/s",
        f"errors {s.errors:,}",
        f"in flight {s.in_flight:,}",
        f"p50 {s.p50_ms:8.2f} ms",
        f"p99 {s.p99_ms:8.2f} ms",
    ]
    if s.replicas is not None:
        parts.append(f"replicas {s.replicas}")
    return "  ".join(parts)


def summary_table(r: Result) -> str:
    load = (f"open loop, {r.target_rate:,.1f} requests/s on average" if r.mode == "open"
            else f"closed loop, {r.concurrency} concurrent")
    lat = r.latency_ms
    rows = [
        ("target", r.target or "-"),
        ("load", load),
        ("duration", f"{r.duration:.2f} s"),
        ("requests", f"{r.sent:,} sent, {r.answered:,} answered"),
        ("throughput", f"{r.throughput:,.1f} requests/s"),
        ("errors", f"{r.errors:,}" + (f" ({_counts(r.failures)})" if r.failures else "")),
        ("status", _counts({str(k): v for k, v in sorted(r.status.items())}) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    keys = ["min", "mean", *(k for k, _ in PERCENTILES), "max"]
    lines.append("")
    lines.append("latency (ms, from the intended send time)")
    lines.append("  ".join(f"{k:>9}" for k in keys))
    lines.append("  ".join(f"{lat[k]:>9.2f}" for k in keys))
    if r.mode == "open" and r.service_ms:
        lines.append("")
        lines.append("service time (ms, from the actual send; what tools with coordinated omission report)")
        lines.append("  ".join(f"{r.service_ms[k]:>9.2f}" for k in keys))
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in counts.items())
