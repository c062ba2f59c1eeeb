"""Estimated operating points in `/v1/recommend` over real HTTP: counted by default, listed after
every measured deployment and marked (`source`, intervals) with `estimates=include`, never
ranked above a measured one even when their point value is better; bad input as a 4xx; no
estimates file, no change."""

from __future__ import annotations

import io
import math
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from catalog.estimates import estimates_table, measured_points
from catalog.recommend_query import DeploymentIndex
from catalog.snapshots import load_snapshot, read_pointer, write_snapshot
from catalog.store import write_atomic
from catalog.synthetic import SWEEP_DEPLOYMENTS
from catalog.topsis import topsis
from servecat.hardware import load_hardware
from servecat.profiles import CRITERIA, load_profiles
from servecat.store import ESTIMATES_PATH
from tests.catalog.conftest import REPO, SLOW, LiveServer
from tests.catalog.conftest import SWEEP_MODEL as MODEL

LENGTHS = "512:256"
QUERY = {"model": MODEL, "profile": "interactive", "lengths": LENGTHS}
# Deployments in the matrix that were never measured: what the estimates add.
UNMEASURED = ({"hardware": "h100", "gpu_count": 1, "engine": "vllm", "quantization": "int4",
               "name": "model-a-h100x1-vllm-int4"},
              {"hardware": "l4", "gpu_count": 1, "engine": "vllm", "quantization": "int8",
               "name": "model-a-l4x1-vllm-int8"})
ESTIMATED_ONLY = {d["name"] for d in UNMEASURED}
# The optimistic end of each criterion's interval.
OPTIMISTIC = {"output_tokens_per_s_per_gpu": "output_tokens_per_s_per_gpu_hi",
              "ttft_p99_ms": "ttft_p99_ms_lo", "tpot_p99_ms": "tpot_p99_ms_lo",
              "cost_per_mtok_on_demand": "cost_per_mtok_on_demand_lo"}


def matrix() -> pd.DataFrame:
    """The matrix rows the roofline reads: every swept deployment, the slow one, and two more."""
    rows = []
    for d in (*SWEEP_DEPLOYMENTS, SLOW, *UNMEASURED):
        name = d.get("name") or (f"model-a-{d['hardware']}x{d['gpu_count']}-{d['engine']}-"
                                 f"{d['quantization']}")
        for lengths in ("128:128", LENGTHS):
            n_in, n_out = (int(x) for x in lengths.split(":"))
            rows.append({"deployment": name, "model": MODEL, "parameters": 1e9, "layers": 16,
                         "kv_heads": 8, "head_dim": 64, "hardware": d["hardware"],
                         "gpu_count": d["gpu_count"], "engine": d["engine"],
                         "quantization": d["quantization"], "max_num_seqs": 256,
                         "max_num_batched_tokens": 8192, "lengths": lengths,
                         "input_tokens": n_in, "output_tokens": n_out, "load": "concurrency",
                         "search_max": 64})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def estimates(sweep_tables) -> pd.DataFrame:
    """The estimates table as the deployment_estimates asset builds it, calibrated on the sweep."""
    _, deployments = sweep_tables
    points = measured_points(deployments.deployments, deployments.levels)
    return estimates_table(matrix(), points, load_hardware(), load_profiles())


def store_with(root: Path, sweep_tables, table: pd.DataFrame | bytes | None) -> Path:
    configs, deployments = sweep_tables
    write_snapshot(configs, root, tables=deployments.tables())
    if table is not None:
        write_estimates(root, table)
    return root


def write_estimates(root: Path, table: pd.DataFrame | bytes) -> None:
    if isinstance(table, pd.DataFrame):
        buf = io.BytesIO()
        table.to_parquet(buf)
        table = buf.getvalue()
    write_atomic(root, ESTIMATES_PATH, table)


@pytest.fixture(scope="module")
def live(tmp_path_factory, sweep_tables, estimates):
    from catalog.api import create_app

    root = store_with(tmp_path_factory.mktemp("est") / "store", sweep_tables, estimates)
    with LiveServer(create_app(root, configs_dir=REPO / "configs")) as server:
        yield server


