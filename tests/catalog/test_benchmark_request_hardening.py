"""Hostile benchmark requests over real HTTP: bad overrides are 4xx with nothing saved, GET needs
the key and never shows any part of it, and no request may name a file on the server."""

from __future__ import annotations

import hashlib

import pytest

from catalog.benchmark_requests import BenchmarkRequests

KEY = "secret-key-4711"
AUTH = {"X-API-Key": KEY}
WORKLOADS = {"lengths": [{"name": "chat", "input_tokens": 16, "output_tokens": 4}],
             "loads": [{"concurrency": [1]}], "requests": 4}


@pytest.fixture
def live(serve, tmp_path):
    return serve(tmp_path / "store", api_keys=[KEY])


def post(live, body: dict | None = None, content: bytes | None = None):
    if content is not None:
        return live.client.post("/v1/benchmark-requests", content=content,
                                headers={**AUTH, "Content-Type": "application/json"})
    return live.client.post("/v1/benchmark-requests", json=body, headers=AUTH)


def assert_refused(live, r, status: int, *fragments: str, param: str | None = None) -> None:
    assert r.status_code == status, r.text
    for fragment in fragments:
        assert fragment in r.json()["error"], r.json()
    if param is not None:
        assert r.json()["parameter"] == param, r.json()
    assert live.app.state.requests.list() == []  # nothing saved


@pytest.mark.parametrize(("body", "fragments"), [
    ({"model": "   "}, ["model: must be a non-empty string"]),
    ({"model": "\t\n"}, ["model: must be a non-empty string"]),
    ({"model": "--help"}, ["model: '--help' must not start with '-'"]),
    ({"model": " -x"}, ["must not start with '-'"]),
    ({"model": "org/m\u0000"}, ["model: must not contain control characters"]),
], ids=["spaces", "whitespace", "option", "padded-option", "nul"])
def test_bad_model_is_422_and_nothing_saved(live, body, fragments):
    assert_refused(live, post(live, body), 422, "invalid body", *fragments, param="body")


BAD_OVERRIDES = [
    ({"workloads": {**WORKLOADS, "requests": 10**30}}, "matrix_overrides.workloads.requests",
     "integer 1000000000000000000000000000000 is too large"),
    ({"model": {"layers": -(10**40)}}, "matrix_overrides.model.layers", "is too large"),
    ({"engines": [{"name": "builtin", "args": {"max_num_seqs": [2**64]}}]},
     "matrix_overrides.engines[0].args.max_num_seqs[0]", "is too large"),
    ({"quantization": ["int8"]}, "matrix_overrides.quantization", "unknown field"),
    ({"quantizations": ["int3"]}, "matrix_overrides.quantizations[0]", "'int3' is not one of"),
    ({"workloads": {"requests": 4}}, "matrix_overrides.workloads.lengths",
     "required field is missing"),
    ({"hardware": ["a200"]}, "matrix_overrides.hardware[0].name", "unknown hardware 'a200'"),
    ({"memory_utilization": 2}, "matrix_overrides.memory_utilization", "less than or equal to 1"),
    ({"model": "big"}, "matrix_overrides.model", "must be a mapping"),
    ({"extends": "/etc/passwd"}, "matrix_overrides.extends", "refused"),
    ({"extends": "full.yaml"}, "matrix_overrides.extends", "refused"),
    ({"hardware_table": "/etc/hostname"}, "matrix_overrides.hardware_table", "refused"),
    ({"models": [{"id": "/etc"}]}, "matrix_overrides.models", "refused"),
    ({"model": {"id": "/root/.ssh"}}, "matrix_overrides.model.id", "refused"),
    ({"engines": [{"name": "builtin", "args": {"chat_template": ["/etc/passwd"]}}]},
     "matrix_overrides.engines[0].args.chat_template[0]", "refused"),
    ({"engines": [{"name": "builtin", "args": {"tokenizer": ["a", "x/../../etc"]}}]},
     "matrix_overrides.engines[0].args.tokenizer[1]", "refused"),
    ({"engines": [{"name": "builtin", "args": {"dtype": ["--model=/etc"]}}]},
     "matrix_overrides.engines[0].args.dtype[0]", "refused"),
    ({"engines": [{"name": "builtin", "args": {"--port": [1]}}]},
     "matrix_overrides.engines[0].args.--port", "engine arg name"),
]


@pytest.mark.parametrize(("overrides", "field", "why"), BAD_OVERRIDES,
                         ids=[f"{b[1].removeprefix('matrix_overrides.')}-{i}"
                              for i, b in enumerate(BAD_OVERRIDES)])
def test_bad_overrides_are_422_naming_the_field(live, overrides, field, why):
    r = post(live, {"model": "org/m", "matrix_overrides": overrides})
    assert_refused(live, r, 422, f"{field}: ", why, param=field)
    assert "/etc" not in r.json()["error"] and "/root" not in r.json()["error"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_overrides_are_422(live, literal):
    content = b'{"model": "org/m", "matrix_overrides": {"memory_utilization": ' + literal + b"}}"
    assert_refused(live, post(live, content=content), 422,
                   "matrix_overrides.memory_utilization: must be a finite number")


def test_a_huge_grid_is_refused_by_its_size(live):
    # 1000 x 1000 x 2000 engine args x 2 quantizations x 2 template workloads (capacity
    # searches, one config each): counted.
    grid = {"a": list(range(1000)), "b": list(range(1000)), "c": list(range(2000))}
    overrides = {"engines": [{"name": "builtin", "args": grid}]}
    r = post(live, {"model": "org/m", "matrix_overrides": overrides})
    assert_refused(live, r, 422, "matrix_overrides: the matrix has 8,000,000,000 configs "
                                 "(4,000,000,000 deployments x 2 workloads), over the cap of 20,000",
                   param="matrix_overrides")


def test_get_needs_the_key_and_shows_no_part_of_it(live):
    created = post(live, {"model": "org/m", "matrix_overrides": {"workloads": WORKLOADS}})
    assert created.status_code == 201, created.text
    req = created.json()
    fingerprint = "key-sha256:" + hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert req["requested_by"] == fingerprint
    url = f"/v1/benchmark-requests/{req['id']}"
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        r = live.client.get(url, headers=headers)
        assert r.status_code == 401 and req["id"] not in r.text and "org/m" not in r.text
    got = live.client.get(url, headers={"Authorization": f"Bearer {KEY}"})
    assert got.status_code == 200 and got.json() == req
    assert KEY[:4] not in got.text and KEY not in got.text
    assert live.client.get("/v1/benchmark-requests/br-nope").status_code == 401


def test_rows_saved_before_the_fix_still_answer_without_key_parts(live, tmp_path):
    store = BenchmarkRequests(tmp_path / "store")
    legacy = store.create("org/m", requested_by=KEY[:4] + "…")
    poisoned = store.create("org/m", {"workloads": {"requests": 10**30}})
    got = live.client.get(f"/v1/benchmark-requests/{legacy.id}", headers=AUTH)
    assert got.status_code == 200 and got.json()["requested_by"] is None and KEY[:4] not in got.text
    got = live.client.get(f"/v1/benchmark-requests/{poisoned.id}", headers=AUTH)
    assert got.status_code == 200, got.text
    assert got.json()["matrix_overrides"]["workloads"]["requests"] == 10**30
