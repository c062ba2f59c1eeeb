"""Deployments ranked at their operating points: one row per deployment × length profile ×
profile, capacity and cost there, Pareto and TOPSIS over deployments, and rank stability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalog.build import SUMMARY_COLUMNS
from catalog.capacity import capacity
from catalog.confidence import _resample_level, row_percentiles
from catalog.pareto import pareto_mask
from catalog.ranking import PARETO_CRITERIA
from catalog.recommend import DEPLOYMENT_CRITERIA, build_deployments
from catalog.report import deployments_markdown
from catalog.resample import _sort, level_draws, percentile_from_counts
from catalog.snapshots import load_latest, write_snapshot
from catalog.synthetic import SWEEP_DEPLOYMENTS, synthetic_sweep
from catalog.topsis import topsis, topsis_batch
from servecat.profiles import Profile

PROFILES = [
    Profile("interactive", 450, 40, {"output_tokens_per_s_per_gpu": 0.2, "ttft_p99_ms": 0.3,
                                     "tpot_p99_ms": 0.3, "cost_per_mtok_on_demand": 0.2}),
    Profile("offline", 60000, 1000, {"output_tokens_per_s_per_gpu": 0.5,
                                     "cost_per_mtok_on_demand": 0.5}),
]
SLOW = {"hardware": "a100-80gb", "gpu_count": 1, "engine": "builtin", "quantization": "fp16",
        "speed": 0.05, "name": "slow"}


def rename(summary: pd.DataFrame, requests: pd.DataFrame, old: str, new: str):
    """A copy of deployment OLD's rows and requests under the name NEW: an identical twin."""
    s = summary[summary["deployment"] == old].copy()
    ids = dict(zip(s["config_id"], s["config_id"].str.replace(old, new, regex=False), strict=True))
    s["deployment"], s["config_id"] = new, s["config_id"].map(ids)
    r = requests[requests["config_id"].isin(ids)].copy()
    r["config_id"] = r["config_id"].map(ids)
    return pd.concat([summary, s], ignore_index=True), pd.concat([requests, r], ignore_index=True)


@pytest.fixture(scope="module")
def sweep():
    return synthetic_sweep((*SWEEP_DEPLOYMENTS, SLOW), rates=(1.0, 3.0), seed=3)


@pytest.fixture(scope="module")
def table(sweep, hardware):
    summary, requests = sweep
    return build_deployments(summary, requests, hardware, PROFILES, draws=200, seed=1)


def group(df: pd.DataFrame, lengths: str, profile: str) -> pd.DataFrame:
    return df[(df["lengths"] == lengths) & (df["profile"] == profile)]


def test_one_row_per_deployment_lengths_profile_never_a_load_level(table, sweep):
    summary, _ = sweep
    d = table.deployments
    keys = d[["model", "lengths", "profile", "deployment"]]
    assert not keys.duplicated().any()
    assert len(d) == summary["deployment"].nunique() * summary["lengths"].nunique() * len(PROFILES)
    assert not {"config_id", "concurrency", "rate", "workload_id"} & set(d.columns)
    for _, g in d[d["rank"].notna()].groupby(["model", "lengths", "profile"]):
        assert sorted(g["rank"]) == list(range(1, len(g) + 1))
        assert g["topsis_score"].between(0, 1).all()
    # The load levels stay underneath, one row per measured config.
    assert sorted(table.levels["config_id"]) == sorted(summary["config_id"])


def test_capacity_and_operating_point_follow_catalog_capacity(table, sweep, hardware):
    summary, _ = sweep
    g = group(table.deployments, "512:256", "interactive")
    row = g[g["capacity_status"] == "bracketed"].sort_values("rank").iloc[0]
    levels = summary[(summary["deployment"] == row["deployment"])
                     & (summary["lengths"] == "512:256") & (summary["load"] == row["load"])]
    price = {h.name: h for h in hardware}[row["hardware"]]
    cap = capacity(levels, PROFILES[0], gpu_count=row["gpu_count"],
                   on_demand_usd_per_gpu_hour=price.on_demand_usd_per_hour,
                   spot_usd_per_gpu_hour=price.spot_usd_per_hour)
    assert row["capacity_rps"] == pytest.approx(cap.rps)
    assert row["capacity_concurrency"] == pytest.approx(cap.concurrency)
    assert row["capacity_rps_lo"] <= row["capacity_rps"] <= row["capacity_rps_hi"]
    assert row["ttft_p99_ms"] == pytest.approx(cap.ttft_p99_ms)
    gpus, tps = row["gpu_count"], row["output_tokens_per_s"]
    assert row["output_tokens_per_s_per_gpu"] == pytest.approx(tps / gpus)
    assert row["usd_per_hour_on_demand"] == pytest.approx(price.on_demand_usd_per_hour * gpus)
    assert row["cost_per_mtok_on_demand"] == pytest.approx(
        price.on_demand_usd_per_hour * gpus / (tps * 3600) * 1e6)
    assert row["cost_per_mtok_spot"] == pytest.approx(
        price.spot_usd_per_hour * gpus / (tps * 3600) * 1e6)
    assert row["levels"] == len(levels) and row["requests"] == levels["num_requests"].sum()
    assert row["pass_requests"] == row["fail_requests"] == 200 and row["draws"] == 200


