"""The summary of one workload from its per-request table (definitions in bench/schema.py)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.profiles import Profile
from bench.schema import LATENCY_METRICS, summary_schema
from bench.validity import invalid_reason
from servecat.slo import Slo, request_meets

_PCTS = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


def stats(values: np.ndarray, prefix: str) -> dict[str, float | None]:
    """mean, p50, p90, p95, p99 of values as `{prefix}_{stat}_ms`; None when there are none."""
    values = values[~np.isnan(values)] if values.size else values
    if not values.size:
        return {f"{prefix}_mean_ms": None, **{f"{prefix}_{k}_ms": None for k in _PCTS}}
    pct = np.percentile(values, list(_PCTS.values()))
    return {f"{prefix}_mean_ms": float(values.mean()),
            **{f"{prefix}_{k}_ms": float(v) for k, v in zip(_PCTS, pct, strict=True)}}


def column(table: pa.Table, name: str, mask: np.ndarray | None = None) -> np.ndarray:
    """A numeric column as float64 with nulls as NaN, optionally filtered."""
    arr = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    return arr if mask is None else arr[mask]


def summarize(table: pa.Table, profiles: list[Profile], target_rate: float | None,
              max_in_flight: int, stop_reason: str | None = None) -> dict[str, object]:
    """One flat summary row (keys = summary_schema(profiles) names). STOP_REASON says why the
    run stopped early (the endpoint looked broken), if it did; such a row is not valid."""
    n = table.num_rows
    ok = table.column("ok").to_numpy(zero_copy_only=False).astype(bool) if n else np.zeros(0, bool)
    n_ok = int(ok.sum())
    sched, sent, end = (column(table, c) for c in ("scheduled_s", "sent_s", "end_s"))
    # The measured window: first scheduled send -> last byte (or last error) of any request.
    duration = float(np.nanmax(end) - np.nanmin(sched)) if n else 0.0
    out_tok = np.nan_to_num(column(table, "output_tokens", ok)).sum() if n else 0
    in_tok = column(table, "input_tokens", ok).sum() if n else 0
    per_s = (lambda x: float(x) / duration) if duration > 0 else (lambda x: None)

    itl = (pc.list_flatten(table.filter(pa.array(ok)).column("itl_ms")).to_numpy(zero_copy_only=False)
           if n_ok else np.zeros(0))
    latency: dict[str, float | None] = {}
    for m in LATENCY_METRICS:
        latency |= stats(itl if m == "itl" else column(table, f"{m}_ms", ok), m)

    delay, lag = column(table, "client_delay_ms"), column(table, "dispatch_lag_ms")
    errors = Counter(e for e in table.column("error_type").to_pylist() if e)
    summary: dict[str, object] = {
        "num_requests": n, "num_completed": n_ok, "num_failed": n - n_ok,
        "error_rate": (n - n_ok) / n if n else None,
        "error_types": json.dumps(dict(sorted(errors.items()))),
        "early_stopped": stop_reason is not None,
        "duration_s": duration,
        "requests_per_s": per_s(n_ok),
        "output_tokens_per_s": per_s(out_tok),
        "total_tokens_per_s": per_s(out_tok + in_tok),
        "total_input_tokens": int(in_tok), "total_output_tokens": int(out_tok),
        "mean_input_tokens": float(in_tok / n_ok) if n_ok else None,
        "mean_output_tokens": float(out_tok / n_ok) if n_ok else None,
        **latency,
        "client_delay_mean_ms": _agg(delay, np.mean),
        "client_delay_p99_ms": _agg(delay, lambda a: np.percentile(a, 99)),
        "dispatch_lag_p99_ms": _agg(lag, lambda a: np.percentile(a, 99)),
        "dispatch_lag_max_ms": _agg(lag, np.max),
        "target_rate": target_rate,
        "achieved_rate": _achieved_rate(sent),
        "max_in_flight": max_in_flight,
    }
    why = invalid_reason(sched, column(table, "dispatched_s"), target_rate, stop_reason)
    summary |= {"valid": why is None, "invalid_reason": why}
    ttft, tpot = column(table, "ttft_ms"), column(table, "tpot_ms")
    for p in profiles:
        meets = request_meets(ok, ttft, tpot, Slo.of(p))
        summary[f"slo_attainment__{p.name}"] = float(meets.sum() / n) if n else None
        summary[f"goodput_rps__{p.name}"] = per_s(meets.sum())
    assert list(summary) == summary_schema(p.name for p in profiles).names
    return summary


def _agg(values: np.ndarray, fn) -> float | None:
    values = values[~np.isnan(values)]
    return float(fn(values)) if values.size else None


def _achieved_rate(sent: np.ndarray) -> float | None:
    """Requests sent per second: (n - 1) / (last send - first send)."""
    sent = np.sort(sent[~np.isnan(sent)])
    if sent.size < 2 or sent[-1] <= sent[0]:
        return None
    return float((sent.size - 1) / (sent[-1] - sent[0]))
