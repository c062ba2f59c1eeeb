"""The catalog API over real HTTP (uvicorn on 127.0.0.1): every endpoint and bad-input rule."""

from __future__ import annotations

import re
import threading
import time

import pytest

from catalog.params import PAGE_PARAMS
from catalog.snapshots import latest_id, write_snapshot

KEY = "test-key-123"


@pytest.fixture
def live(serve, store):
    return serve(store, api_keys=[KEY])


@pytest.fixture
def model(catalog_df):
    return sorted(catalog_df["model"].unique())[1]


def group(catalog_df, model, profile):
    g = catalog_df[(catalog_df["model"] == model) & (catalog_df["profile"] == profile)]
    return g[g["rank"].notna()].sort_values("rank")


def assert_error(r, status, *fragments, param=None):
    assert r.status_code == status, r.text
    body = r.json()
    for fragment in fragments:
        assert fragment in body["error"], body
    if param is not None:
        assert body.get("parameter") == param, body


# --- no catalog yet ------------------------------------------------------------------------

def test_no_catalog_is_503_with_how_to(serve, tmp_path):
    live = serve(tmp_path / "empty")
    for path in ("/v1/models", "/v1/catalog", "/v1/recommend?model=m&profile=p",
                 "/v1/pareto?model=m&profile=p", "/v1/curves?deployment=d"):
        assert_error(live.client.get(path), 503, "no catalog snapshot", "model_catalog")
    health = live.client.get("/healthz")
    assert health.status_code == 503 and health.json()["snapshot"] is None
    page = live.client.get("/")
    assert page.status_code == 503 and "model_catalog" in page.text
    # Profiles and hardware still answer, from configs/.
    assert {p["name"] for p in live.client.get("/v1/profiles").json()["profiles"]} >= {"interactive"}
    assert any(h["name"] == "h100" for h in live.client.get("/v1/hardware").json()["hardware"])


# --- read endpoints ------------------------------------------------------------------------

def test_healthz_models_profiles_hardware(live, store, catalog_df):
    health = live.client.get("/healthz").json()
    assert health["status"] == "ok" and health["snapshot"] == latest_id(store)
    assert health["rows"] == len(catalog_df)
    response = live.client.get("/v1/models")
    assert response.headers["server-timing"].startswith("app;dur=")
    models = response.json()["models"]
    assert [m["model"] for m in models] == sorted(catalog_df["model"].unique())
    first = models[0]
    assert first["configs"] == catalog_df[catalog_df["model"] == first["model"]]["config_id"].nunique()
    profiles = live.client.get("/v1/profiles").json()["profiles"]
    assert profiles == catalog_df.attrs["profiles"]
    hardware = live.client.get("/v1/hardware").json()["hardware"]
    assert {"name", "on_demand_usd_per_hour", "spot_usd_per_hour"} <= set(hardware[0])
    docs = live.client.get("/docs")
    assert docs.status_code == 200
    paths = live.client.get("/openapi.json").json()["paths"]
    assert {"/v1/models", "/v1/profiles", "/v1/hardware", "/v1/catalog", "/v1/recommend",
            "/v1/curves", "/v1/pareto", "/healthz", "/v1/benchmark-requests",
            "/v1/benchmark-requests/{request_id}", "/"} <= set(paths)


