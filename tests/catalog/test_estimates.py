"""The estimates table: every deployment estimated and marked, calibrated by what is measured."""

from __future__ import annotations

import numpy as np
import pandas as pd

from catalog.estimates import estimates_table, measured_points
from servecat.hardware import load_hardware
from servecat.profiles import load_profiles

HW = load_hardware()
PROFILES = load_profiles()


def configs(n: int = 12) -> pd.DataFrame:
    """N CPU deployments of two model sizes and three quantizations, one length profile."""
    rows = []
    for i in range(n):
        small = i % 2
        rows.append({"deployment": f"d{i}", "model": "m", "parameters": 5e7 if small else 5e6,
                     "layers": 6 if small else 4, "kv_heads": 4 if small else 2,
                     "head_dim": 64 if small else 32, "hardware": "cpu", "gpu_count": 1,
                     "engine": "builtin", "quantization": ["fp32", "bf16", "int8"][i % 3],
                     "max_num_seqs": [4, 16][(i // 3) % 2], "max_num_batched_tokens": 256,
                     "lengths": "chat", "input_tokens": 144, "output_tokens": 12})
    return pd.DataFrame(rows)


def test_measured_points_keep_bracketed_values_and_read_p50_at_the_operating_point():
    deployments = pd.DataFrame({
        "deployment": ["a", "a", "b"], "lengths": "chat", "profile": ["p", "q", "p"],
        "capacity_status": ["bracketed", "lower_bound", "bracketed"],
        "capacity_rps": [2.0, 5.0, 1.0], "output_tokens_per_s": [24.0, 60.0, 12.0],
        "ttft_p99_ms": [300.0, 900.0, 200.0], "tpot_p99_ms": [30.0, 90.0, 20.0],
        "load": ["concurrency", "concurrency", "rate"], "pass_level": [4.0, 8.0, 0.5]})
    levels = pd.DataFrame({
        "deployment": ["a", "a", "a", "b", "b"], "lengths": "chat",
        "load": ["concurrency", "concurrency", "concurrency", "rate", "rate"],
        "concurrency": [2, 4, 8, None, None], "rate": [None, None, None, 0.5, 1.0],
        "tpot_p50_ms": [10.0, 14.0, 30.0, 7.0, 9.0]})
    pts = measured_points(deployments, levels).set_index(["deployment", "profile"])
    assert pts.loc[("a", "p"), "capacity_rps"] == 2.0
    assert pts.loc[("a", "p"), "tpot_p50_ms"] == 14.0   # the level at concurrency 4
    assert pts.loc[("b", "p"), "tpot_p50_ms"] == 7.0    # the level at rate 0.5
    assert np.isnan(pts.loc[("a", "q"), "capacity_rps"])  # a lower bound is not a value


def test_every_deployment_is_an_estimate_with_an_interval_and_calibration_moves_it():
    cfg = configs()
    raw = estimates_table(cfg, None, HW, PROFILES)
    assert len(raw) == len(cfg) * len(PROFILES)
    assert (raw["source"] == "estimate").all() and not raw["measured"].any()
    assert (raw["fit"] == "prior").all()
    assert "roofline" in raw.attrs["assumptions"]["text"]
    # 'Measurements' a tenth of the roofline's server capacity, for all but two deployments.
    server = raw[raw["profile"] == "server"]
    truth = server.assign(capacity_rps=server["roofline_capacity_rps"] / 10,
                          capacity_status="bracketed")
    for m in ("output_tokens_per_s", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms"):
        truth[m] = server[m]
    measured = truth[~truth["deployment"].isin(["d0", "d1"])]
    cal = estimates_table(cfg, measured, HW, PROFILES)
    s = cal[cal["profile"] == "server"].set_index("deployment")
    assert s.loc["d5", "measured"] and not s.loc["d0", "measured"]
    assert (s["source"] == "estimate").all()
    # The unmeasured d0 is predicted near a tenth of its roofline, inside a narrow interval.
    ratio = s.loc["d0", "capacity_rps"] / s.loc["d0", "roofline_capacity_rps"]
    assert 0.07 < ratio < 0.14
    assert s.loc["d0", "capacity_rps_lo"] < s.loc["d0", "capacity_rps"] < s.loc["d0",
                                                                              "capacity_rps_hi"]
    assert s.loc["d0", "capacity_rps_hi"] / s.loc["d0", "capacity_rps_lo"] < 3
