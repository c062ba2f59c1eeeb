"""build_catalog: long form, cost formula, SLO attainment, Pareto, TOPSIS and ranks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catalog import SUMMARY_COLUMNS, build_catalog
from catalog.build import PARETO_CRITERIA
from catalog.config import CRITERIA, Hardware, Profile
from catalog.pareto import pareto_mask
from catalog.slo import attainment_from_percentiles
from catalog.topsis import topsis

REPO = Path(__file__).resolve().parents[2]


def test_long_form_one_row_per_config_and_profile(catalog_df, summary, profiles):
    assert len(catalog_df) == len(summary) * len(profiles)
    pairs = catalog_df[["config_id", "profile"]]
    assert not pairs.duplicated().any()
    assert set(catalog_df["profile"]) == {p.name for p in profiles}
    for col in ("cost_per_mtok_on_demand", "cost_per_mtok_spot", "tokens_per_usd",
                "output_tokens_per_s_per_gpu", "slo_attainment", "goodput_rps", "meets_slo",
                "pareto", "topsis_score", "rank", "rank_note", *SUMMARY_COLUMNS):
        assert col in catalog_df.columns


def test_cost_follows_design_formula(catalog_df, hardware):
    prices = {h.name: h for h in hardware}
    row = catalog_df[(catalog_df["status"] == "ok") & (catalog_df["gpu_count"] > 1)].iloc[0]
    h = prices[row["hardware"]]
    tps = row["output_tokens_per_s"]
    assert row["cost_per_mtok_on_demand"] == pytest.approx(
        h.on_demand_usd_per_hour * row["gpu_count"] / (tps * 3600) * 1e6)
    assert row["cost_per_mtok_spot"] == pytest.approx(
        h.spot_usd_per_hour * row["gpu_count"] / (tps * 3600) * 1e6)
    assert row["tokens_per_usd"] == pytest.approx(tps * 3600 / (h.on_demand_usd_per_hour * row["gpu_count"]))
    assert row["output_tokens_per_s_per_gpu"] == pytest.approx(tps / row["gpu_count"])


def test_hardware_name_with_count_suffix_is_priced(summary, hardware, profiles):
    s = summary[summary["status"] == "ok"].head(5).copy()
    s["hardware"] = s["hardware"] + "x" + s["gpu_count"].astype(str)
    df = build_catalog(s, None, hardware, profiles)
    assert df["cost_per_mtok_on_demand"].notna().all()


def test_unknown_hardware_is_kept_not_ranked(summary, hardware, profiles):
    s = summary[summary["status"] == "ok"].head(6).copy()
    s.loc[s.index[0], "hardware"] = "tpu-v9"
    df = build_catalog(s, None, hardware, profiles)
    bad = df[df["hardware"] == "tpu-v9"]
    assert bad["rank"].isna().all() and bad["rank_note"].str.contains("no price").all()


def test_attainment_exact_from_requests(catalog_df, requests_table, profiles):
    p = profiles[0]
    cid = catalog_df[(catalog_df["status"] == "ok")]["config_id"].iloc[3]
    r = requests_table[requests_table["config_id"] == cid]
    meets = r["ok"] & (r["ttft_ms"] <= p.ttft_p99_ms) & ~(r["tpot_ms"] > p.tpot_p99_ms)
    row = catalog_df[(catalog_df["config_id"] == cid) & (catalog_df["profile"] == p.name)].iloc[0]
    assert row["slo_attainment"] == pytest.approx(meets.mean())
    assert row["goodput_rps"] == pytest.approx(meets.sum() / row["duration_s"])
    assert row["slo_attainment_source"] == "requests"


def test_attainment_fallback_is_a_percentile_lower_bound():
    s = pd.DataFrame({
        "ttft_p50_ms": [100, 100, 100], "ttft_p90_ms": [200, 200, 200],
        "ttft_p95_ms": [300, 300, 300], "ttft_p99_ms": [400, 400, 900],
        "tpot_p50_ms": [10, 10, 10], "tpot_p90_ms": [20, 20, 20],
        "tpot_p95_ms": [30, 30, 60], "tpot_p99_ms": [40, 40, 90],
        "num_requests": [100, 100, 100], "num_completed": [100, 50, 100],
    })
    p = Profile("x", ttft_p99_ms=500, tpot_p99_ms=50, weights={"ttft_p99_ms": 1})
    got = attainment_from_percentiles(s, p)
    # 1) both p99 within: 0.99 + 0.99 - 1; 2) same, half the requests failed;
    # 3) ttft p95 within (0.95), tpot p90 within (0.90): 0.85.
    np.testing.assert_allclose(got, [0.98, 0.49, 0.85])


def test_without_requests_uses_percentiles(summary, hardware, profiles):
    df = build_catalog(summary, None, hardware, profiles)
    assert set(df["slo_attainment_source"]) == {"percentiles"}
    ok = df[df["status"] == "ok"]
    assert ok["slo_attainment"].between(0, 1).all()


def test_meets_slo_from_p99s(catalog_df, profiles):
    ok = catalog_df[catalog_df["rank"].notna()]
    # servecat.slo's rule: p99s within the limits and the error rate at most the profile's max.
    max_error = ok["profile"].map({p.name: p.max_error_rate for p in profiles})
    expected = ((ok["ttft_p99_ms"] <= ok["slo_ttft_p99_ms"]) & (ok["tpot_p99_ms"] <= ok["slo_tpot_p99_ms"])
                & (ok["error_rate"] <= max_error))
    assert (ok["meets_slo"] == expected).all()


def test_ranks_are_a_permutation_meeting_first(catalog_df):
    ranked = catalog_df[catalog_df["rank"].notna()]
    for _, g in ranked.groupby(["model", "profile"]):
        assert sorted(g["rank"].astype(int)) == list(range(1, len(g) + 1))
        g = g.sort_values("rank")
        meets = g["meets_slo"].to_numpy()
        assert not (~meets[:-1] & meets[1:]).any(), "a config missing the SLO ranked above one meeting it"
        for part in (g[g["meets_slo"]], g[~g["meets_slo"]]):
            assert (np.diff(part["topsis_score"].to_numpy()) <= 1e-12).all()
    assert ranked["topsis_score"].between(0, 1).all()
    misses = ranked[~ranked["meets_slo"]]
    assert misses["rank_note"].str.startswith("misses SLO, ranked after").all()
    assert (ranked[ranked["meets_slo"]]["rank_note"] == "meets SLO").all()


def test_failed_and_skipped_are_kept_not_ranked(catalog_df, summary, profiles):
    bad = catalog_df[catalog_df["status"] != "ok"]
    assert len(bad) == (summary["status"] != "ok").sum() * len(profiles) > 0
    assert bad["rank"].isna().all() and bad["topsis_score"].isna().all() and not bad["pareto"].any()
    assert bad["rank_note"].str.startswith("not ranked: ").all()
    skipped = bad[bad["status"] == "skipped"]
    assert skipped["rank_note"].str.contains("engine does not support").all()


def test_topsis_scores_are_scikit_criteria_per_group(catalog_df, profiles):
    p = profiles[0]
    g = catalog_df[(catalog_df["profile"] == p.name) & catalog_df["rank"].notna()]
    g = g[g["model"] == g["model"].iloc[0]]
    criteria = list(CRITERIA)
    expected = topsis(g[criteria].to_numpy(float), [CRITERIA[c] == "max" for c in criteria],
                      [p.weights.get(c, 0.0) for c in criteria])
    np.testing.assert_allclose(g["topsis_score"].to_numpy(), expected, atol=1e-12)


def test_pareto_flag_per_model(catalog_df):
    one_profile = catalog_df[catalog_df["profile"] == catalog_df["profile"].iloc[0]]
    for _, g in one_profile.groupby("model"):
        values = np.where(g["rank"].notna().to_numpy()[:, None],
                          g[list(PARETO_CRITERIA)].to_numpy(float), np.nan)
        expected = pareto_mask(values, list(PARETO_CRITERIA.values()))
        assert (g["pareto"].to_numpy() == expected).all() and expected.any()
    # The flag does not depend on the profile.
    wide = catalog_df.pivot(index="config_id", columns="profile", values="pareto")
    assert (wide.nunique(axis=1) == 1).all()


def test_missing_columns_and_duplicates_are_named(summary, hardware, profiles):
    with pytest.raises(ValueError, match="missing column.*ttft_p99_ms"):
        build_catalog(summary.drop(columns=["ttft_p99_ms"]), None, hardware, profiles)
    with pytest.raises(ValueError, match="config_id not unique"):
        build_catalog(pd.concat([summary.head(3), summary.head(1)]), None, hardware, profiles)
    with pytest.raises(ValueError, match="requests table: missing column"):
        build_catalog(summary, pd.DataFrame({"config_id": []}), hardware, profiles)


def test_accepts_yaml_paths_and_sets_attrs(summary):
    df = build_catalog(summary.head(20), None, REPO / "configs/hardware.yaml",
                       REPO / "configs/profiles.yaml")
    assert {p["name"] for p in df.attrs["profiles"]} >= {"interactive"}
    assert any(h["name"] == "h100" for h in df.attrs["hardware"])


def test_single_config_group(hardware):
    from catalog.synthetic import synthetic_summary

    s = synthetic_summary(1, models=1, seed=1, failed_share=0)
    p = [Profile("p", 1e9, 1e9, {"ttft_p99_ms": 1.0})]
    df = build_catalog(s, None, [*hardware, Hardware("x", 1, 1)], p)
    assert df["rank"].tolist() == [1] and df["topsis_score"].tolist() == [1.0]
    assert df["pareto"].tolist() == [True]


def test_reported_price_replaces_the_table_price(summary, hardware):
    from catalog.cost import add_cost

    rows = summary.head(4).copy()
    rows["target_cost_usd_per_hour"] = [None, 1.5, float("nan"), 0.0]
    plain, priced = add_cost(summary.head(4), hardware), add_cost(rows, hardware)
    assert priced["usd_per_hour_on_demand"].iloc[1] == 1.5
    for i in (0, 2, 3):
        assert priced["usd_per_hour_on_demand"].iloc[i] == plain["usd_per_hour_on_demand"].iloc[i]
