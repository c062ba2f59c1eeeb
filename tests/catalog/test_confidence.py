"""Confidence: p99 intervals cover the truth, capacity intervals, and rank probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalog.capacity import capacity
from catalog.confidence import (
    capacity_interval,
    percentile_interval,
    percentile_intervals,
    rank_probabilities,
    resample_percentiles,
    row_percentiles,
)
from servecat.slo import Slo

EXP_P99 = np.log(100.0)                 # exponential(1)
LOGNORMAL_P99 = np.exp(2.3263478740408408)  # lognormal(0, 1): exp(z_0.99)


def coverage(sample, truth: float, n: int, method: str, repeats: int = 200) -> float:
    hits = 0
    for rep in range(repeats):
        values = sample(np.random.default_rng(10_000 + rep), n)
        iv = percentile_interval(values, 99, level=0.95, draws=500, seed=rep, method=method)
        hits += iv.lo <= truth <= iv.hi
    return hits / repeats


@pytest.mark.parametrize(("name", "sample", "truth", "n"), [
    ("exponential", lambda rng, n: rng.exponential(1.0, n), EXP_P99, 300),
    ("lognormal", lambda rng, n: rng.lognormal(0.0, 1.0, n), LOGNORMAL_P99, 1000),
])
def test_bootstrap_p99_interval_covers_the_true_p99(name, sample, truth, n):
    assert 0.90 <= coverage(sample, truth, n, "bootstrap") <= 0.99


@pytest.mark.parametrize("n", [500, 1000])
def test_order_statistic_p99_interval_covers_the_true_p99(n):
    assert 0.90 <= coverage(lambda rng, k: rng.lognormal(0.0, 1.0, k), LOGNORMAL_P99, n, "order") <= 0.99


def test_order_statistic_interval_is_unbounded_above_when_n_is_too_small_for_p99():
    iv = percentile_interval(np.random.default_rng(0).exponential(1.0, 300), 99, method="order")
    assert np.isinf(iv.hi) and "cannot bound it above" in iv.note


def test_few_requests_report_the_max_marked_and_unbounded():
    values = np.random.default_rng(1).exponential(1.0, 12)
    iv = percentile_interval(values, 99)
    assert iv.at_max and iv.estimate == values.max() and np.isinf(iv.hi) and iv.n == 12
    assert "max" in iv.note
    assert not percentile_interval(values, 50).at_max


def test_row_percentiles_match_numpy_and_ignore_nan():
    rng = np.random.default_rng(2)
    rows = rng.exponential(1.0, (5, 40))
    rows[rows > 2.5] = np.nan
    got = row_percentiles(np.sort(rows, axis=1), [50, 90, 99])
    np.testing.assert_allclose(got, np.nanpercentile(rows, [50, 90, 99], axis=1).T)


def test_percentile_intervals_per_level_count_successful_requests():
    rng = np.random.default_rng(3)
    n = [40, 400]
    requests = pd.DataFrame({
        "config_id": np.repeat(["small", "big"], n), "ok": True,
        "ttft_ms": rng.lognormal(5, 0.5, sum(n)), "tpot_ms": rng.lognormal(3, 0.3, sum(n))})
    requests.loc[:4, "ok"] = False
    out = percentile_intervals(requests, q=(50, 99), draws=300)
    assert len(out) == 2 * 2 * 2
    p99 = out[(out["metric"] == "ttft_ms") & (out["q"] == 99)].set_index("config_id")
    assert p99.loc["small", "n"] == 35 and p99.loc["big", "n"] == 400
    assert (p99["lo"] <= p99["estimate"]).all()
    width = p99["hi"] - p99["lo"]
    assert width["small"] > width["big"]


def level_table(scales: list[float], per_level: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concurrency levels 1, 2, 4, ... whose TTFTs are lognormal with the given scale."""
    rng = np.random.default_rng(seed)
    reqs, levels = [], []
    for i, scale in enumerate(scales):
        c = 2 ** i
        ttft = scale * rng.lognormal(0, 0.3, per_level)
        tpot = np.full(per_level, 20.0)
        reqs.append(pd.DataFrame({"config_id": f"c{c}", "ok": True, "ttft_ms": ttft, "tpot_ms": tpot}))
        levels.append({"config_id": f"c{c}", "load": "concurrency", "concurrency": c,
                       "requests_per_s": 2.0 * c, "ttft_p99_ms": np.percentile(ttft, 99),
                       "tpot_p99_ms": 20.0, "error_rate": 0.0, "num_requests": per_level,
                       "output_tokens_per_s": 100.0 * c})
    return pd.DataFrame(levels), pd.concat(reqs, ignore_index=True)


def test_capacity_interval_brackets_the_estimate_and_narrows_with_more_requests():
    slo = Slo(450, 40)
    levels, requests = level_table([100, 150, 200, 300, 600], per_level=200)
    small = capacity_interval(levels, requests, slo, draws=400, seed=5)
    assert small.rps == pytest.approx(capacity(levels, slo).rps)
    assert small.rps_lo <= small.rps <= small.rps_hi
    assert small.concurrency_lo <= small.concurrency_hi
    levels, requests = level_table([100, 150, 200, 300, 600], per_level=2000)
    big = capacity_interval(levels, requests, slo, draws=400, seed=5)
    assert big.rps_hi - big.rps_lo < small.rps_hi - small.rps_lo
    assert capacity_interval(levels, requests, slo, draws=400, seed=5) == big  # seeded


