"""The roofline's physics fitted on measured load levels (catalog/physical.py), and the closed-
loop search the estimate reproduces (catalog.roofline.searched_clients)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bench.capacity_search import Search
from bench.search import double_then_bisect
from catalog import physical
from catalog.estimates import METRICS, estimates_table, workload_rows
from catalog.physical import PARAMS, fit_physics, fitted_assumptions, level_rows, physical_calibrate
from catalog.roofline import Assumptions, at_clients, physics, read_rows, searched_clients
from catalog.validation import load_fixture
from servecat.hardware import load_hardware
from servecat.profiles import load_profiles
from tests.catalog.test_estimates import configs

HW = load_hardware()
PROFILES = load_profiles()
# A host whose framework costs more than its bytes: what a small model on a CPU looks like.
TRUE = Assumptions(bandwidth_efficiency=0.3, compute_efficiency=0.15, step_overhead_ms=2.0,
                   sequence_overhead_ms=0.3, request_overhead_ms=4.0)
CONCURRENCIES = (1, 2, 4, 8, 16, 32)


def measured_levels(cfg: pd.DataFrame, truth: Assumptions = TRUE, noise: float = 0.0,
                    seed: int = 0) -> pd.DataFrame:
    """Closed-loop summary rows of CFG at CONCURRENCIES as TRUTH's physics has them, each
    figure times a log-normal NOISE."""
    rows = cfg.loc[cfg.index.repeat(len(CONCURRENCIES))].reset_index(drop=True)
    rows["concurrency"] = np.tile(CONCURRENCIES, len(cfg))
    rows["load"], rows["status"], rows["valid"] = "concurrency", "ok", True
    lv = at_clients(physics(rows, HW, truth), rows["concurrency"].to_numpy(float))
    rng = np.random.default_rng(seed)
    for name, v in (("tpot_p50_ms", lv.tpot_p50_s * 1e3), ("ttft_p50_ms", lv.ttft_p50_s * 1e3),
                    ("requests_per_s", lv.rate)):
        rows[name] = v * np.exp(rng.normal(0.0, noise, len(rows)))
    return rows


@pytest.mark.parametrize("precision", [0.25, 0.1, 0.5])
def test_the_estimated_search_stops_where_the_real_search_does(precision):
    search = Search("concurrency", 1, 64, ("p",), precision)
    thresholds = np.arange(0, 80, dtype=float)  # every row passes up to its own threshold

    def ok(c: np.ndarray) -> np.ndarray:
        return c <= thresholds

    got = searched_clients(ok, np.ones(len(thresholds)), np.full(len(thresholds), 64.0),
                           np.full(len(thresholds), precision))
    for t, g in zip(thresholds, got, strict=True):
        good, _ = double_then_bisect(lambda x, t=t: x <= t, 1, 64, snap=search.snap,
                                     tight=search.tight, reach_maximum=True)
        assert (good is None and np.isnan(g)) or good == g, (t, good, g)


def test_the_fit_recovers_the_physics_that_made_the_levels():
    cfg = configs()
    a = fit_physics(measured_levels(cfg[cfg["quantization"] == "fp32"]), HW)
    # What is identified is the figures: the fitted physics reproduces every level.
    probe = measured_levels(cfg)
    got = at_clients(physics(probe, HW, a), probe["concurrency"].to_numpy(float))
    assert np.allclose(got.tpot_p50_s * 1e3, probe["tpot_p50_ms"], rtol=0.05)
    assert np.allclose(got.rate, probe["requests_per_s"], rtol=0.05)
    assert math.isclose(a.step_overhead_ms, TRUE.step_overhead_ms, rel_tol=0.2)


def test_each_quantization_gets_its_own_physics_and_a_group_without_levels_the_pooled_one():
    cfg = configs()
    slow = replace(TRUE, step_overhead_ms=6.0)
    lv = pd.concat([measured_levels(cfg[cfg["quantization"] == "fp32"]),
                    measured_levels(cfg[cfg["quantization"] == "int8"], slow)])
    a, how = fitted_assumptions(cfg, level_rows(lv), HW)
    q = cfg["quantization"].to_numpy()
    assert set(how[q == "fp32"]) == {"physical"} and set(how[q == "bf16"]) == {
        "physical (pooled)"}
    assert np.allclose(a.step_overhead_ms[q == "fp32"], 2.0, rtol=0.2)
    assert np.allclose(a.step_overhead_ms[q == "int8"], 6.0, rtol=0.2)
    nothing, how = fitted_assumptions(cfg, level_rows(None), HW)
    assert set(how) == {"prior"} and all(np.all(getattr(nothing, p) == getattr(
        Assumptions(), p)) for p in PARAMS)


def test_a_group_without_levels_takes_its_models_overheads_and_its_dtypes_efficiencies():
    # Two models whose framework costs differ threefold; bf16 reaches more bandwidth than fp32.
    cfg = configs().assign(model=lambda c: np.where(c["parameters"] > 1e7, "big", "little"))
    cfg = cfg[cfg["quantization"] != "int8"].reset_index(drop=True)
    truth = {("little", "fp32"): TRUE, ("little", "bf16"): replace(TRUE, bandwidth_efficiency=0.6),
             ("big", "fp32"): replace(TRUE, step_overhead_ms=6.0)}
    lv = pd.concat([measured_levels(cfg[(cfg["model"] == m) & (cfg["quantization"] == q)], t)
                    for (m, q), t in truth.items()])
    a, how = fitted_assumptions(cfg, level_rows(lv), HW)
    mine = ((cfg["model"] == "big") & (cfg["quantization"] == "bf16")).to_numpy()
    assert set(how[mine]) == {"physical (pooled)"} and set(how[~mine]) == {"physical"}
    # The big model's overheads (its fp32 levels), not the little one's at bf16...
    big = fit_physics(level_rows(lv[lv["model"] == "big"]), HW)
    assert np.allclose(a.step_overhead_ms[mine], big.step_overhead_ms)
    assert np.allclose(a.step_overhead_ms[mine], 6.0, rtol=0.2)
    # ...and bf16's efficiencies, fitted on the other model.
    bf16 = fit_physics(level_rows(lv[lv["quantization"] == "bf16"]), HW)
    assert np.allclose(a.bandwidth_efficiency[mine], bf16.bandwidth_efficiency)
    assert np.allclose(a.compute_efficiency[mine], bf16.compute_efficiency)


def test_estimates_fitted_on_levels_predict_an_unmeasured_deployment_inside_their_interval():
    cfg = configs()
    lv = measured_levels(cfg, noise=0.05)
    held_out = "d4"
    truth = physical_calibrate(cfg, measured_levels(cfg), pd.DataFrame(
        columns=["deployment", "lengths", "profile", *METRICS]), HW, PROFILES, METRICS)
    points = truth[["deployment", "lengths", "profile"]].assign(
        capacity_status="bracketed", **{m: truth[f"{m}_est"] for m in METRICS})
    train = lv[lv["deployment"] != held_out]
    table = estimates_table(cfg, points[points["deployment"] != held_out], HW, PROFILES,
                            summary=train)
    mine = table[table["deployment"] == held_out].set_index("profile")
    want = truth[truth["deployment"] == held_out].set_index("profile")
    assert set(mine["fit"]) == {"physical"} and not mine["measured"].any()
    for m in ("capacity_rps", "tpot_p50_ms"):
        assert np.allclose(mine[m], want[f"{m}_est"], rtol=0.15), m
        assert ((mine[f"{m}_lo"] <= want[f"{m}_est"]) & (want[f"{m}_est"] <= mine[f"{m}_hi"])
                ).all(), m
    # Without levels the estimate is the ridge's, as before.
    assert set(estimates_table(cfg, None, HW, PROFILES)["fit"]) == {"prior"}


def _cost(levels: pd.DataFrame, a: Assumptions) -> float:
    """The fit's objective (soft L1 of the log misses, the prior's pull) at A's physics."""
    clients = levels["concurrency"].to_numpy(float)
    measured = np.log(np.concatenate([levels[m].to_numpy(float)
                                      for m in physical.LEVEL_METRICS]))
    theta = np.log([getattr(a, p) for p in PARAMS])
    r = physical._residuals(theta, read_rows(levels, HW), clients, measured, HW, Assumptions())
    z = (r / 0.2) ** 2
    return float(0.5 * 0.2**2 * np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)))


