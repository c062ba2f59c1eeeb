"""`/v1/recommend` and `/v1/curves` over real HTTP: deployments at their operating points, sized
for a demand; the nearest length profile; bad input as 4xx naming the parameter; old snapshots."""

from __future__ import annotations

import math

import pytest

from catalog.params import MAX_DEMAND_RPS, MAX_GPUS, MAX_USD_PER_HOUR
from catalog.snapshots import write_snapshot
from catalog.synthetic import SWEEP_DEPLOYMENTS
from tests.catalog.conftest import SWEEP_MODEL as MODEL


@pytest.fixture
def tables(sweep_tables):
    return sweep_tables


@pytest.fixture
def live(sweep_live):
    return sweep_live


def get(live, path="/v1/recommend", status=200, **params):
    r = live.client.get(path, params=params)
    assert r.status_code == status, r.text
    return r.json()


def error(live, status, param, *fragments, path="/v1/recommend", **params):
    body = get(live, path, status, **params)
    assert body.get("parameter") == param, body
    for fragment in fragments:
        assert fragment in body["error"], body


def test_replicas_gpus_and_dollars_recomputed_by_hand(live, hardware):
    demand = 23.0
    body = get(live, model=MODEL, profile="interactive", lengths="512:256", demand_rps=demand)
    price = {h.name: h for h in hardware}
    assert body["demand_rps"] == demand and body["items"]
    for item in body["items"]:
        cap, op, serving = item["capacity"], item["operating_point"], item["serving"]
        replicas = math.ceil(demand / cap["rps"])
        assert serving["replicas"] == replicas
        assert serving["gpus"] == replicas * item["gpu_count"]
        h = price[item["hardware"]]
        assert op["usd_per_hour_on_demand"] == pytest.approx(h.on_demand_usd_per_hour
                                                             * item["gpu_count"])
        assert serving["usd_per_hour_on_demand"] == pytest.approx(
            replicas * h.on_demand_usd_per_hour * item["gpu_count"])
        assert serving["usd_per_hour_spot"] == pytest.approx(
            replicas * h.spot_usd_per_hour * item["gpu_count"])
        assert serving["replicas_at_capacity_lo"] == math.ceil(demand / cap["rps_lo"])
        assert serving["upper_bound"] == cap["lower_bound"]
        assert op["cost_per_mtok_on_demand"] == pytest.approx(
            op["usd_per_hour_on_demand"] / (op["output_tokens_per_s"] * 3600) * 1e6)
        assert cap["rps_lo"] <= cap["rps"] <= cap["rps_hi"]
        assert op["ttft_p99_ms"] <= 450 and op["tpot_p99_ms"] <= 40  # within the SLOs there


def test_each_deployment_once_in_rank_order_with_probabilities(live, tables):
    body = get(live, model=MODEL, profile="interactive", lengths="128:128")
    items = body["items"]
    names = [i["deployment"] for i in items] + [u["deployment"] for u in body["unranked"]]
    assert len(names) == len(set(names)) == len(SWEEP_DEPLOYMENTS) + 1
    assert [i["rank"] for i in items] == list(range(1, len(items) + 1))
    assert all("config_id" not in i and "concurrency" not in i for i in items)
    assert sum(i["p_first"] for i in items) == pytest.approx(1.0)
    assert all(0 <= i["p_first"] <= i["p_top3"] <= 1 for i in items)
    assert any(i["pareto"] for i in items) and "serving" not in items[0]
    assert body["traffic"] == {"lengths": "128:128", "matched_by": "lengths",
                               "input_tokens": 128.0, "output_tokens": 128.0}
    assert body["slo"]["ttft_p99_ms"] == 450 and body["reason"] is None


def test_deployment_without_capacity_is_unranked_with_the_reason(live):
    body = get(live, model=MODEL, profile="interactive", lengths="512:256")
    [slow] = [u for u in body["unranked"] if u["deployment"] == "slow"]
    assert slow["capacity_status"] == "none"
    assert "lowest measured level" in slow["reason"] and "p99 TPOT" in slow["reason"]