def test_capacity_interval_notes_lower_bounds_and_collapses_on_constant_latencies():
    levels, requests = level_table([100, 110, 120], per_level=200)
    iv = capacity_interval(levels, requests, Slo(450, 40), draws=200)
    assert iv.share_lower_bound == 1.0 and "lower bound" in iv.note
    assert iv.rps_lo == iv.rps_hi == iv.rps == 8.0


def bootstrap_p99(values: np.ndarray, draws: int, seed: int) -> np.ndarray:
    return resample_percentiles(values, [99], draws, seed)[:, 0]


def test_identical_deployments_share_first_place():
    values = np.random.default_rng(6).lognormal(5, 0.5, 500)
    draws = np.stack([bootstrap_p99(values, 1000, 1), bootstrap_p99(values, 1000, 2)], axis=1)
    out = rank_probabilities(draws, lambda p99: -p99, names=["a", "b"])
    assert out["p_first"].between(0.4, 0.6).all()
    assert out["p_first"].sum() == pytest.approx(1.0)
    same = rank_probabilities(np.ones((1000, 2)), lambda x: x, names=["a", "b"])
    assert same["p_first"].between(0.45, 0.55).all()  # exact ties break at random


def test_a_clearly_better_deployment_is_first_with_high_probability():
    rng = np.random.default_rng(7)
    base = rng.lognormal(5, 0.5, 500)
    slower = [base * f for f in (1.5, 1.6, 1.7, 3.0)]
    draws = np.stack([bootstrap_p99(v, 1000, s) for s, v in enumerate([base, *slower])], axis=1)
    # Two criteria per deployment (p99, tokens/s); the score weighs both.
    criteria = np.stack([draws, np.full_like(draws, 100.0)], axis=-1)
    out = rank_probabilities(criteria, lambda x: x[:, 1] / x[:, 0], names=list("abcde"))
    out = out.set_index("deployment")
    assert out.loc["a", "p_first"] > 0.9
    assert out.loc["a", "p_top3"] > 0.99 and out.loc["e", "p_top3"] < 0.05


def test_practically_equal_deployments_share_first_place():
    """Two runs of one server differ by host noise only: TOPSIS still orders them 1 and 0 in
    every draw, so without a tolerance one 'wins' nearly every draw on a 3% TPOT difference."""
    from catalog.confidence import TIE_TOLERANCE, probabilities_from_scores, share_first_place
    from catalog.topsis import topsis_batch

    rng = np.random.default_rng(3)
    b = 400
    capacity = rng.normal(22.0, 0.3, (b, 2))
    tpot = np.column_stack([rng.normal(10.2, 0.1, b), rng.normal(10.5, 0.1, b)])
    crit = np.stack([capacity, tpot], axis=2)  # (B, D, K)
    scores = topsis_batch(crit, [True, False], [1.0, 1.0])
    raw = probabilities_from_scores(scores, seed=1)
    assert raw["p_first"].max() > 0.8  # the noise decides
    shared = probabilities_from_scores(share_first_place(scores, crit), seed=1)
    assert shared["p_first"].between(0.4, 0.6).all() and shared["p_first"].sum() == 1.0
    # A difference past the tolerance still decides.
    better = crit.copy()
    better[:, 0, 0] *= 1 + 2 * TIE_TOLERANCE
    out = probabilities_from_scores(
        share_first_place(topsis_batch(better, [True, False], [1.0, 1.0]), better), seed=1)
    assert out["p_first"][0] > 0.95


def test_a_difference_inside_both_rows_noise_shares_first_place():
    """One queue measured twice: its p99 over 100 requests swings ~23% between bootstrap draws,
    so a 21% difference (past TIE_TOLERANCE) is noise; the same 21% with a 0.5% spread decides."""
    from catalog.confidence import probabilities_from_scores, relative_noise, share_first_place
    from catalog.topsis import topsis_batch

    rng = np.random.default_rng(5)
    b = 400

    def draws(spread: float) -> np.ndarray:
        capacity = np.full((b, 2), 11.0)
        p99 = np.column_stack([rng.normal(300.0, 300.0 * spread, b),
                               rng.normal(380.0, 380.0 * spread, b)])
        return np.stack([capacity, p99], axis=2)

    noisy, steady = draws(0.12), draws(0.005)
    assert relative_noise(noisy)[:, 1] == pytest.approx([0.23, 0.23], abs=0.03)
    for crit, shared in ((noisy, True), (steady, False)):
        scores = share_first_place(topsis_batch(crit, [True, False], [1.0, 1.0]), crit)
        p = probabilities_from_scores(scores, seed=1)["p_first"]
        assert p.between(0.35, 0.65).all() if shared else p[0] > 0.95