def test_catalog_filters_sort_and_cursor_pagination(live, catalog_df, model):
    expected = catalog_df[(catalog_df["model"] == model) & (catalog_df["hardware"] == "h100")]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"model": model, "hardware": "h100", "sort": "-output_tokens_per_s_per_gpu",
                  "limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = live.client.get("/v1/catalog", params=params).json()
        assert body["total"] == len(expected)
        seen += body["rows"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    keys = [(r["config_id"], r["profile"]) for r in seen]
    assert len(keys) == len(set(keys)) == len(expected) and pages == -(-len(expected) // 7)
    tput = [r["output_tokens_per_s_per_gpu"] for r in seen]
    finite = [t for t in tput if t is not None]
    assert finite == sorted(finite, reverse=True) and tput[: len(finite)] == finite
    one = live.client.get("/v1/catalog", params={"model": model, "profile": "interactive",
                                                 "engine": "vllm", "quantization": "int8",
                                                 "sort": "cost_per_mtok_on_demand"}).json()
    rows = one["rows"]
    assert rows and all(r["engine"] == "vllm" and r["quantization"] == "int8"
                        and r["profile"] == "interactive" for r in rows)
    costs = [r["cost_per_mtok_on_demand"] for r in rows if r["cost_per_mtok_on_demand"] is not None]
    assert costs == sorted(costs)
    everything = live.client.get("/v1/catalog", params={"limit": 1000}).json()
    assert everything["total"] == len(catalog_df)
    ranks = live.client.get("/v1/catalog", params={"model": model, "profile": "server"}).json()["rows"]
    assert [r["rank"] for r in ranks[:5]] == [1, 2, 3, 4, 5]


# /v1/recommend and /v1/curves answer with deployments: tests/catalog/test_recommend_api.py.


def test_pareto_endpoint(live, catalog_df, model):
    body = live.client.get("/v1/pareto", params={"model": model, "profile": "offline"}).json()
    g = catalog_df[(catalog_df["model"] == model) & (catalog_df["profile"] == "offline")]
    assert sorted(i["config_id"] for i in body["items"]) == sorted(g[g["pareto"]]["config_id"])
    tput = [i["output_tokens_per_s_per_gpu"] for i in body["items"]]
    assert tput == sorted(tput, reverse=True) and body["count"] == len(tput) > 0


def test_html_page(live, model):
    page = live.client.get("/", params={"model": model, "profile": "server", "demand_rps": 3})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert model in page.text and 'value="3"' in page.text
    # A form field for every parameter the page passes on to /v1/recommend.
    for param in PAGE_PARAMS:
        assert f'name="{param.name}"' in page.text, param.name
    # Offline: everything it loads is a relative URL the API itself serves.
    assert "http://" not in page.text and "https://" not in page.text
    assets = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert {"static/page/page.js", "static/page/page.css"} <= set(assets)
    for asset in [*assets, "static/page/chart.js"]:  # page.js imports chart.js
        assert live.client.get("/" + asset).status_code == 200, asset
    assert live.client.get("/").status_code == 200  # defaults: first model, profile, lengths
    missing = live.client.get("/", params={"model": "nope"})
    assert missing.status_code == 404 and "org/model-0" in missing.text
    bad = live.client.get("/", params={"demand_rps": "lots"})
    assert bad.status_code == 422 and "demand_rps" in bad.text


def test_docs_work_offline(live):
    docs = live.client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    urls = re.findall(r'(?:src|href)="([^"]+)"|url: \'([^\']+)\'', docs.text)
    urls = [a or b for a, b in urls]
    assert len(urls) >= 3  # script, stylesheet, schema
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert live.client.get(url).status_code == 200, url
    assert "http://" not in docs.text and "https://" not in docs.text


def test_unknown_routes_and_methods_answer_the_error_shape(live):
    for response, status in ((live.client.get("/v2/nothing"), 404),
                             (live.client.put("/v1/recommend"), 405)):
        assert response.status_code == status
        body = response.json()
        assert set(body) == {"error"} and "/docs" in body["error"], body
    assert "GET" in live.client.put("/v1/recommend").headers["allow"]


def test_openapi_declares_every_status_and_the_request_body(live):
    spec = live.client.get("/openapi.json").json()
    expected = {
        ("get", "/healthz"): {"200", "503"},
        ("get", "/v1/models"): {"200", "422", "503"},
        ("get", "/v1/profiles"): {"200", "422", "503"},
        ("get", "/v1/hardware"): {"200", "422", "503"},
        ("get", "/v1/catalog"): {"200", "404", "410", "422", "503"},
        ("get", "/v1/recommend"): {"200", "404", "422", "503"},
        ("get", "/v1/curves"): {"200", "404", "422", "503"},
        ("get", "/v1/pareto"): {"200", "404", "422", "503"},
        ("post", "/v1/benchmark-requests"): {"201", "400", "401", "413", "422"},
        ("get", "/v1/benchmark-requests/{request_id}"): {"200", "401", "404", "422"},
        ("get", "/"): {"200", "404", "422", "503"},
    }
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for (method, path), statuses in expected.items():
        answers = spec["paths"][path][method]["responses"]
        assert set(answers) == statuses, (method, path)
        for status in statuses - {"200", "201"}:
            if path not in ("/", "/healthz"):  # the page answers HTML; /healthz its own shape
                assert answers[status]["content"]["application/json"]["schema"] == error_ref
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    body = spec["paths"]["/v1/benchmark-requests"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert body["required"] and schema["required"] == ["model"]
    assert schema["additionalProperties"] is False


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("path, params, status, fragment, param", [
    ("/v1/recommend", {"model": "nope", "profile": "server"}, 404, "known models: org/model-0", "model"),
    ("/v1/recommend", {"model": "MODEL", "profile": "nope"}, 404, "known profiles: cost-saver", "profile"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "hardware": "tpu"}, 404, "unknown hardware", "hardware"),
    ("/v1/pareto", {"model": "nope", "profile": "server"}, 404, "known models", "model"),
    ("/v1/pareto", {"model": "MODEL", "profile": "nope"}, 404, "known profiles", "profile"),
    ("/v1/catalog", {"model": "nope"}, 404, "known models", "model"),
    ("/v1/catalog", {"hardware": "tpu"}, 404, "h100", "hardware"),
    ("/v1/catalog", {"engine": "nope"}, 404, "vllm", "engine"),
    ("/v1/catalog", {"quantization": "int3"}, 404, "int8", "quantization"),
    ("/v1/catalog", {"profile": "nope"}, 404, "known profiles", "profile"),
    ("/v1/recommend", {"profile": "server"}, 422, "model", "model"),
    ("/v1/pareto", {"model": "MODEL"}, 422, "profile", "profile"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "demand_rps": "abc"}, 422, "demand_rps", "demand_rps"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "demand_rps": "-5"}, 422, "greater than 0", "demand_rps"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "demand_rps": "nan"}, 422, "finite", "demand_rps"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "max_usd_per_hour": "inf"}, 422, "finite", "max_usd_per_hour"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "max_gpus": "0"}, 422, "max_gpus", "max_gpus"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "limit": "0"}, 422, "limit", "limit"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "lengths": "128:128", "limit": "1e9"}, 422, "limit", "limit"),
    ("/v1/recommend", {"model": "MODEL", "profile": "server", "weights": "ttft_p99_ms:1"}, 422, "unknown parameter", "weights"),
    ("/v1/curves", {}, 422, "deployment", "deployment"),
    ("/v1/curves", {"deployment": "nope"}, 404, "known deployments", "deployment"),
    ("/v1/catalog", {"limit": "0"}, 422, "limit", "limit"),
    ("/v1/catalog", {"limit": "x"}, 422, "limit", "limit"),
    ("/v1/catalog", {"limit": "5000"}, 422, "limit", "limit"),
    ("/v1/catalog", {"sort": "bogus"}, 422, "sort", "sort"),
    ("/v1/catalog", {"sort": "-"}, 422, "sort", "sort"),
    ("/v1/catalog", {"cursor": "!!!"}, 422, "cursor", "cursor"),
    ("/v1/catalog", {"cursor": "eyJhIjogMX0"}, 422, "cursor", "cursor"),
    ("/v1/models", {"x": "1"}, 422, "unknown parameter", "x"),
])
def test_bad_input(shared_live, model, path, params, status, fragment, param):
    params = {k: (model if v == "MODEL" else v) for k, v in params.items()}
    assert_error(shared_live.client.get(path, params=params), status, fragment, param=param)


