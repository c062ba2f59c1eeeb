"""The estimates against the measured validation fixture (tests/fixtures/validation/)."""

from __future__ import annotations

import pandas as pd
import pytest

from catalog import validation
from servecat.hardware import load_hardware
from servecat.profiles import load_profiles

REPO_HARDWARE = validation.FIXTURE.parents[2] / "configs" / "hardware.yaml"


@pytest.fixture(scope="module")
def measured():
    summary = validation.load_fixture()
    return validation.measured(summary, REPO_HARDWARE, load_profiles())


def test_the_fixture_is_the_validation_matrix(measured):
    s = measured.summary
    deployments = s.drop_duplicates("deployment")
    assert len(deployments) >= 48
    assert {"tiny", "small"} <= set(deployments["model"])
    assert set(deployments["quantization"]) == {"fp32", "bf16", "int8"}
    assert set(deployments["max_num_seqs"]) >= {1, 2, 4, 16}
    assert set(deployments["max_num_batched_tokens"]) >= {256, 512}
    assert set(s["lengths"]) == {"chat", "summarize"}
    assert s["search"].fillna(False).astype(bool).any()  # capacity searches, not a fixed grid
    assert (s["status"] == "ok").sum() >= 400
    assert s["search_max"].max() >= 64 and (s["requests"] >= s["search_max"]).all()


def test_held_out_calibration_beats_the_roofline_and_its_intervals_cover(measured):
    held, errors = validation.held_out_errors(measured, load_hardware(), load_profiles())
    bracketed = measured.points.dropna(subset=["capacity_rps"])
    cap = held[held["metric"] == "capacity_rps"]
    # Every bracketed measurement is predicted once, from the other deployments only.
    assert len(cap) == len(bracketed)
    table = errors[errors["profile"] == "all"].set_index("metric")
    # Measured on this fixture (README): capacity 74% -> 9.4%, p50 TPOT 66% -> 12.7%,
    # coverage 91% / 92%. The bound is the line: the figures moved by up to 3 points
    # under other grids of the mixed steps' throughput solve on the 27-deployment fixture.
    for metric, most in (("capacity_rps", 0.15), ("tpot_p50_ms", 0.15)):
        assert table.loc[metric, "mape_calibrated"] < most
        assert table.loc[metric, "mape_calibrated"] < table.loc[metric, "mape_roofline"] / 2
        assert 0.85 <= table.loc[metric, "coverage_rows"] <= 0.99


def test_the_fixture_has_no_prefix_cache_flattery(measured):
    # Each probe's prompts are new to the server (bench/dataset.prompt_seed): were they not,
    # every probe after the first would find its prompts in the prefix cache.
    s = measured.summary
    hits = pd.to_numeric(s["server_prefix_cache_hits"], errors="coerce").sum()
    queries = pd.to_numeric(s["server_prefix_cache_queries"], errors="coerce").sum()
    assert queries > 1e6 and hits / queries < 0.005  # measured: 20,800 of 15.7 million


def test_the_sensor_finds_every_top_3_sooner_than_random_orders(measured):
    rec = validation.recovery(measured, load_hardware(), load_profiles(), seeds=5)
    # Measured on this fixture (README): 19 of 51 (37%) against random orders' 96%; no order
    # can do better than the 14 true top-3 deployments themselves (27%). Its last finds are
    # near-ties, so the figure moves with the draws' seed and the solve's numerics: 19-20 over
    # four seeds, 21-26 under the other grids of catalog/mixed_steps.py. The bound holds under
    # all of them, as a float's last digits on another CPU must not fail it.
    assert rec["best_share"] <= rec["sensor_share"] < rec["random_share_mean"]
    assert rec["sensor_share"] <= 0.55
    order = rec["sensor_order"]
    assert len(order) == len(set(order)) == rec["sensor_measured"]
    assert order[:3] == [d for d in order if d.startswith("medium")][:3]  # a group of 3: sure
