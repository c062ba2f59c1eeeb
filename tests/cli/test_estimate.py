"""`servecat estimate show|validate|fixture` and `servecat matrix plan --budget N`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.matrix import expand_file
from cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    """configs/validation.yaml with its models built here (a clean clone has none)."""
    from engine.local_models import build_model

    root = tmp_path_factory.mktemp("validation")
    data = yaml.safe_load((REPO / "configs" / "validation.yaml").read_text())
    for model in data["models"]:
        model["id"] = str(build_model(model["name"], root / model["name"]))
    path = root / "validation.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_show_marks_estimates_and_states_its_assumptions(tmp_path, spec):
    out = CliRunner().invoke(main, ["estimate", "show", str(spec), "--store",
                                    str(tmp_path / "empty"), "--profile", "server", "--top", "3"])
    assert out.exit_code == 0, out.output
    assert "profile server (source: estimate; [95% prediction interval]" in out.output
    assert "roofline: decode reads weights" in out.output
    assert "calibration: none" in out.output
    assert "profile interactive" not in out.output
    rows = json.loads(CliRunner().invoke(main, ["estimate", "show", str(spec), "--store",
                                                str(tmp_path / "empty"), "--json"]).output)
    assert len(rows) == 24 * 2 * 4 and {r["source"] for r in rows} == {"estimate"}


def test_bad_input_is_one_clear_error(tmp_path, spec):
    runner = CliRunner()
    bad = runner.invoke(main, ["estimate", "show", str(spec), "--profile", "nope"])
    assert bad.exit_code != 0 and "--profile nope: no such profile" in bad.output
    missing = runner.invoke(main, ["estimate", "validate", "--fixture", str(tmp_path)])
    assert missing.exit_code != 0 and "no validation fixture at" in missing.output
    empty = runner.invoke(main, ["estimate", "fixture", "--store", str(tmp_path / "s"),
                                 "--out", str(tmp_path / "o")])
    assert empty.exit_code != 0 and "no measured summary rows" in empty.output
    for out in (bad, missing, empty):
        assert "Traceback" not in out.output


def test_plan_budget_orders_unmeasured_deployments_with_their_cost(tmp_path, spec):
    out = CliRunner().invoke(main, ["matrix", "plan", str(spec), "--budget", "5", "--store",
                                    str(tmp_path / "empty"), "--json"])
    assert out.exit_code == 0, out.output
    first = json.loads(out.output)["measure_first"]
    assert len(first) == 5
    names = [r["deployment"] for r in first]
    assert len(set(names)) == 5 and set(names) <= set(expand_file(spec).deployments)
    p = [r["p_any_top3"] for r in first]
    assert p == sorted(p, reverse=True)
    assert all(r["p_top3"] <= r["p_any_top3"] + 1e-12 for r in first)
    assert all(r["gpu_hours"] > 0 and r["usd_on_demand"] > 0 for r in first)
    assert abs(first[-1]["cum_gpu_hours"] - sum(r["gpu_hours"] for r in first)) < 1e-9
    text = CliRunner().invoke(main, ["matrix", "plan", str(spec), "--budget", "2", "--store",
                                     str(tmp_path / "empty")]).output
    assert "measure first (budget 2" in text and "cum $" in text
    zero = CliRunner().invoke(main, ["matrix", "plan", str(spec), "--budget", "0"])
    assert zero.exit_code != 0 and "--budget" in zero.output
