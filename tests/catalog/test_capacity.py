"""Capacity on hand-made curves: bracketed, lower bound, none, non-monotone, grouped, cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalog.capacity import at_crossing, capacities, capacity, crossing
from catalog.config import Profile
from servecat.slo import Slo

SLO = Slo(ttft_p99_ms=450, tpot_p99_ms=40)


def curve(ttft, tpot=None, err=None, load="concurrency", levels=(1, 2, 4, 8, 16), **extra):
    n = len(ttft)
    x = np.array(levels[:n], float)
    frame = pd.DataFrame({
        "load": load, "concurrency": x if load == "concurrency" else np.nan,
        "rate": x if load == "rate" else np.nan,
        "requests_per_s": x * 2.0, "ttft_p99_ms": ttft,
        "tpot_p99_ms": tpot if tpot is not None else [20.0] * n,
        "error_rate": err if err is not None else [0.0] * n, "num_requests": 200,
        "output_tokens_per_s": x * 100.0, "e2e_mean_ms": 500.0,
    })
    return frame.assign(**extra)


def test_bracketed_capacity_interpolates_where_the_p99_crosses_its_limit():
    cap = capacity(curve([100, 150, 250, 400, 900]), SLO)
    assert cap.status == "bracketed" and not cap.lower_bound
    assert (cap.pass_level, cap.fail_level) == (8, 16)
    assert cap.limiting == ("ttft_p99_ms",)
    # p99 TTFT goes 400 -> 900 between concurrency 8 and 16: 450 is crossed 0.1 of the way.
    assert cap.concurrency == pytest.approx(8.8)
    assert cap.rps == pytest.approx(17.6)
    assert cap.ttft_p99_ms == pytest.approx(450)
    assert cap.output_tokens_per_s == pytest.approx(880)
    assert cap.pass_rps <= cap.rps <= cap.fail_rps
    assert "misses at concurrency 16 (p99 TTFT 900 ms > 450 ms)" in cap.reason


def test_the_first_slo_to_cross_sets_the_capacity():
    # TTFT crosses 0.5 of the way from 8 to 16, TPOT 0.25 of the way: TPOT binds.
    cap = capacity(curve([100, 150, 250, 400, 500], tpot=[10, 10, 20, 30, 70]), SLO)
    assert set(cap.limiting) == {"ttft_p99_ms", "tpot_p99_ms"}
    assert cap.concurrency == pytest.approx(10.0)


def test_errors_break_the_slo_at_the_last_clean_level():
    cap = capacity(curve([100, 150, 250, 300, 350], err=[0, 0, 0, 0, 0.02]), SLO)
    assert cap.limiting == ("error_rate",) and cap.concurrency == pytest.approx(8)
    tolerant = capacity(curve([100, 150, 250, 300, 350], err=[0, 0, 0, 0, 0.02]),
                        Slo(450, 40, max_error_rate=0.01))
    assert tolerant.concurrency == pytest.approx(12)


def test_every_level_passing_is_a_lower_bound():
    cap = capacity(curve([100, 120, 140, 160, 200]), SLO)
    assert cap.status == "lower_bound" and cap.lower_bound
    assert cap.rps == 32 and cap.concurrency == 16 and cap.fail_level is None
    assert ">= 32 req/s" in cap.reason


def test_no_level_passing_is_no_capacity_and_names_the_slo():
    cap = capacity(curve([100, 150], tpot=[55, 80]), SLO)
    assert cap.status == "none" and np.isnan(cap.rps) and np.isnan(cap.concurrency)
    assert cap.limiting == ("tpot_p99_ms",)
    assert "lowest measured level, concurrency 1" in cap.reason
    assert "p99 TPOT 55 ms > 40 ms" in cap.reason
    assert np.isnan(cap.cost_per_mtok_on_demand)


def test_non_monotone_curve_uses_the_first_failure_above_the_contiguous_passes():
    cap = capacity(curve([100, 500, 300, 400, 900]), SLO)
    assert cap.non_monotone and (cap.pass_level, cap.fail_level) == (1, 2)
    assert "not monotone" in cap.reason


def test_rate_levels_give_concurrency_by_littles_law():
    cap = capacity(curve([100, 200, 1200], load="rate", levels=(1, 2, 4)), SLO)
    assert cap.load == "rate"
    # crossing 0.25 of the way from rate 2 (4 req/s achieved) to rate 4 (8 req/s): 5 req/s.
    assert cap.rps == pytest.approx(5.0)
    assert cap.concurrency == pytest.approx(5.0 * 0.5)  # λ × mean E2E (0.5 s)


def test_operating_point_cost_uses_price_per_gpu_times_gpus():
    cap = capacity(curve([100, 150, 250, 400, 900]), SLO, gpu_count=2,
                   on_demand_usd_per_gpu_hour=2.69, spot_usd_per_gpu_hour=1.65)
    tps = cap.output_tokens_per_s
    assert cap.output_tokens_per_s_per_gpu == pytest.approx(tps / 2)
    assert cap.cost_per_mtok_on_demand == pytest.approx(2.69 * 2 / (tps * 3600) * 1e6)
    assert cap.cost_per_mtok_spot == pytest.approx(1.65 * 2 / (tps * 3600) * 1e6)


def test_skipped_levels_are_dropped_and_unsorted_rows_are_sorted():
    frame = curve([100, 150, 250, 400, 900], status=["ok"] * 5)
    frame.loc[4, "status"] = "skipped"
    cap = capacity(frame.iloc[::-1], SLO)
    assert cap.status == "lower_bound" and cap.levels == 4


def test_mixed_load_kinds_are_refused():
    both = pd.concat([curve([100, 200]), curve([100, 200], load="rate")])
    with pytest.raises(ValueError, match="mixed load kinds"):
        capacity(both, SLO)


def test_capacities_per_group_and_profile_match_single_calls():
    a = curve([100, 150, 250, 400, 900], deployment="a", lengths="chat", gpu_count=2,
              usd_per_hour_on_demand=5.38, usd_per_hour_spot=3.3)
    b = curve([100, 120, 140, 160, 200], deployment="b", lengths="chat", gpu_count=1,
              usd_per_hour_on_demand=2.69, usd_per_hour_spot=1.65)
    profiles = [Profile("interactive", 450, 40, weights={"ttft_p99_ms": 1.0}),
                Profile("batch", 60000, 1000, weights={"ttft_p99_ms": 1.0})]
    out = capacities(pd.concat([a, b]), profiles)
    assert len(out) == 4 and set(out["profile"]) == {"interactive", "batch"}
    row = out[(out["deployment"] == "a") & (out["profile"] == "interactive")].iloc[0]
    single = capacity(a, profiles[0], gpu_count=2, on_demand_usd_per_gpu_hour=2.69,
                      spot_usd_per_gpu_hour=1.65)
    assert row["rps"] == pytest.approx(single.rps)
    assert row["cost_per_mtok_on_demand"] == pytest.approx(single.cost_per_mtok_on_demand)
    assert (out[out["profile"] == "batch"]["status"] == "lower_bound").all()


def test_crossing_is_vectorised_over_draws():
    rng = np.random.default_rng(0)
    base = curve([100, 150, 250, 400, 900], tpot=[10, 20, 30, 35, 45])
    values = base[["ttft_p99_ms", "tpot_p99_ms", "error_rate"]].to_numpy(float)
    draws = values[None] * rng.uniform(0.7, 1.3, (50, 5, 1))
    c = crossing(draws, SLO)
    rps = at_crossing(c, base["requests_per_s"].to_numpy(float))
    for i in range(50):
        one = capacity(base.assign(ttft_p99_ms=draws[i, :, 0], tpot_p99_ms=draws[i, :, 1]), SLO)
        assert np.isclose(rps[i], one.rps, equal_nan=True)