def test_no_capacity_is_listed_unranked_with_the_reason(table):
    slow = table.deployments[(table.deployments["deployment"] == "slow")
                             & (table.deployments["profile"] == "interactive")]
    assert (slow["capacity_status"] == "none").all() and slow["rank"].isna().all()
    assert slow["rank_note"].str.contains("lowest measured level").all()
    assert slow["rank_note"].str.contains("p99 TPOT").all()
    assert slow["p_first"].isna().all() and not slow["pareto"].any()


def test_every_level_holding_is_ranked_as_a_lower_bound(table):
    offline = table.deployments[table.deployments["profile"] == "offline"]
    bound = offline[offline["capacity_lower_bound"]]
    assert len(bound) and (bound["capacity_status"] == "lower_bound").all()
    assert bound["rank"].notna().all()
    assert bound["rank_note"].str.contains("lower bound").all()


def test_pareto_and_topsis_are_over_deployments_at_their_operating_points(table):
    g = group(table.deployments, "128:128", "interactive")
    g = g[g["rank"].notna()]
    crit = list(DEPLOYMENT_CRITERIA)
    weights = [PROFILES[0].weights.get(c, 0.0) for c in crit]
    expected = topsis(g[crit].to_numpy(float), [DEPLOYMENT_CRITERIA[c] == "max" for c in crit],
                      weights)
    np.testing.assert_allclose(g["topsis_score"], expected, atol=1e-9)
    np.testing.assert_allclose(g.sort_values("rank")["topsis_score"], sorted(expected)[::-1])
    front = pareto_mask(g[list(PARETO_CRITERIA)].to_numpy(float), list(PARETO_CRITERIA.values()))
    assert (g["pareto"].to_numpy() == front).all() and front.any()


def test_identical_deployments_tie(hardware):
    fast, other = SWEEP_DEPLOYMENTS[0], SWEEP_DEPLOYMENTS[1]  # h100 x1 and a100 x1, bracketed
    summary, requests = synthetic_sweep((fast, other), lengths=("512:256",), seed=5)
    summary, requests = rename(summary, requests, "model-a-h100x1-vllm-bf16", "twin")
    d = build_deployments(summary, requests, hardware, PROFILES[:1], draws=400, seed=2)
    g = d.deployments.set_index("deployment")
    pair = g.loc[["model-a-h100x1-vllm-bf16", "twin"]]
    assert (pair["capacity_status"] == "bracketed").all()
    assert pair["capacity_rps"].nunique() == 1 and pair["topsis_score"].nunique() == 1
    assert (pair["p_first"] <= 0.6).all(), pair["p_first"]
    assert pair["p_first"].sum() > 0.95  # between them they are first


def test_a_clearly_better_deployment_is_first_with_high_probability(hardware):
    better = {**SWEEP_DEPLOYMENTS[0], "name": "better"}
    worse = {**SWEEP_DEPLOYMENTS[0], "speed": 1.4, "name": "worse"}
    third = {**SWEEP_DEPLOYMENTS[0], "speed": 1.2, "name": "third"}
    summary, requests = synthetic_sweep((better, worse, third), lengths=("512:256",), seed=6)
    d = build_deployments(summary, requests, hardware, PROFILES[:1], draws=400, seed=3)
    g = d.deployments.set_index("deployment")
    assert (g["capacity_status"] == "bracketed").all()
    assert g.loc["better", "rank"] == 1 and g.loc["better", "p_first"] > 0.9
    assert g["p_first"].sum() == pytest.approx(1.0) and (g["p_top3"] == 1.0).all()


def test_seeded_and_without_requests(sweep, hardware, table):
    summary, requests = sweep
    again = build_deployments(summary, requests, hardware, PROFILES, draws=200, seed=1)
    pd.testing.assert_frame_equal(again.deployments, table.deployments)
    bare = build_deployments(summary, None, hardware, PROFILES).deployments
    assert bare["p_first"].isna().all() and bare["capacity_rps_lo"].isna().all()
    assert (bare["draws"] == 0).all()
    np.testing.assert_allclose(bare["capacity_rps"], table.deployments["capacity_rps"])


def hand_summary(rows: dict) -> pd.DataFrame:
    """Summary rows from columns given by hand; every other contract column NaN."""
    df = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return df


