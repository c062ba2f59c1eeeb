"""Quality beside speed in the deployment table: quality_* columns from stored probe runs (built
through bench.quality_compare), absence marked, and a profile's max_quality_loss and quality_kl
weight deciding what is ranked."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.quality import ProbeRun
from catalog.config import ConfigError, load_profiles
from catalog.quality import NOT_MEASURED, QUALITY_COLUMNS, model_quality, stored_probe_runs
from catalog.recommend import build_deployments
from servecat.profiles import Profile
from tests.catalog.quality_runs import (
    BROKEN,
    GOOD,
    REFERENCE,
    UNPROBED,
    DictStore,
    probe_run,
    probe_runs,
    quality_sweep,
)

WEIGHTS = {"output_tokens_per_s_per_gpu": 0.4, "cost_per_mtok_on_demand": 0.4,
           "ttft_p99_ms": 0.1, "tpot_p99_ms": 0.1}
FAST = Profile("fast", 450, 40, WEIGHTS)
CAREFUL = Profile("careful", 450, 40, WEIGHTS, max_quality_loss={"kl": 0.1})
AGREEING = Profile("agreeing", 450, 40, WEIGHTS,
                   max_quality_loss={"agreement": 0.5, "perplexity_ratio": 1.05})
WEIGHS_QUALITY = Profile("weighs-quality", 450, 40,
                         {"output_tokens_per_s_per_gpu": 0.3, "quality_kl": 0.7})
PROFILES = [FAST, CAREFUL, AGREEING, WEIGHS_QUALITY]


@pytest.fixture(scope="module")
def table(hardware):
    summary, requests = quality_sweep()
    runs = stored_probe_runs(DictStore(probe_runs()))
    return build_deployments(summary, requests, hardware, PROFILES, draws=60, seed=2,
                             probes=runs).deployments.set_index(["profile", "deployment"])


def test_stored_runs_are_read_back_by_deployment_key():
    runs = probe_runs()
    store = DictStore(runs)
    store.files["runs/quality/deployment=old/quality-v0.parquet"] = runs[GOOD].to_table()
    assert stored_probe_runs(store) == runs  # other probe versions are left alone


def test_quality_columns_against_the_most_precise_deployment():
    q = model_quality(probe_runs(), {REFERENCE: "bf16", GOOD: "int8", BROKEN: "int4",
                                     UNPROBED: "int4"})
    assert list(q.columns) == list(QUALITY_COLUMNS)
    assert set(q["quality_reference"].dropna()) == {REFERENCE}
    ref, good, broken = q.loc[REFERENCE], q.loc[GOOD], q.loc[BROKEN]
    assert (ref["quality_kl"], ref["quality_agreement"], ref["quality_perplexity_ratio"]) == \
        (0.0, 1.0, 1.0)
    assert 0 < good["quality_kl"] < 0.05 < 0.3 < broken["quality_kl"]
    assert good["quality_agreement"] == pytest.approx(0.8)
    assert broken["quality_agreement"] == pytest.approx(0.1)


def test_a_reference_only_model_agrees_with_itself():
    q = model_quality({"only": probe_run("only", 0.7, 0.5)}, {"only": "int4"})
    row = q.loc["only"]
    assert row["quality_reference"] == "only" and row["quality_status"] == "ok"
    assert (row["quality_agreement"], row["quality_kl"], row["quality_perplexity_ratio"]) == \
        (1.0, 0.0, 1.0)


def test_absence_is_marked_never_lossless(table):
    row = table.loc[("fast", UNPROBED)]
    assert row["quality_status"] == NOT_MEASURED and pd.isna(row["quality_reference"])
    assert all(math.isnan(row[c]) for c in ("quality_kl", "quality_agreement",
                                            "quality_perplexity_ratio"))
    # Without quality demands a deployment without a figure is ranked on its speed alone ...
    assert pd.notna(row["rank"])
    # ... and under them it is not ranked, saying why.
    for profile in ("careful", "agreeing", "weighs-quality"):
        note = table.loc[(profile, UNPROBED), "rank_note"]
        assert pd.isna(table.loc[(profile, UNPROBED), "rank"])
        assert note.startswith("not ranked: no quality figure (not measured"), note
    skipped = model_quality({"s": ProbeRun("quality-v1", "m", "s", status="skipped",
                                           status_reason="no logprobs")}, {"s": "bf16"})
    assert skipped.loc["s", "quality_status"] == "skipped"
    assert math.isnan(skipped.loc["s", "quality_kl"])


def test_a_broken_quantization_ranks_below_the_others_under_a_quality_limit(table):
    fast = table.loc["fast"]
    assert fast.loc[BROKEN, "rank"] == 1  # the fastest and cheapest on speed alone
    careful = table.loc["careful"]
    assert pd.isna(careful.loc[BROKEN, "rank"])
    note = careful.loc[BROKEN, "rank_note"]
    assert "quality kl" in note and "max_quality_loss.kl 0.1" in note and "careful" in note
    assert careful.loc[GOOD, "rank"] == 1 and careful.loc[REFERENCE, "rank"] == 2
    agreeing = table.loc["agreeing"]
    note = agreeing.loc[BROKEN, "rank_note"]
    assert "quality agreement 0.1 < max_quality_loss.agreement 0.5" in note, note
    assert agreeing.loc[[GOOD, REFERENCE], "rank"].notna().all()


def test_weighted_kl_puts_the_broken_quantization_last(table):
    g = table.loc["weighs-quality"]
    ranked = g[g["rank"].notna()].sort_values("rank")
    # KL is ranked as exp(-KL): the int8's small loss costs it little against its speed, the
    # broken int4's large loss puts it last however fast it is.
    assert set(ranked.index[:2]) == {REFERENCE, GOOD} and ranked.index[-1] == BROKEN
    assert ranked["p_first"].sum() == pytest.approx(1.0)
    assert ranked.loc[BROKEN, "p_first"] == 0
    assert "weights quality_kl" in g.loc[UNPROBED, "rank_note"]


def test_without_probes_every_deployment_is_not_measured(hardware):
    summary, requests = quality_sweep()
    d = build_deployments(summary, None, hardware, [FAST, CAREFUL]).deployments
    assert (d["quality_status"] == NOT_MEASURED).all()
    assert d.loc[d["profile"] == "fast", "rank"].notna().all()
    assert d.loc[d["profile"] == "careful", "rank"].isna().all()


# --- profiles: max_quality_loss and the quality_kl weight -------------------------------------

def _profiles(tmp_path, extra: str):
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  - name: a\n    slo: {ttft_p99_ms: 1, tpot_p99_ms: 1}\n"
                    "    weights: {ttft_p99_ms: 1, quality_kl: 0.5}\n" + extra)
    return load_profiles(path)


def test_max_quality_loss_is_read_beside_the_slo(tmp_path):
    [p] = _profiles(tmp_path, "    max_quality_loss: {kl: 0.05, agreement: 0.5, "
                              "perplexity_ratio: 1.05}\n")
    assert p.max_quality_loss == {"kl": 0.05, "agreement": 0.5, "perplexity_ratio": 1.05}
    assert p.weights["quality_kl"] == 0.5 and p.to_dict()["max_quality_loss"]["kl"] == 0.05
    assert all(not p.max_quality_loss for p in load_profiles())  # none ships with one


@pytest.mark.parametrize("value, message", [
    ("{kl: -0.1}", "profiles[0].max_quality_loss.kl: -0.1 is not a number >= 0"),
    ("{kl: .nan}", "profiles[0].max_quality_loss.kl: nan is not a number >= 0"),
    ("{kl: true}", "profiles[0].max_quality_loss.kl: True is not a number >= 0"),
    ("{agreement: 1.5}", "profiles[0].max_quality_loss.agreement: 1.5 is not a number in [0, 1]"),
    ("{perplexity_ratio: 0.9}",
     "profiles[0].max_quality_loss.perplexity_ratio: 0.9 is not a number >= 1"),
    ("{ppl: 2}", "profiles[0].max_quality_loss.ppl: unknown quality figure (known: kl, "
                 "perplexity_ratio, agreement)"),
    ("{}", "profiles[0].max_quality_loss: expected a mapping of quality figure -> limit"),
    ("0.05", "profiles[0].max_quality_loss: expected a mapping"),
])
def test_max_quality_loss_errors_name_the_field(tmp_path, value, message):
    with pytest.raises(ConfigError) as err:
        _profiles(tmp_path, f"    max_quality_loss: {value}\n")
    assert message in str(err.value), str(err.value)
