"""Quality columns from stored probe runs (pure), the stored form, and the deployment hook."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from bench.quality import (
    ProbeRecord,
    ProbeRun,
    load_probe_set,
    probe_deployment,
    quality_path,
    run_probe,
)
from bench.quality_compare import compare, compare_model, kl_top, perplexity


def rec(item: str, kind: str, pos: int, token: str, lp: float | None,
        top: dict[str, float] | None = None) -> ProbeRecord:
    top = top or {}
    return ProbeRecord(item, kind, pos, token, lp, list(top), list(top.values()))


def make_run(greedy: list[str], passage_lp: float = -1.0, **kw) -> ProbeRun:
    records = [rec("p", "passage", 0, "a", None), rec("p", "passage", 1, "b", passage_lp,
                                                       {"b": passage_lp, "c": -2.0})]
    records += [rec("q", "continuation", i, t, -0.5, {t: -0.5, "z": -1.5})
                for i, t in enumerate(greedy)]
    return ProbeRun("quality-v1", "m", records=records, **kw)


def test_a_run_against_itself_loses_nothing():
    run = make_run(["x", "y", "z"])
    r = compare(run, run, "fp32")
    assert (r.status, r.perplexity_ratio, r.agreement, r.kl) == ("ok", 1.0, 1.0, 0.0)
    assert r.perplexity == pytest.approx(math.e) and r.kl_positions == 4


def test_divergence_counts_agreement_and_kl_up_to_it():
    ref, run = make_run(["x", "y", "z", "w"]), make_run(["x", "v", "z", "w"], passage_lp=-1.5)
    r = compare(run, ref, "fp32")
    assert r.agreement == 0.25  # one token of four before the divergence
    assert r.kl_positions == 1 + 2  # the passage position, then "x" and the diverging one
    assert r.perplexity_ratio == pytest.approx(math.exp(0.5))
    assert r.kl > 0


def test_kl_over_the_union_floors_missing_tokens():
    ref = rec("q", "continuation", 0, "a", math.log(0.5), {"a": math.log(0.5),
                                                           "b": math.log(0.25)})
    got = rec("q", "continuation", 0, "a", math.log(0.5), {"a": math.log(0.5),
                                                           "c": math.log(0.25)})
    # Each side: a 0.5, its listed other 0.25, the unlisted one floored at 0.25; so 1/2, 1/4, 1/4
    # against 1/2, 1/4, 1/4 with b and c swapped.
    p = {"a": 0.5, "b": 0.25, "c": 0.25}
    q = {"a": 0.5, "b": 0.25, "c": 0.25}
    want = sum(p[t] * math.log(p[t] / q[t]) for t in p)
    assert kl_top(ref, got) == pytest.approx(want) == 0.0
    got.top_logprobs[1] = math.log(0.125)  # c less likely, b floored lower too
    assert kl_top(ref, got) > 0


def test_not_comparable_runs_say_why():
    ref = make_run(["x"])
    other = make_run(["x"])
    other.records[1].token = "B"
    assert compare(other, ref, "fp32").status == "incomparable"
    skipped = ProbeRun("quality-v1", "m", status="skipped", status_reason="no logprobs")
    r = compare(skipped, ref, "fp32")
    assert r.status == "skipped" and math.isnan(r.agreement)


def test_parquet_round_trip_keeps_a_skipped_runs_status():
    for run in (make_run(["x", "y"]), ProbeRun("quality-v1", "m", status="skipped",
                                                status_reason="HTTP 400")):
        assert ProbeRun.from_table(run.to_table()) == run


def test_the_reference_is_the_most_precise_ok_deployment():
    runs = {"a-int8": make_run(["x", "v"]), "b-bf16": make_run(["x", "y"]),
            "c-fp32": ProbeRun("quality-v1", "m", status="skipped")}
    out = compare_model(runs, {"a-int8": "int8", "b-bf16": "bf16", "c-fp32": "fp32"})
    assert {r.reference for r in out.values()} == {"b-bf16"}
    assert out["a-int8"].agreement == 0.5 and out["c-fp32"].status == "skipped"


def fake_server(refuse_ids: bool, logprobs: bool = True) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if refuse_ids and "return_tokens_as_token_ids" in body:
            return httpx.Response(400, json={"error": {"message": "unknown field"}})
        if not logprobs and body.get("logprobs") is not None:
            return httpx.Response(400, json={"error": {"message": "logprobs unsupported"}})
        toks = ["token_id:1", "token_id:2"] if not refuse_ids else ["a", "b"]
        lp = {"tokens": toks, "token_logprobs": [None if body.get("echo") else -1.0, -1.0],
              "top_logprobs": [None if body.get("echo") else {toks[0]: -1.0}, {toks[1]: -1.0}],
              "text_offset": [0, 1]}
        return httpx.Response(200, json={"choices": [{"text": "", "logprobs": lp}],
                                         "usage": {"prompt_tokens": 1}})
    return httpx.MockTransport(handle)


def test_probe_falls_back_to_token_texts_and_skips_without_logprobs():
    probe = load_probe_set()
    ids = run_probe("http://x/v1", "m", probe, transport=fake_server(False))
    texts = run_probe("http://x/v1", "m", probe, transport=fake_server(True))
    none = run_probe("http://x/v1", "m", probe, transport=fake_server(True, logprobs=False))
    assert (ids.token_kind, texts.token_kind) == ("id", "text")
    assert len(ids.records) == len(probe.passages) + 2 * len(probe.prompts)
    assert none.status == "skipped" and "logprobs unsupported" in none.status_reason
    assert math.isnan(perplexity(none))


class DictStore:
    def __init__(self):
        self.files: dict = {}

    def exists(self, relpath: str) -> bool:
        return relpath in self.files

    def write_parquet(self, relpath: str, table) -> str:
        self.files[relpath] = table
        return relpath


def test_hook_writes_once_per_deployment(monkeypatch):
    import bench.quality as quality

    calls = []
    monkeypatch.setattr(quality, "run_probe", lambda *a, **kw: calls.append(kw) or make_run([]))
    store = DictStore()
    path = quality_path("dep-1")
    assert path == "runs/quality/deployment=dep-1/quality-v1.parquet"
    assert probe_deployment(store, "dep-1", "http://x/v1", "m", log=lambda _: None) == path
    assert probe_deployment(store, "dep-1", "http://x/v1", "m", log=lambda _: None) is None
    assert len(calls) == 1 and calls[0]["deployment"] == "dep-1"