def test_nearest_length_profile_by_tokens_says_which_and_how_far(live):
    body = get(live, model=MODEL, profile="server", input_tokens=600, output_tokens=200)
    t = body["traffic"]
    assert t["lengths"] == "512:256" and t["matched_by"] == "nearest"
    assert t["requested"] == {"input_tokens": 600, "output_tokens": 200}
    assert t["input_ratio"] == pytest.approx(600 / 512)
    assert t["output_ratio"] == pytest.approx(200 / 256)
    small = get(live, model=MODEL, profile="server", input_tokens=100, output_tokens=140)
    assert small["traffic"]["lengths"] == "128:128"


def test_filters_and_limits(live):
    h100 = get(live, model=MODEL, profile="interactive", lengths="512:256", hardware="h100")
    assert h100["items"] and all(i["hardware"] == "h100" for i in h100["items"])
    two = get(live, model=MODEL, profile="interactive", lengths="512:256", hardware="h100x2")
    assert [(i["hardware"], i["gpu_count"]) for i in two["items"]] == [("h100", 2)]
    vllm = get(live, model=MODEL, profile="interactive", lengths="512:256", engine="vllm",
               quantization="bf16")
    assert vllm["items"] and all(i["engine"] == "vllm" for i in vllm["items"])
    capped = get(live, model=MODEL, profile="interactive", lengths="512:256", demand_rps=10,
                 max_gpus=4, max_usd_per_hour=12)
    for item in capped["items"]:
        assert item["serving"]["gpus"] <= 4 and item["serving"]["usd_per_hour_on_demand"] <= 12
    assert capped["matching"] == len(capped["items"]) < capped["ranked"]
    one = get(live, model=MODEL, profile="interactive", lengths="512:256", limit=1)
    assert len(one["items"]) == 1 and one["items"][0]["rank"] == 1


def test_filters_that_leave_nothing_answer_200_with_the_reason(live):
    body = get(live, model=MODEL, profile="interactive", lengths="512:256", demand_rps=50,
               max_usd_per_hour=0.5)
    assert body["items"] == [] and "max_usd_per_hour=0.5 leaves 0" in body["reason"]
    body = get(live, model=MODEL, profile="interactive", lengths="512:256", hardware="l4",
               engine="vllm")
    assert body["items"] == [] and "matches the hardware, engine" in body["reason"]


@pytest.mark.parametrize("params, status, param, fragments", [
    ({"profile": "interactive", "lengths": "128:128"}, 422, "model", ["missing parameter model"]),
    ({"model": "nope", "profile": "interactive", "lengths": "128:128"}, 404, "model",
     ["known models: org/model-a"]),
    ({"model": MODEL, "profile": "nope", "lengths": "128:128"}, 404, "profile",
     ["unknown profile", "interactive"]),
    ({"model": MODEL, "profile": "interactive"}, 422, "lengths",
     ["missing parameter lengths", "128:128 (128 in / 128 out)"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "chat"}, 404, "lengths",
     ["unknown length profile 'chat'", "512:256"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "input_tokens": 100,
      "output_tokens": 100}, 422, "lengths", ["not both"]),
    ({"model": MODEL, "profile": "interactive", "input_tokens": 100}, 422, "output_tokens",
     ["missing parameter output_tokens"]),
    ({"model": MODEL, "profile": "interactive", "input_tokens": 20000, "output_tokens": 256},
     422, "input_tokens", ["outside every measured length profile", "nearest is 512:256",
                           "lengths=512:256"]),
    ({"model": MODEL, "profile": "interactive", "input_tokens": 512, "output_tokens": 4000},
     422, "output_tokens", ["outside every measured length profile"]),
    ({"model": MODEL, "profile": "interactive", "input_tokens": 0, "output_tokens": 10},
     422, "input_tokens", ["greater than 0"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "demand_rps": 0},
     422, "demand_rps", ["greater than 0"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "demand_rps": -3},
     422, "demand_rps", ["greater than 0"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "demand_rps": "lots"},
     422, "demand_rps", ["not a number"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "hardware": "tpu"},
     404, "hardware", ["unknown hardware 'tpu'", "h100"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "engine": "x"},
     404, "engine", ["vllm"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "max_gpus": 0},
     422, "max_gpus", ["at least 1"]),
    # Found by tests/catalog/test_fuzz_api.py: these answered 500 (a 300-digit replica count,
    # a 30-digit filter echoed back: JSON encoders refuse integers past 64 bits).
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "demand_rps": 1e300},
     422, "demand_rps", ["at most 1e+09"]),
    ({"model": MODEL, "profile": "interactive", "lengths": "128:128", "max_gpus": 10**29},
     422, "max_gpus", ["at most"]),
    ({"model": MODEL, "profile": "interactive", "input_tokens": 1e30, "output_tokens": 1},
     422, "input_tokens", ["at most"]),
])
def test_bad_input_is_a_4xx_naming_the_parameter(live, params, status, param, fragments):
    error(live, status, param, *fragments, **params)


