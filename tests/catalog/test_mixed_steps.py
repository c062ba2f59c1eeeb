"""A closed loop served in mixed steps (catalog/mixed_steps.py): what the engine's scheduler
does to TPOT and TTFT once its steps are full, and a fit that recovers such physics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from catalog.calibration import error_table
from catalog.estimates import METRICS
from catalog.physical import fit_physics, level_rows, physical_calibrate, physical_leave_one_out
from catalog.roofline import Assumptions, at_clients, physics
from servecat.hardware import load_hardware
from servecat.profiles import load_profiles
from tests.catalog.test_estimates import configs
from tests.catalog.test_physical import TRUE, measured_levels

HW = load_hardware()
PROFILES = load_profiles()
MIXED = replace(TRUE, closed_loop="mixed")
QUEUE = replace(TRUE, closed_loop="queue")


def _summarize(clients, a: Assumptions = MIXED) -> tuple:
    """One tiny deployment (budget 256, 16 slots) under a prefill-heavy profile (384 prompt
    tokens, 8 output tokens, as the validation fixture's summarize) at CLIENTS."""
    cfg = configs().iloc[[0]].assign(input_tokens=384, output_tokens=8, max_num_seqs=16)
    rows = cfg.loc[cfg.index.repeat(len(clients))].reset_index(drop=True)
    ph = physics(rows, HW, a)
    return ph, at_clients(ph, np.asarray(clients, float))


def test_every_level_keeps_the_closed_loops_law():
    clients = np.array([1, 2, 4, 8, 16, 32, 64], float)
    ph, lv = _summarize(clients)
    # c = X x (TTFT + (O - 1) x TPOT): each client is always waiting or decoding.
    cycle = lv.ttft_p50_s + (ph.out - 1.0) * lv.tpot_p50_s
    assert np.allclose(lv.rate * cycle, clients, rtol=1e-3)
    assert (np.diff(lv.rate) >= -1e-4 * lv.rate[1:]).all() and (np.diff(lv.ttft_p50_s) > 0).all()


def test_past_full_steps_tpot_stays_flat_and_the_wait_moves_to_the_first_token():
    ph, lv = _summarize([32, 64])
    # Every step full: the budget's 256 tokens a step, decodes first.
    n = np.minimum(lv.rate * ph.out * lv.tpot_p50_s, ph.slots)
    full = ph.step_time(n, ph.budget - n)
    assert np.allclose(lv.tpot_p50_s, full, rtol=1e-3)
    assert np.allclose(lv.rate * (ph.inp + ph.out) * lv.tpot_p50_s, ph.budget, rtol=1e-3)
    assert lv.tpot_p50_s[1] == pytest.approx(lv.tpot_p50_s[0], rel=1e-3)
    # The 32 extra clients wait 32 / X longer for their first token.
    assert lv.ttft_p50_s[1] - lv.ttft_p50_s[0] == pytest.approx(32 / lv.rate[1], rel=1e-2)
    # The queue model instead stretches every decode by the prefills' share of time.
    _, queue = _summarize([32, 64], QUEUE)
    assert (queue.tpot_p50_s > 1.5 * lv.tpot_p50_s).all()


def test_the_fit_recovers_mixed_physics_from_its_levels():
    cfg = configs()
    levels = measured_levels(cfg[cfg["quantization"] == "fp32"], MIXED)
    a = fit_physics(levels, HW, Assumptions(closed_loop="mixed"))
    assert a.closed_loop == "mixed"
    got = at_clients(physics(levels, HW, a), levels["concurrency"].to_numpy(float))
    assert np.allclose(got.tpot_p50_s * 1e3, levels["tpot_p50_ms"], rtol=0.05)
    assert np.allclose(got.rate, levels["requests_per_s"], rtol=0.05)


def test_an_unknown_closed_loop_is_named():
    ph = physics(configs().iloc[[0]], HW, replace(TRUE, closed_loop="fluid"))
    with pytest.raises(ValueError, match="closed loop 'fluid': choose queue or mixed"):
        at_clients(ph, np.array([1.0]))


def test_leave_one_out_fits_the_closed_loop_it_is_given():
    # Levels made by mixed steps: each deployment held out is estimated from the others' mixed
    # physics (the queue model, fitted on them, misses them more).
    cfg = configs(6).assign(load="concurrency", search_min=1, search_max=32,
                            search_precision=0.25)
    mixed = Assumptions(closed_loop="mixed")
    lv = level_rows(measured_levels(cfg, MIXED))
    none = pd.DataFrame(columns=["deployment", "lengths", "profile", *METRICS])
    truth = physical_calibrate(cfg, lv, none, HW, PROFILES, METRICS, mixed)
    points = truth[["deployment", "lengths", "profile"]].assign(
        **{m: truth[f"{m}_est"] for m in METRICS})
    errors = {}
    for name, base in (("mixed", mixed), ("queue", Assumptions(closed_loop="queue"))):
        held = physical_leave_one_out(cfg, lv, points, HW, PROFILES, METRICS, base)
        table = error_table(held).query("profile == 'all'").set_index("metric")
        errors[name] = table.loc["tpot_p50_ms", "mape_calibrated"]
    assert errors["mixed"] < 0.1 and errors["mixed"] < errors["queue"] / 5  # 3.9%, 217%
