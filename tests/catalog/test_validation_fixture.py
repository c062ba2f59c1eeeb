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
    assert len(deployments) >= 24
    assert {"tiny", "small"} <= set(deployments["model"])
    assert set(deployments["quantization"]) == {"fp32", "bf16", "int8"}
    assert set(deployments["max_num_seqs"]) >= {4, 16}
    assert set(deployments["max_num_batched_tokens"]) >= {256, 512}
    assert set(s["lengths"]) == {"chat", "summarize"}
    assert s["search"].fillna(False).astype(bool).any()  # capacity searches, not a fixed grid
    assert (s["status"] == "ok").sum() >= 100


def test_held_out_calibration_beats_the_roofline_and_its_intervals_cover(measured):
    held, errors = validation.held_out_errors(measured, load_hardware(), load_profiles())
    bracketed = measured.points.dropna(subset=["capacity_rps"])
    cap = held[held["metric"] == "capacity_rps"]
    # Every bracketed measurement is predicted once, from the other deployments only.
    assert len(cap) == len(bracketed)
    table = errors[errors["profile"] == "all"].set_index("metric")
    assert table.loc["capacity_rps", "mape_calibrated"] < table.loc["capacity_rps",
                                                                     "mape_roofline"] / 3
    assert table.loc["capacity_rps", "coverage_rows"] >= 0.8
    assert pd.notna(table.loc["tpot_p50_ms", "mape_calibrated"])
