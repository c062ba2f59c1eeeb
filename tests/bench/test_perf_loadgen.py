"""`servecat perf loadgen`'s parts beside the rate search: the timing error of our client and an
httpx client against a scripted server, and GuideLLM's probe."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scripted_server import script_for
from cli.commands.perf_loadgen import PEERS_VENV, sustained
from cli.commands.perf_loadgen_guidellm import WARMUP, figures, find_guidellm, guidellm
from cli.commands.perf_loadgen_timing import SCENARIO, errors_vs_server, measure


def _row(rid: str, shift_ms: list[float], late_ms: list[float]) -> tuple[dict, dict]:
    """A measured row off the script by SHIFT_MS per chunk, and a server log LATE_MS late."""
    s = script_for(SCENARIO, rid, 4)
    truth = np.cumsum([s.ttft_ms, *s.gaps_ms])
    log = {(rid, i): (1.0, 1.0 + late / 1000) for i, late in enumerate(late_ms)}
    measured = truth + np.array(late_ms) + np.array(shift_ms)
    return {"request_id": rid, "max_tokens": 4, "ok": True,
            "chunk_times_ms": measured.tolist()}, log


def test_errors_are_measured_minus_script_moved_by_the_servers_lateness():
    row, log = _row("7", [1.0, 1.5, 1.0, 3.0], [0.5, 0.0, 2.0, 0.0])
    errs = errors_vs_server([row, {**row, "request_id": "x", "ok": False}], log)
    assert errs["ttft"] == pytest.approx([1.0])
    assert errs["itl"] == pytest.approx([0.5, -0.5, 2.0])


def test_timing_error_of_both_clients(tokenizer_path):
    t = measure(str(tokenizer_path), 8, 2, False, lambda _: None)
    assert t["order"] == ["servecat", "httpx", "httpx", "servecat"]
    for client in ("servecat", "httpx"):
        c = t["clients"][client]
        # Every request completed, each error is a real figure (a client cannot be early).
        assert c["requests"] == 16 and c["ttft_error_p50_ms"] > 0
    assert t["httpx_minus_servecat_ttft_p50_ms"] == pytest.approx(
        t["clients"]["httpx"]["ttft_error_p50_ms"] - t["clients"]["servecat"]["ttft_error_p50_ms"],
        abs=1e-3)


def _gl_row(targeted: float, lag_s: float, status: str = "completed") -> dict:
    return {"info": {"status": status, "error": None if status == "completed" else "boom",
                     "timings": {"targeted_start": targeted, "request_start": targeted + lag_s}}}


def test_guidellm_figures_leave_out_the_warm_up():
    n = 100
    rows = [_gl_row(i / 10, 0.5) for i in range(WARMUP)]  # the warm-up: late, left out
    rows += [_gl_row(100 + i / 50, 0.002) for i in range(n - 1)]
    rows.append(_gl_row(100 + (n - 1) / 50, 0.002, status="errored"))
    achieved, lag99, failed = figures(rows[::-1], n)
    assert achieved == pytest.approx(50.0)
    assert lag99 == pytest.approx(2.0)
    assert failed == 1


@pytest.mark.skipif(find_guidellm(PEERS_VENV) is None, reason="GuideLLM not installed "
                    "(`make peers-env`)")
def test_guidellm_probe_against_the_scripted_server(tokenizer_path):
    """The command line and export of the pinned GuideLLM: one probe, every request answered."""
    from bench.scripted_server import Scenario, scripted_server

    with scripted_server(Scenario()) as url:
        p = guidellm(find_guidellm(PEERS_VENV), url, str(tokenizer_path), 1.0, "constant",
                     False, sustained)(50.0)
    assert p["exit_code"] == 0, p.get("stderr_tail")
    assert p["requests"] == 200 and p["failed"] == 0
    assert p["achieved_rate"] == pytest.approx(50.0, rel=0.1)
    assert p["dispatch_lag_p99_ms"] is not None


def test_unknown_peer_is_one_clear_error():
    from click.testing import CliRunner

    from cli.commands.perf_loadgen import perf_loadgen

    result = CliRunner().invoke(perf_loadgen, ["--peers", "aiperf,vegeta"])
    assert result.exit_code == 2
    assert "unknown peer(s) vegeta; choose from aiperf, guidellm" in result.output
