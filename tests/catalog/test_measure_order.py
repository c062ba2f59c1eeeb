"""Measure-first order: P(top 3) from the estimates' intervals beside measured deployments."""

from __future__ import annotations

import numpy as np
import pandas as pd

from catalog.measure_order import candidates, p_top, priorities
from servecat.profiles import Profile

PROFILE = Profile("p", ttft_p99_ms=1000, tpot_p99_ms=100,
                  weights={"output_tokens_per_s_per_gpu": 0.5, "tpot_p99_ms": 0.5})


def est_row(name: str, tps: float, tpot: float, spread: float = 1.2) -> dict:
    """An estimate of deployment NAME: throughput and p99 TPOT within a factor SPREAD (95%)."""
    r = {"deployment": name, "model": "m", "lengths": "chat", "profile": "p", "gpu_count": 1,
         "output_tokens_per_s": tps, "capacity_rps": tps / 20, "ttft_p99_ms": 200.0,
         "tpot_p99_ms": tpot, "cost_per_mtok_on_demand": 1e6 / (tps * 3600)}
    for m in ("output_tokens_per_s", "capacity_rps", "ttft_p99_ms", "tpot_p99_ms"):
        r[f"{m}_lo"], r[f"{m}_hi"] = r[m] / spread, r[m] * spread
    return r


def measured_row(name: str, tps: float, tpot: float, rank: float | None) -> dict:
    return {"deployment": name, "model": "m", "lengths": "chat", "profile": "p",
            "output_tokens_per_s_per_gpu": tps, "ttft_p99_ms": 200.0, "tpot_p99_ms": tpot,
            "cost_per_mtok_on_demand": 1e6 / (tps * 3600), "goodput_rps": tps / 20,
            "capacity_rps": tps / 20, "rank": rank}


MEASURED = pd.DataFrame([measured_row("m1", 100, 20, 1), measured_row("m2", 90, 22, 2),
                         measured_row("m3", 80, 24, 3), measured_row("m4", 70, 26, 4)])


def test_a_clear_winner_goes_first_and_a_clear_loser_last():
    est = pd.DataFrame([est_row("win", 400, 5), est_row("close", 85, 23, spread=2.0),
                        est_row("lose", 5, 90)])
    c = candidates(est, MEASURED)
    order = priorities(c, [PROFILE], draws=400)
    assert list(order["deployment"]) == ["win", "close", "lose"]
    p = order.set_index("deployment")["p_top3"]
    assert p["win"] > 0.99 and p["lose"] < 0.01 and 0.2 < p["close"] < 0.99
    # Measured deployments are never proposed again.
    assert not set(order["deployment"]) & set(MEASURED["deployment"])


def test_a_wider_interval_is_a_better_bet_when_the_estimate_falls_short():
    sure = est_row("sure", 60, 28, spread=1.05)   # just below the measured top 3, surely
    vague = est_row("vague", 60, 28, spread=3.0)  # the same guess, known loosely
    p = priorities(candidates(pd.DataFrame([sure, vague]), MEASURED), [PROFILE], draws=400)
    p = p.set_index("deployment")["p_top3"]
    assert p["vague"] > p["sure"] + 0.1


def test_unranked_measured_rows_take_no_part_and_small_groups_are_certain():
    measured = MEASURED.assign(rank=[1, np.nan, np.nan, np.nan])
    c = candidates(pd.DataFrame([est_row("a", 10, 50)]), measured)
    assert set(c.table["deployment"]) == {"a", "m1"}
    assert (p_top(c, [PROFILE]) == 1.0).all()  # two rows: both are in a top 3


def test_a_deployment_that_may_place_in_two_groups_goes_before_one_that_may_place_in_one():
    # Two profiles of one model and length profile, each with its measured top 3. "both" is a
    # coin-toss for the top 3 in each; "one" is a slightly better bet in the first only.
    other = Profile("q", ttft_p99_ms=1000, tpot_p99_ms=100,
                    weights={"output_tokens_per_s_per_gpu": 0.5, "tpot_p99_ms": 0.5})
    measured = pd.concat([MEASURED, MEASURED.assign(profile="q")], ignore_index=True)
    est = pd.DataFrame([est_row("both", 80, 24, spread=1.5),
                        {**est_row("both", 80, 24, spread=1.5), "profile": "q"},
                        est_row("one", 82, 23.5, spread=1.5),
                        {**est_row("one", 10, 80, spread=1.5), "profile": "q"}])
    order = priorities(candidates(est, measured), [PROFILE, other], draws=2000)
    p = order.set_index("deployment")
    assert p.loc["one", "p_top3"] > p.loc["both", "p_top3"]  # the better single bet...
    assert list(order["deployment"]) == ["both", "one"]      # ...yet less likely needed
    both = p.loc["both", "p_top3"]
    assert p.loc["both", "p_any_top3"] > both and p.loc["one", "p_any_top3"] < 0.99