def test_both_load_kinds_measured_use_one(table):
    # Rates 1 and 3 req/s hold for the h100 x2 deployment (a lower bound of 3 req/s), while its
    # concurrency sweep gives a higher lower bound under `offline`: the tighter bound is used.
    row = table.deployments.query("deployment == 'model-a-h100x2-builtin-fp16' and "
                                  "lengths == '128:128' and profile == 'offline'").iloc[0]
    assert row["load"] == "concurrency" and row["capacity_rps"] > 3
    # Both bracketed: the open loop's (rate) capacity, because real traffic queues.
    both = hand_summary({
        "config_id": ["c1", "c8", "r1", "r8"], "deployment": "d", "model": "m",
        "hardware": "h100", "gpu_count": 1, "lengths": "chat",
        "load": ["concurrency", "concurrency", "rate", "rate"],
        "concurrency": [1, 8, np.nan, np.nan], "rate": [np.nan, np.nan, 1, 8],
        "ttft_p99_ms": [100, 900, 100, 900], "tpot_p99_ms": 10.0, "error_rate": 0.0,
        "requests_per_s": [1, 6, 1, 8], "output_tokens_per_s": [100, 600, 100, 800],
        "num_requests": 100})
    got = build_deployments(both, None, "configs/hardware.yaml", PROFILES[:1]).deployments
    assert got.iloc[0]["load"] == "rate" and got.iloc[0]["capacity_status"] == "bracketed"
    # rate 1 -> 8, p99 TTFT 100 -> 900 ms: 450 ms is crossed 0.4375 of the way.
    assert got.iloc[0]["capacity_rps"] == pytest.approx(1 + 7 * 0.4375)


def test_snapshot_stores_the_deployment_tables_beside_the_configs(tmp_path, table, catalog_df):
    write_snapshot(catalog_df, tmp_path, tables=table.tables())
    snap = load_latest(tmp_path)
    assert set(snap.tables) == {"deployments", "levels"}
    pd.testing.assert_frame_equal(snap.tables["deployments"], table.deployments,
                                  check_dtype=False)
    assert (tmp_path / "catalog/model_catalog.deployments.parquet").exists()
    write_snapshot(catalog_df, tmp_path)  # as before this change: no side tables
    assert load_latest(tmp_path).tables == {}


def test_markdown_has_a_table_per_model_lengths_profile(table):
    md = deployments_markdown(table.deployments, 3)
    assert md.count("| rank | deployment |") == 4
    assert "**org/model-a · 512:256 · interactive**" in md and "P(#1)" in md


# --- the vectorised bootstrap -----------------------------------------------------------------

def test_percentiles_from_counts_equal_the_expanded_resample():
    rng = np.random.default_rng(0)
    n = np.array([5, 0, 30, 1, 200])
    level = np.repeat(np.arange(len(n)), n)
    values = rng.lognormal(0, 1, len(level))
    values[rng.random(len(level)) < 0.1] = np.nan
    m = _sort(values, level, len(n))
    start = np.r_[0, np.cumsum(n)[:-1]]
    counts = np.zeros((20, len(level)), int)
    for b in range(20):
        for lv in np.flatnonzero(n):
            np.add.at(counts[b], start[lv] + rng.integers(0, n[lv], n[lv]), 1)
    sorted_counts = counts[:, m.order]
    got = percentile_from_counts(np.cumsum(sorted_counts, axis=1), m, start, 0.99)
    for b in range(20):
        for lv in range(len(n)):
            span = slice(start[lv], start[lv] + n[lv])
            sample = np.sort(np.repeat(m.values[span], sorted_counts[b, span]))
            want = row_percentiles(sample[None], [99.0], "weibull")[0, 0] if len(sample) else np.nan
            np.testing.assert_allclose(got[b, lv], want, equal_nan=True)


def test_level_draws_match_resampling_one_level_at_a_time():
    rng = np.random.default_rng(1)
    req = pd.DataFrame({"config_id": np.repeat(["a", "b"], [400, 60]),
                        "ttft_ms": rng.exponential(100, 460), "tpot_ms": rng.exponential(10, 460),
                        "ok": rng.random(460) > 0.05})
    d = level_draws(["a", "b", "none"], req, draws=3000, seed=0)
    assert list(d.n) == [400, 60, 0] and d.n_ok[0] == req["ok"][:400].sum()
    assert np.isnan(d.values[:, 2]).all()
    # The same statistics as catalog.confidence's per-level resampling, to Monte Carlo error.
    one = _resample_level(req[:400], 3000, np.random.default_rng(9))
    np.testing.assert_allclose(d.values[:, 0].mean(axis=0), one.mean(axis=0), rtol=0.03)
    np.testing.assert_allclose(np.quantile(d.values[:, 0, :2], [0.05, 0.95], axis=0),
                               np.quantile(one[:, :2], [0.05, 0.95], axis=0), rtol=0.05)


def test_topsis_batch_leaves_out_rows_missing_a_criterion():
    rng = np.random.default_rng(4)
    m = rng.lognormal(0, 1, (3, 12, 4))
    m[1, 5, 2] = np.nan
    maximize, weights = [True, False, False, True], [0.4, 0.1, 0.3, 0.2]
    got = topsis_batch(m, maximize, weights)
    for b in range(3):
        keep = ~np.isnan(m[b]).any(axis=1)
        np.testing.assert_allclose(got[b, keep], topsis(m[b, keep], maximize, weights), atol=1e-9)
    assert np.isnan(got[1, 5])
