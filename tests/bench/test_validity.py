"""Measurement validity (bench/validity.py): a level whose client fell behind its schedule, or
that stopped early, is marked invalid with the reason; sweeps name each level; an SLO search
that never failed says it is a bound."""

from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bench import loadgen
from bench.endpoint import Endpoint
from bench.loadgen import run_workload
from bench.profiles import Profile
from bench.scripted_server import Scenario, scripted_server
from bench.sweep import slo_search
from bench.validity import MAX_LAG_MS, invalid_reason, lag_bound_ms
from bench.workload import Workload
from cli.main import main


@pytest.fixture(scope="module")
def url():
    with scripted_server(Scenario(ttft_ms=(1, 2), gap_ms=(0.5, 1))) as u:
        yield u


def schedule(rate: float, n: int) -> np.ndarray:
    return np.arange(n) / rate


def test_lag_bound_is_10_ms_or_half_the_gap():
    assert lag_bound_ms(None) == lag_bound_ms(2.0) == lag_bound_ms(50.0) == MAX_LAG_MS
    assert lag_bound_ms(100.0) == pytest.approx(5.0)  # mean gap 10 ms


def test_a_closed_loop_on_time_is_valid():
    sched = schedule(20.0, 50)
    assert invalid_reason(sched, sched, None) is None
    assert invalid_reason(sched, sched + 0.002, 20.0) is None  # 2 ms late: within 10 ms


def test_lag_over_the_bound_is_invalid():
    sched = schedule(100.0, 200)
    why = invalid_reason(sched, sched + 0.006, 100.0)  # 6 ms > 5 ms at 100 req/s
    assert why == ("client fell behind its schedule: p99 dispatch lag 6.00 ms > 5.00 ms "
                   "(min of 10 ms and 0.5 x the mean gap at 100 req/s)")


def test_falling_behind_the_schedule_rate_is_invalid():
    sched = schedule(10.0, 100)
    why = invalid_reason(sched, sched * 1.05, 10.0)  # dispatched 5% slower than scheduled
    assert "client dispatched 9.52 req/s, under 98% of its schedule's 10 req/s" in why


def test_early_stop_is_invalid():
    sched = schedule(10.0, 3)
    assert invalid_reason(sched, sched, None, "endpoint broke") == "stopped early: endpoint broke"


def test_summary_of_a_late_client_says_invalid(url, tokenizer_path, monkeypatch):
    on_time = loadgen._sleep_until

    async def late(t: float) -> None:  # the client's scheduler wakes 30 ms late every time
        await on_time(t + 0.03)

    monkeypatch.setattr(loadgen, "_sleep_until", late)
    w = Workload(load="rate", rate=20.0, arrival="constant", requests=6, output_tokens=2)
    s = run_workload(Endpoint(url, "m"), w, tokenizer_path, []).summary
    assert s["valid"] is False
    assert s["invalid_reason"].startswith("client fell behind its schedule: p99 dispatch lag 3")
    r = CliRunner().invoke(main, ["loadgen", "--url", url, "--model", "m", "--tokenizer",
                                  str(tokenizer_path), "--rate", "20", "--arrival", "constant",
                                  "--requests", "6", "--output-tokens", "2"])
    assert r.exit_code == 0, r.output
    assert "INVALID    client fell behind its schedule" in r.output


def test_summary_columns_agree(url, tokenizer_path):
    s = run_workload(Endpoint(url, "m"), Workload(concurrency=2, requests=4, output_tokens=2),
                     tokenizer_path, []).summary
    assert s["valid"] is True and s["invalid_reason"] is None  # a closed loop has no lag


def test_sweep_names_each_level(url, tokenizer_path, tmp_path):
    r = CliRunner().invoke(main, ["loadgen", "sweep", "--url", url, "--model", "m",
                                  "--tokenizer", str(tokenizer_path), "--requests", "4",
                                  "--output-tokens", "2", "--concurrencies", "1,2",
                                  "--rates", "40", "--out", str(tmp_path / "s.parquet")])
    assert r.exit_code == 0, r.output
    levels = [re.split(r"\s{2,}", line)[0] for line in r.output.splitlines()[:3]]
    assert levels == ["concurrency 1", "concurrency 2", "rate 40/s"]
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column("load").to_pylist() == ["concurrency", "concurrency", "rate"]
    assert {"valid", "invalid_reason"} <= set(table.column_names)


def test_slo_search_that_never_fails_is_a_bound(url, tokenizer_path):
    r = CliRunner().invoke(main, ["loadgen", "slo-search", "--url", url, "--model", "m",
                                  "--tokenizer", str(tokenizer_path), "--requests", "3",
                                  "--output-tokens", "2", "--profile", "offline", "--max", "3"])
    assert r.exit_code == 0, r.output
    probes = [line.split()[2] for line in r.output.splitlines() if line.startswith("  meets")]
    assert probes == ["1", "2", "3"]  # --max itself is probed
    assert r.output.splitlines()[-1] == ("highest concurrency meeting offline: ≥ 3 "
                                         "(never failed up to --max 3)")


def test_slo_search_reports_the_first_failure(monkeypatch, tokenizer_path):
    from bench import sweep as sweep_module

    def fake_run(endpoint, w, tok, profiles, **kw):  # p99 TTFT 10 ms per concurrency
        return type("R", (), {"summary": {"num_failed": 0, "ttft_p99_ms": 10.0 * w.concurrency,
                                          "tpot_p99_ms": 5.0}})()

    monkeypatch.setattr(sweep_module, "run_workload", fake_run)
    found = slo_search(None, Workload(concurrency=1), tokenizer_path, Profile("p", 450, 40))
    assert (found.best_concurrency, found.first_failure) == (45, 46)