def test_the_fit_keeps_the_best_of_its_starts_in_any_order(monkeypatch):
    # Measured levels whose fit lands apart from different starts: medium bf16 on the
    # validation fixture (from the three starts alone, costs 15.4, 1.53 and 21.2; the previous
    # fixture's scores moved from 19.6% to 24.2% with the start).
    s = level_rows(load_fixture())
    lv = s[(s["model"] == "medium") & (s["quantization"] == "bf16")].reset_index(drop=True)
    best = physical._fit_physics(lv, HW, Assumptions())
    starts, alone = physical.STARTS.copy(), []
    for start in starts:
        monkeypatch.setattr(physical, "STARTS", start[None])
        alone.append(_cost(lv, physical._fit_physics(lv, HW, Assumptions())))
    assert max(alone) > min(alone) * 1.05  # the premise: the starts disagree here
    assert _cost(lv, best) <= min(alone) * (1 + 1e-9)
    monkeypatch.setattr(physical, "STARTS", np.ascontiguousarray(starts[::-1]))
    again = physical._fit_physics(lv, HW, Assumptions())
    for p in PARAMS:
        assert math.isclose(getattr(again, p), getattr(best, p), rel_tol=1e-6), p


def test_a_refit_on_the_same_levels_is_remembered_and_other_figures_are_refitted():
    lv = measured_levels(configs().query("quantization == 'fp32'"), noise=0.05, seed=1)
    a = fit_physics(lv, HW)
    assert fit_physics(lv.copy(), HW) is a  # a leave-one-out refits the unchanged groups free
    slower = lv.assign(tpot_p50_ms=lv["tpot_p50_ms"] * 2.0)
    b = fit_physics(slower, HW)
    clients = lv["concurrency"].to_numpy(float)
    tpot_a = at_clients(physics(lv, HW, a), clients).tpot_p50_s
    tpot_b = at_clients(physics(lv, HW, b), clients).tpot_p50_s
    assert b is not a and np.median(tpot_b / tpot_a) > 1.1  # TTFT and rate held it back


