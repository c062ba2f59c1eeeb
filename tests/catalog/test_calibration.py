"""Calibration of the roofline by measurements: the fit, its intervals, leave-one-out error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalog.calibration import (
    KEY,
    calibrate,
    error_table,
    features,
    fit,
    leave_one_deployment_out,
    t_quantile,
)


def synthetic(n_dep: int = 30, seed: int = 0, noise: float = 0.1):
    """A roofline table and 'measurements' that are 3x its capacity times the quantization's
    own factor, with lognormal noise: what a calibration must learn."""
    rng = np.random.default_rng(seed)
    quant = rng.choice(["fp32", "bf16", "int8"], n_dep)
    est = pd.DataFrame({
        "deployment": [f"d{i}" for i in range(n_dep)], "lengths": "chat", "profile": "p",
        "quantization": quant, "parameters": rng.choice([5e6, 5e7, 1.5e8], n_dep),
        "max_num_seqs": rng.choice([4, 16], n_dep),
        "max_num_batched_tokens": rng.choice([256, 512], n_dep),
        "input_tokens": 144, "capacity_rps": rng.uniform(0.5, 20, n_dep),
        "idle_tpot_ms": rng.uniform(1, 30, n_dep), "prefill_ms": rng.uniform(10, 600, n_dep)})
    factor = pd.Series(quant).map({"fp32": 1.0, "bf16": 0.5, "int8": 1.5}).to_numpy()
    measured = est[list(KEY)].assign(capacity_rps=3.0 * factor * est["capacity_rps"]
                                     * np.exp(rng.normal(0, noise, n_dep)))
    return est, measured


def test_t_quantile_matches_tables():
    assert t_quantile(np.inf) == pytest.approx(1.96, abs=1e-3)
    assert t_quantile(10) == pytest.approx(2.228, abs=0.01)
    assert t_quantile(30) == pytest.approx(2.042, abs=0.005)


def test_ridge_fit_learns_the_factors_and_its_intervals_cover():
    est, measured = synthetic(60, seed=1, noise=0.1)
    cal = calibrate(est, measured, ["capacity_rps"])
    truth = measured["capacity_rps"].to_numpy()
    assert (cal["capacity_rps_fit"] == "ridge").all()
    ape = np.abs(cal["capacity_rps_est"] - truth) / truth
    assert ape.mean() < 0.12  # the roofline alone is off by 50-350%
    # Fresh draws of the same process: the 95% intervals hold about 95% of them.
    fresh = measured["capacity_rps"] * np.exp(np.random.default_rng(2).normal(0, 0.1, 60))
    covered = (cal["capacity_rps_lo"] <= fresh) & (fresh <= cal["capacity_rps_hi"])
    assert 0.85 <= covered.mean() <= 1.0


def test_few_measurements_fall_back_to_a_factor_then_to_the_roofline():
    est, measured = synthetic(10)
    x = features(est, "capacity_rps")
    y = measured["capacity_rps"].to_numpy()
    assert fit(x[:1], y[:1]).mode == "prior"
    ratio = fit(x[:5], y[:5])
    assert ratio.mode == "ratio"
    point, lo, hi = ratio.predict(x)
    assert (lo < point).all() and (point < hi).all()
    prior_point, prior_lo, prior_hi = fit(x[:0], y[:0]).predict(x)
    np.testing.assert_allclose(prior_point, est["capacity_rps"])  # the roofline itself
    assert (prior_hi / prior_lo > 50).all()  # and says how little it knows


def test_leave_one_out_never_sees_the_held_out_deployment():
    est, measured = synthetic(40, seed=3, noise=0.05)
    # One deployment measured 20x off the pattern: in-sample it would pull its own fit.
    odd = measured["deployment"] == "d0"
    measured.loc[odd, "capacity_rps"] *= 20
    held = leave_one_deployment_out(est, measured, ["capacity_rps"])
    assert set(held["deployment"]) == set(est["deployment"])
    d0 = held[held["deployment"] == "d0"].iloc[0]
    assert d0["estimate"] < d0["measured"] / 5  # predicted from the others' pattern
    clean_est, clean = synthetic(40, seed=3, noise=0.05)
    table = error_table(leave_one_deployment_out(clean_est, clean, ["capacity_rps"]))
    table = table.set_index("profile")
    assert table.loc["all", "mape_calibrated"] < 0.1 < table.loc["all", "mape_roofline"]
    assert 0.85 <= table.loc["all", "coverage_rows"] <= 1.0


def test_unmeasured_and_unbracketed_rows_are_not_fitted():
    est, measured = synthetic(30)
    measured.loc[:4, "capacity_rps"] = np.nan  # lower bounds / none: no value
    cal = calibrate(est, measured, ["capacity_rps"])
    assert cal["capacity_rps_est"].notna().all()  # estimated all the same
    with_nan = calibrate(est, measured.iloc[5:], ["capacity_rps"])
    np.testing.assert_allclose(cal["capacity_rps_est"], with_nan["capacity_rps_est"])


def test_factor_model_learns_one_factor_per_quantization():
    est, measured = synthetic(60, seed=4, noise=0.05)
    est["hardware"], est["engine"] = "cpu", "builtin"
    cal = calibrate(est, measured, ["capacity_rps"], model="factor")
    ratio = cal["capacity_rps_est"] / est["capacity_rps"]
    expected = est["quantization"].map({"fp32": 3.0, "bf16": 1.5, "int8": 4.5})
    np.testing.assert_allclose(ratio, expected, rtol=0.05)
    assert (cal["capacity_rps_fit"] == "factor").all()
    with pytest.raises(ValueError, match="calibration model 'magic'"):
        calibrate(est, measured, ["capacity_rps"], model="magic")


@pytest.mark.parametrize("model", ["ridge", "factor"])
def test_a_roofline_of_zero_teaches_the_fit_nothing(model):
    # The bare roofline gives a capacity of 0 where it misses the SLO at one client; a
    # measurement over it is no ratio and no slope (on the validation fixture such rows once
    # made the ridge put cost-saver rows measured at 1-11 req/s at 860-5,500).
    est, measured = synthetic(60, seed=3, noise=0.05)
    est["hardware"], est["engine"] = "cpu", "builtin"
    clean = calibrate(est, measured, ["capacity_rps"], model=model)
    zeroed = est.copy()
    zeroed.loc[:9, "capacity_rps"] = 0.0
    cal = calibrate(zeroed, measured, ["capacity_rps"], model=model)
    rest = slice(10, None)
    np.testing.assert_allclose(cal["capacity_rps_est"].iloc[rest],
                               clean["capacity_rps_est"].iloc[rest], rtol=0.25)
    assert (cal["capacity_rps_est"].iloc[rest] / measured["capacity_rps"].iloc[rest]
            ).between(0.8, 1.25).all()


def test_a_ridge_predicts_beyond_its_rows_at_their_edge():
    est, measured = synthetic(60, seed=5, noise=0.05)
    x = features(est, "capacity_rps")
    m = fit(x, measured["capacity_rps"].to_numpy())
    assert m.mode == "ridge"
    far = x[:1].copy()
    far[0, 1:] = x[:, 1:].max(axis=0) + 50.0  # every feature e^50 past the largest fitted
    edge = np.clip(far, x.min(axis=0), x.max(axis=0))
    np.testing.assert_allclose(m.predict(far)[0], m.predict(edge)[0])
    assert np.isfinite(m.predict(far)[0]).all()