def get(live, status=200, **params):
    r = live.client.get("/v1/recommend", params=params)
    assert r.status_code == status, r.text
    return r.json()


def optimistic_beats_top(body: dict, row: pd.Series, deployments: pd.DataFrame) -> bool:
    """The documented rule, recomputed with scikit-criteria's TOPSIS (not the API's numpy one):
    the estimate at the optimistic end of every interval, scored with the ranked measured
    deployments under the profile's weights, above the top pick."""
    [profile] = [p for p in load_profiles() if p.name == "interactive"]
    weights = {k: w for k, w in profile.weights.items() if w > 0}
    assert set(weights) <= set(OPTIMISTIC)
    group = deployments[(deployments["model"] == MODEL) & (deployments["lengths"] == LENGTHS)
                        & (deployments["profile"] == "interactive")
                        & deployments["rank"].notna()].sort_values("rank")
    best = {**row, "output_tokens_per_s_per_gpu_hi": row["output_tokens_per_s_hi"],  # 1 GPU
            "cost_per_mtok_on_demand_lo": row["cost_per_mtok_on_demand"]
            * row["output_tokens_per_s"] / row["output_tokens_per_s_hi"]}
    m = np.vstack([group[list(weights)].to_numpy(float),
                   [best[OPTIMISTIC[c]] for c in weights]])
    scores = topsis(m, [CRITERIA[c] == "max" for c in weights], list(weights.values()))
    top = list(group["deployment"]).index(body["items"][0]["deployment"])
    return bool(scores[-1] > scores[top])


def test_default_is_measured_only_and_counts_estimates_that_might_beat_the_top_pick(
        live, sweep_live, estimates, sweep_tables):
    body = get(live, **QUERY)
    without = get(sweep_live, **QUERY)   # the same snapshot with no estimates file
    assert body["items"] == without["items"] and body["unranked"] == without["unranked"]
    assert all(i["source"] == "measured" for i in body["items"])
    summary = body["estimates"]
    assert summary["available"] and not summary["included"] and summary["listed"] == 0
    # Only deployments the catalog has no row for: not the measured ones whose capacity is a
    # lower bound or none (their `measured` flag is false in the estimates table).
    rows = estimates[(estimates["lengths"] == LENGTHS) & (estimates["profile"] == "interactive")]
    assert set(rows[~rows["measured"]]["deployment"]) > ESTIMATED_ONLY
    assert summary["matching"] == len(ESTIMATED_ONLY)
    _, deployments = sweep_tables
    expected = sum(optimistic_beats_top(body, r, deployments.deployments)
                   for _, r in rows[rows["deployment"].isin(ESTIMATED_ONLY)].iterrows())
    assert summary["might_beat_top"] == expected >= 1