def test_cursor_for_another_query_or_snapshot(live, store, catalog_df, model):
    first = live.client.get("/v1/catalog", params={"model": model, "limit": 2}).json()
    cursor = first["next_cursor"]
    assert_error(live.client.get("/v1/catalog", params={"model": model, "limit": 2, "sort": "ttft_p99_ms",
                                                        "cursor": cursor}), 422, "different query")
    write_snapshot(catalog_df, store)
    live.app.state.holder.refresh()
    assert_error(live.client.get("/v1/catalog", params={"model": model, "limit": 2, "cursor": cursor}),
                 410, "start again without a cursor", param="cursor")


def test_no_500_for_odd_input(live, model, deployment_tables):
    deployment = deployment_tables["deployments"]["deployment"].iloc[0]
    odd = ["", " ", "%00", "a" * 5000, "'; drop table x; --", "../../etc/passwd", "💥", "-1e309"]
    for value in odd:
        for path, key in [("/v1/catalog", "model"), ("/v1/catalog", "sort"), ("/v1/catalog", "cursor"),
                          ("/v1/recommend", "model"), ("/v1/recommend", "lengths"),
                          ("/v1/recommend", "input_tokens"), ("/v1/recommend", "demand_rps"),
                          ("/v1/curves", "deployment"), ("/v1/curves", "lengths"),
                          ("/v1/pareto", "profile"),
                          ("/v1/benchmark-requests/" + value, None), ("/", "model")]:
            params = ({} if path == "/v1/catalog" else {"deployment": deployment}
                      if path == "/v1/curves" else {"model": model, "profile": "server"})
            if key:
                params[key] = value
            r = live.client.get(path, params=params)
            assert r.status_code < 500, (path, key, value, r.text)


# --- benchmark requests --------------------------------------------------------------------