def test_largest_demand_and_limits_still_answer(live):
    body = get(live, model=MODEL, profile="interactive", lengths="512:256",
               demand_rps=MAX_DEMAND_RPS)
    assert body["items"]
    for item in body["items"]:
        assert item["serving"]["replicas"] == math.ceil(MAX_DEMAND_RPS / item["capacity"]["rps"])
    capped = get(live, model=MODEL, profile="interactive", lengths="512:256", demand_rps=1,
                 max_gpus=MAX_GPUS, max_usd_per_hour=MAX_USD_PER_HOUR)
    assert capped["filters"]["max_gpus"] == MAX_GPUS and capped["items"]


def test_curves_are_the_measured_levels_with_intervals(live):
    dep = "model-a-h100x1-vllm-bf16"
    body = get(live, "/v1/curves", deployment=dep, lengths="512:256")
    assert body["deployment"] == dep and body["hardware"] == "h100" and body["gpu_count"] == 1
    [curve] = body["lengths"]
    levels = curve["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2, 4, 8, 16, 32, 64]
    for lv in levels:
        assert lv["ttft_p99_ms_lo"] <= lv["ttft_p99_ms_hi"] and lv["n"] == lv["n_ok"] == 200
        assert lv["requests_per_s"] > 0 and lv["load"] == "concurrency"
    assert {c["profile"] for c in curve["capacity"]} == {"interactive", "server", "offline",
                                                        "cost-saver"}
    everything = get(live, "/v1/curves", deployment=dep)
    assert [c["lengths"] for c in everything["lengths"]] == ["128:128", "512:256"]
    error(live, 404, "deployment", "unknown deployment", path="/v1/curves", deployment="nope")
    error(live, 404, "lengths", "128:128, 512:256", path="/v1/curves", deployment=dep,
          lengths="chat")


def test_snapshot_built_before_this_change_answers_503_saying_how_to_rebuild(serve, tmp_path,
                                                                               tables):
    configs, _ = tables
    write_snapshot(configs, tmp_path / "old")  # no deployment tables: as before this change
    old = serve(tmp_path / "old")
    for path, params in (("/v1/recommend", {"model": MODEL, "profile": "interactive",
                                            "lengths": "128:128"}),
                         ("/v1/curves", {"deployment": "model-a-h100x1-vllm-bf16"})):
        r = old.client.get(path, params=params)
        assert r.status_code == 503, r.text
        message = r.json()["error"]
        assert "dagster asset materialize --select model_catalog" in message
        assert "make demo" in message
    assert old.client.get("/v1/catalog", params={"model": MODEL}).status_code == 200
    page = old.client.get("/")  # the page asks /v1/recommend: it says the same
    assert page.status_code == 503 and "--select model_catalog" in page.text