def test_include_lists_estimates_after_the_measured_marked_with_their_intervals(live, estimates):
    demand = 20.0
    measured = get(live, **QUERY, demand_rps=demand)["items"]
    body = get(live, **QUERY, demand_rps=demand, estimates="include")
    items = body["items"]
    assert items[:len(measured)] == measured   # measured first, ranks untouched
    extra = items[len(measured):]
    assert {i["deployment"] for i in extra} == ESTIMATED_ONLY
    assert body["estimates"]["included"] and body["estimates"]["listed"] == len(extra)
    table = estimates[(estimates["lengths"] == LENGTHS)
                      & (estimates["profile"] == "interactive")].set_index("deployment")
    for item in extra:
        row = table.loc[item["deployment"]]
        cap, op = item["capacity"], item["operating_point"]
        assert item["source"] == "estimate" and item["rank"] is None
        assert item["p_first"] is None and "estimate" in item["rank_note"]
        assert (cap["rps_lo"], cap["rps"], cap["rps_hi"]) == pytest.approx(
            (row["capacity_rps_lo"], row["capacity_rps"], row["capacity_rps_hi"]))
        assert cap["status"] == "estimated" and not cap["lower_bound"]
        for metric in ("ttft_p99_ms", "tpot_p99_ms", "output_tokens_per_s"):
            assert (op[f"{metric}_lo"], op[metric], op[f"{metric}_hi"]) == pytest.approx(
                (row[f"{metric}_lo"], row[metric], row[f"{metric}_hi"]))
        assert op["cost_per_mtok_on_demand"] == pytest.approx(row["cost_per_mtok_on_demand"])
        assert (op["cost_per_mtok_on_demand_lo"] < op["cost_per_mtok_on_demand"]
                < op["cost_per_mtok_on_demand_hi"])
        assert item["gpu_count"] == 1 and item["quality"]["status"] == "not measured"
        assert item["serving"]["replicas"] == math.ceil(demand / cap["rps"])
        assert item["serving"]["replicas_at_capacity_lo"] == math.ceil(demand / cap["rps_lo"])
    # Among themselves: the ones that might beat the top pick first.
    beat = [i["might_beat_top"] for i in extra]
    assert beat == sorted(beat, reverse=True) and sum(beat) == body["estimates"]["might_beat_top"]
    # The answer is what the OpenAPI document declares (the fuzz test's server has no estimates).
    spec = live.client.get("/openapi.json").json()["paths"]["/v1/recommend"]["get"]
    schema = spec["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(schema).validate(body)
    assert "never takes a measured deployment's place" in schema["properties"]["items"]["description"]
    page = live.client.get("/", params={**QUERY, "estimates": "include"})
    assert page.status_code == 200 and '<option value="include" selected>' in page.text


def test_an_estimate_better_than_every_measured_one_never_outranks_it_silently(
        serve, tmp_path, sweep_tables, estimates):
    # Doctored: one unmeasured deployment estimated far better than anything measured, with a
    # narrow interval, so its point value would take first place.
    table = estimates.copy()
    star = ((table["deployment"] == "model-a-h100x1-vllm-int4") & (table["lengths"] == LENGTHS)
            & (table["profile"] == "interactive"))
    for metric, value in (("capacity_rps", 500.0), ("output_tokens_per_s", 90_000.0),
                          ("ttft_p99_ms", 5.0), ("tpot_p99_ms", 0.5)):
        table.loc[star, [metric, f"{metric}_lo", f"{metric}_hi"]] = [value, value * 0.95,
                                                                     value * 1.05]
    price = load_hardware()["h100"].on_demand_usd_per_hour
    table.loc[star, "cost_per_mtok_on_demand"] = price / (90_000 * 3600) * 1e6
    # Another whose point value is worse than the top pick's, but whose interval is so wide
    # that its optimistic end is better: it might beat the top pick, though it would not rank #1.
    wide = ((table["deployment"] == "model-a-l4x1-vllm-int8") & (table["lengths"] == LENGTHS)
            & (table["profile"] == "interactive"))
    for metric, point, lo, hi in (("capacity_rps", 2.0, 1.0, 50.0),
                                  ("output_tokens_per_s", 500.0, 100.0, 50_000.0),
                                  ("ttft_p99_ms", 400.0, 5.0, 900.0),
                                  ("tpot_p99_ms", 39.0, 1.0, 80.0)):
        table.loc[wide, [metric, f"{metric}_lo", f"{metric}_hi"]] = [point, lo, hi]
    price = load_hardware()["l4"].on_demand_usd_per_hour
    table.loc[wide, "cost_per_mtok_on_demand"] = price / (500 * 3600) * 1e6
    live = serve(store_with(tmp_path / "store", sweep_tables, table))
    plain = get(live, **QUERY)
    assert all(i["source"] == "measured" for i in plain["items"])
    assert plain["estimates"]["might_beat_top"] == 2
    body = get(live, **QUERY, estimates="include")
    items = body["items"]
    [star_item] = [i for i in items if i["deployment"] == "model-a-h100x1-vllm-int4"]
    assert star_item["rank_if_measured"] == 1 and star_item["might_beat_top"]
    [wide_item] = [i for i in items if i["deployment"] == "model-a-l4x1-vllm-int8"]
    assert wide_item["might_beat_top"] and wide_item["rank_if_measured"] > 1
    assert "would beat the top pick" in wide_item["rank_note"]
    # Its point value beats the top pick on every criterion...
    top = items[0]
    assert top["source"] == "measured" and top["rank"] == 1
    op = star_item["operating_point"]
    assert op["ttft_p99_ms"] < top["operating_point"]["ttft_p99_ms"]
    assert op["cost_per_mtok_on_demand"] < top["operating_point"]["cost_per_mtok_on_demand"]
    # ...and still it is listed after every measured deployment, marked, with no rank.
    sources = [i["source"] for i in items]
    assert sources == sorted(sources, key=lambda s: s == "estimate")
    assert items.index(star_item) == len(plain["items"])
    assert star_item["source"] == "estimate" and star_item["rank"] is None
    assert [i["rank"] for i in items if i["source"] == "measured"] == \
        [i["rank"] for i in plain["items"]]


def test_filters_and_quality_limits_apply_to_estimates(live):
    l4 = get(live, **QUERY, hardware="l4", estimates="include")
    assert {(i["source"], i["deployment"]) for i in l4["items"]} == {
        ("measured", "model-a-l4x2-sglang-int8"), ("estimate", "model-a-l4x1-vllm-int8")}
    assert l4["estimates"]["matching"] == 1
    cheap = get(live, **QUERY, demand_rps=1, max_usd_per_hour=1, estimates="include")
    for item in cheap["items"]:
        assert item["serving"]["usd_per_hour_on_demand"] <= 1
    # An estimate has no quality figure: under a quality limit none passes, and it says why.
    kl = get(live, **QUERY, max_kl=1.0, estimates="include")
    assert kl["estimates"]["matching"] == 0 and "quality" in kl["estimates"]["reason"]
    assert all(i["source"] == "measured" for i in kl["items"])


@pytest.mark.parametrize("value", ["all", "INCLUDE", "", "estimate"])
def test_bad_estimates_value_is_a_422_naming_the_parameter(live, value):
    body = get(live, 422, **QUERY, estimates=value)
    assert body["parameter"] == "estimates"
    assert "exclude, include" in body["error"]
    page = live.client.get("/", params={**QUERY, "estimates": value})
    assert page.status_code == 422 and "exclude, include" in page.text


def test_without_an_estimates_file_the_answer_is_the_deployment_tables(sweep_live, sweep_tables):
    body = get(sweep_live, **QUERY, demand_rps=7)
    # The same answer as the deployment table alone, computed here without the API.
    pointer = read_pointer(sweep_live.app.state.holder.root)
    snapshot = load_snapshot(sweep_live.app.state.holder.root, pointer["key"])
    index = DeploymentIndex(snapshot.tables["deployments"], snapshot.tables.get("levels"),
                            {p["name"]: p for p in snapshot.profiles})
    assert body == {"snapshot": snapshot.id, **index.recommend(**QUERY, demand_rps=7)}
    summary = body["estimates"]
    assert not summary["available"] and summary["matching"] == summary["might_beat_top"] == 0
    assert "deployment_estimates" in summary["reason"]
    included = get(sweep_live, **QUERY, demand_rps=7, estimates="include")
    assert included["items"] == body["items"]


def test_estimates_reload_when_the_file_changes_and_a_bad_file_is_reported(
        serve, tmp_path, sweep_tables, estimates):
    root = store_with(tmp_path / "store", sweep_tables, None)
    live = serve(root)
    assert not get(live, **QUERY)["estimates"]["available"]
    write_estimates(root, estimates)
    live.app.state.holder.refresh()
    assert get(live, **QUERY)["estimates"]["matching"] == len(ESTIMATED_ONLY)
    write_estimates(root, b"not parquet")
    live.app.state.holder.refresh()
    body = get(live, **QUERY)   # the table loaded before keeps answering; the catalog too
    assert body["estimates"]["available"] and body["items"]
    fresh = serve(root)   # a server that never loaded one says why it has none
    reason = get(fresh, **QUERY)["estimates"]["reason"]
    assert "unreadable" in reason
