"""What `servecat loadgen` prints: a workload's summary, one line per load level, and what
happened when a run stopped early (its counts, never figures it did not measure)."""

from __future__ import annotations

import json


def _f(v: object, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def counts(s: dict) -> str:
    """`3 ok, 5 failed of 8 measured requests (http_5xx 5)`."""
    errors = json.loads(s.get("error_types") or "{}")
    kinds = ", ".join(f"{kind} {n}" for kind, n in errors.items())
    return (f"{s.get('num_completed', 0)} ok, {s.get('num_failed', 0)} failed of "
            f"{s.get('num_requests', 0)} measured requests" + (f" ({kinds})" if kinds else ""))


def stopped(s: dict | None) -> str:
    """What a run that stopped early counted, and no throughput or latency figures."""
    head = (f"requests   {counts(s)}\n" if s and s.get("num_requests") else
            "requests   none measured (the warm-up failed)\n")
    return head + "no throughput, latency or rate figures: the workload did not run to its end"


def level_line(level: str, s: dict) -> str:
    """One load level in a sweep or search: the level, then its figures (or why it has none)."""
    if s.get("early_stopped"):
        return f"{level:<22} stopped early ({counts(s)})"
    line = (f"{level:<22} req/s {_f(s.get('requests_per_s'), '{:.2f}')}  out tok/s "
            f"{_f(s.get('output_tokens_per_s'))}  TTFT p99 {_f(s.get('ttft_p99_ms'))} ms  "
            f"TPOT p99 {_f(s.get('tpot_p99_ms'))} ms  errors {_f(s.get('error_rate'), '{:.1%}')}")
    return line + _invalid(s, "  ")


def _invalid(s: dict, sep: str) -> str:
    return f"{sep}INVALID: {s['invalid_reason']}" if s.get("valid") is False else ""


def format_summary(s: dict) -> str:
    """The summary of a workload that ran to its end, as a small text table."""
    lines = [
        f"requests   {s['num_completed']}/{s['num_requests']} ok, error rate {_f(s['error_rate'], '{:.1%}')}"
        + (f"  {s['error_types']}" if s["num_failed"] else ""),
        f"window     {_f(s['duration_s'], '{:.2f}')} s   {_f(s['requests_per_s'], '{:.2f}')} req/s   "
        f"{_f(s['output_tokens_per_s'])} output tok/s   {_f(s['total_tokens_per_s'])} total tok/s",
    ]
    if s["target_rate"] is not None:  # a closed loop has no target rate to compare with
        lines.append(
            f"rate       target {_f(s['target_rate'], '{:.2f}')}  achieved "
            f"{_f(s['achieved_rate'], '{:.2f}')} req/s   client delay p99 "
            f"{_f(s['client_delay_p99_ms'], '{:.2f}')} ms   dispatch lag p99 "
            f"{_f(s['dispatch_lag_p99_ms'], '{:.2f}')} ms")
    if s.get("valid") is False:
        lines.append(f"INVALID    {s['invalid_reason']} (the figures below do not measure "
                     "the server)")
    lines += ["", f"{'ms':<6}" + "".join(f"{k:>10}" for k in ("mean", "p50", "p90", "p95", "p99"))]
    for m in ("ttft", "itl", "tpot", "e2e"):
        lines.append(f"{m.upper():<6}" + "".join(f"{_f(s[f'{m}_{k}_ms'], '{:.2f}'):>10}"
                                                  for k in ("mean", "p50", "p90", "p95", "p99")))
    profiles = [k.split("__", 1)[1] for k in s if k.startswith("slo_attainment__")]
    if profiles:
        lines.append("")
        lines.append(f"{'profile':<14}{'SLO attainment':>16}{'goodput req/s':>16}")
        for p in profiles:
            lines.append(f"{p:<14}{_f(s[f'slo_attainment__{p}'], '{:.1%}'):>16}"
                         f"{_f(s[f'goodput_rps__{p}'], '{:.2f}'):>16}")
    return "\n".join(lines)