def test_an_estimate_on_borrowed_physics_gets_the_interval_borrowing_earns():
    # Medium fp32 held out of the validation fixture, as its leave-one-out does: its own group
    # has no levels, so it borrows medium's overheads (bf16, int8) and fp32's efficiencies.
    from catalog import validation

    m = validation.measured(load_fixture(), "configs/hardware.yaml", PROFILES)
    held = "medium-cpux1-builtin-fp32-9914d5f4"
    rows = workload_rows(m.summary)
    others = m.summary[m.summary["deployment"] != held]
    cal = physical_calibrate(rows, level_rows(others), m.points[m.points["deployment"] != held],
                             HW, PROFILES, METRICS)
    width = np.log(cal["capacity_rps_hi"] / cal["capacity_rps_lo"])
    mine = (cal["deployment"] == held).to_numpy() & (cal["capacity_rps_est"] > 0).to_numpy()
    assert set(cal.loc[mine, "capacity_rps_fit"]) == {"physical (pooled)"}
    own = (cal["capacity_rps_fit"] == "physical").to_numpy() & (cal["capacity_rps_est"] > 0
                                                                 ).to_numpy()
    # Its interval is what the fitted groups miss under the physics they would borrow, not
    # what they miss under their own (the same width for both, before 2026-12-05)...
    assert width[mine].min() > 2.5 * np.median(width[own])
    # ...and it now holds the measured capacities it missed (3.4 and 1.5 req/s against
    # estimates of 1.9 and 0.8).
    got = cal[mine].merge(m.points, on=["deployment", "lengths", "profile"], suffixes=("", "_m"))
    got = got[got["capacity_rps_m"].notna()]
    assert len(got) == 2
    assert ((got["capacity_rps_lo"] <= got["capacity_rps_m"])
            & (got["capacity_rps_m"] <= got["capacity_rps_hi"])).all()
    # Where its physics meets no SLO at one client (capacity 0: cost-saver, measured at 2.5
    # and 1.3 req/s), the interval is no longer [0, 0]: its top is the capacity under SLOs
    # loosened by the p99 latencies' own intervals.
    zero = cal[(cal["deployment"] == held) & (cal["capacity_rps_est"] == 0)
               & (cal["profile"] == "cost-saver")]
    assert len(zero) == 2
    assert (zero["capacity_rps_lo"] == 0).all() and (zero["capacity_rps_hi"] > 0.5).all()
    assert (zero["output_tokens_per_s_hi"] > 0).all()