def test_benchmark_request_auth_create_get(live):
    body = {"model": "org/new-model", "matrix_overrides": {"quantizations": ["int8"]}}
    assert_error(live.client.post("/v1/benchmark-requests", json=body), 401, "missing API key",
                 "SERVECAT_API_KEYS")
    r = live.client.post("/v1/benchmark-requests", json=body, headers={"Authorization": "Bearer nope"})
    assert_error(r, 401, "wrong API key")
    assert r.headers["www-authenticate"] == "Bearer"
    created = live.client.post("/v1/benchmark-requests", json=body,
                               headers={"Authorization": f"Bearer {KEY}"})
    assert created.status_code == 201, created.text
    req = created.json()
    assert req["status"] == "pending" and req["matrix_overrides"] == {"quantizations": ["int8"]}
    again = live.client.post("/v1/benchmark-requests", json={"model": "/local/path"},
                             headers={"X-API-Key": KEY})
    assert again.status_code == 201
    got = live.client.get(f"/v1/benchmark-requests/{req['id']}", headers={"X-API-Key": KEY}).json()
    assert got == req
    # The Dagster sensor's side of the store sees it and moves it along.
    live.app.state.requests.set_status(req["id"], "rejected", reason="model not found on the Hub")
    got = live.client.get(f"/v1/benchmark-requests/{req['id']}", headers={"X-API-Key": KEY}).json()
    assert got["status"] == "rejected" and got["reason"] == "model not found on the Hub"
    assert_error(live.client.get("/v1/benchmark-requests/br-nope", headers={"X-API-Key": KEY}),
                 404, "not found")


def test_api_keys_from_environment(serve, store, monkeypatch):
    live = serve(store)
    monkeypatch.delenv("SERVECAT_API_KEYS", raising=False)
    assert_error(live.client.post("/v1/benchmark-requests", json={"model": "m"},
                                  headers={"X-API-Key": "k1"}), 401, "set SERVECAT_API_KEYS")
    monkeypatch.setenv("SERVECAT_API_KEYS", "k1, k2")
    r = live.client.post("/v1/benchmark-requests", json={"model": "m"}, headers={"X-API-Key": "k2"})
    assert r.status_code == 201


@pytest.mark.parametrize("content, fragment", [
    (b"{not json", "invalid body"),
    (b'{"matrix_overrides": {}}', "model"),
    (b'{"model": ""}', "model"),
    (b'{"model": "m", "surprise": 1}', "surprise"),
    (b'{"model": "m", "matrix_overrides": [1]}', "matrix_overrides"),
    (b"[]", "invalid body"),
])
def test_benchmark_request_bad_body(shared_live, content, fragment):
    r = shared_live.client.post("/v1/benchmark-requests", content=content,
                         headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert_error(r, 422, fragment, param="body")


def test_body_over_limit_is_413(live):
    big = {"model": "m", "matrix_overrides": {"x": "y" * 70_000}}
    r = live.client.post("/v1/benchmark-requests", json=big, headers={"X-API-Key": KEY})
    assert_error(r, 413, "limit")

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(100):
            yield b"x" * 1024

    r = live.client.post("/v1/benchmark-requests", content=chunks(), headers={"X-API-Key": KEY})
    assert_error(r, 413, "limit")
    assert live.client.get("/healthz").status_code == 200


# --- snapshot swap -------------------------------------------------------------------------

def test_snapshot_swap_under_concurrent_reads(serve, tmp_path, catalog_df, deployment_tables,
                                              model):
    """Readers hammer the API while new snapshots land; every answer comes whole from one snapshot."""
    root = tmp_path / "store"
    marker: dict[str, str] = {}

    def publish(k: int) -> None:
        df = catalog_df.copy()
        df["servecat_version"] = f"v{k}"
        df.attrs = catalog_df.attrs
        write_snapshot(df, root, tables=deployment_tables)
        marker[latest_id(root)] = f"v{k}"

    publish(0)
    live = serve(root, poll_s=0.02)
    errors: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        import httpx

        with httpx.Client(base_url=live.url, timeout=20) as client:
            while not stop.is_set():
                r = client.get("/v1/catalog", params={"model": model, "limit": 200})
                body = r.json()
                if r.status_code != 200 or r.headers["x-catalog-snapshot"] != body["snapshot"]:
                    errors.append(r.text[:200])
                    continue
                versions = {row["servecat_version"] for row in body["rows"]}
                if versions != {marker.get(body["snapshot"])} or body["total"] != (
                        catalog_df["model"] == model).sum():
                    errors.append(f"{body['snapshot']}: {versions}")
                seen.add(body["snapshot"])
                r = client.get("/v1/recommend", params={"model": model, "profile": "server",
                                                        "lengths": "128:128"})
                if r.status_code != 200 or r.headers["x-catalog-snapshot"] != r.json()["snapshot"]:
                    errors.append(r.text[:200])

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for k in range(1, 6):
        time.sleep(0.25)
        publish(k)
    deadline = time.monotonic() + 10
    while live.client.get("/healthz").json()["snapshot"] != latest_id(root):
        assert time.monotonic() < deadline, "the API never swapped to the newest snapshot"
        time.sleep(0.05)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:5]
    assert len(seen) >= 3 and latest_id(root) in seen
