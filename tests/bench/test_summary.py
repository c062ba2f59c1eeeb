"""Result tables: schemas, Parquet, SLO attainment and goodput, throughput."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.endpoint import Endpoint
from bench.loadgen import run_workload
from bench.profiles import Profile, load_profiles
from bench.schema import REQUEST_SCHEMA, SUMMARY_SCHEMA, summary_schema
from bench.scripted_server import Scenario, scripted_server
from bench.workload import Workload


@pytest.fixture(scope="module")
def result(tokenizer_path):
    with scripted_server(Scenario(ttft_ms=(2, 12), gap_ms=(1, 3), seed=9)) as url:
        w = Workload(concurrency=4, requests=40, input_tokens=20, output_tokens=5,
                     warmup_requests=4)
        return run_workload(Endpoint(url, "m"), w, tokenizer_path)


def test_schemas_and_parquet(result, tmp_path):
    assert result.requests.schema == REQUEST_SCHEMA
    assert list(result.summary) == SUMMARY_SCHEMA.names
    assert {f"slo_attainment__{p.name}" for p in load_profiles()} <= set(result.summary)
    result.write_requests(tmp_path / "r.parquet")
    result.write_summary(tmp_path / "s.parquet")
    assert pq.read_table(tmp_path / "r.parquet").schema == REQUEST_SCHEMA
    assert pq.read_table(tmp_path / "s.parquet").schema == SUMMARY_SCHEMA
    assert result.requests.column("request_index").to_pylist() == list(range(40))  # no warm-up


def test_throughput_and_latency_stats(result):
    t, s = result.requests.to_pandas(), result.summary
    assert s["num_requests"] == s["num_completed"] == 40 and s["error_rate"] == 0
    assert s["duration_s"] == pytest.approx(t.end_s.max() - t.scheduled_s.min())
    assert s["requests_per_s"] == pytest.approx(40 / s["duration_s"])
    assert s["output_tokens_per_s"] == pytest.approx(t.output_tokens.sum() / s["duration_s"])
    assert s["total_tokens_per_s"] == pytest.approx(
        (t.output_tokens.sum() + t.input_tokens.sum()) / s["duration_s"])
    assert s["ttft_p99_ms"] == pytest.approx(np.percentile(t.ttft_ms, 99))
    assert s["e2e_mean_ms"] == pytest.approx(t.e2e_ms.mean())
    assert s["itl_p50_ms"] == pytest.approx(np.percentile(np.concatenate(t.itl_ms.values), 50))
    assert s["target_rate"] is None and s["achieved_rate"] > 0
    assert (t.input_tokens == 20).all() and (t.output_tokens == 5).all()


def test_slo_attainment_and_goodput(result, tokenizer_path):
    t = result.requests.to_pandas()
    cut = float(np.median(t.ttft_ms))
    profiles = [Profile("tight", cut, 1000.0), {"name": "loose", "slo": {"ttft_p99_ms": 1e6, "tpot_p99_ms": 1e6}}]
    from bench.metrics import summarize
    from bench.profiles import as_profile

    s = summarize(result.requests, [as_profile(p) for p in profiles], None, 4)
    assert list(s) == summary_schema(["tight", "loose"]).names
    meets = ((t.ttft_ms <= cut) & (t.tpot_ms <= 1000)).sum()
    assert s["slo_attainment__tight"] == pytest.approx(meets / 40)
    assert s["goodput_rps__tight"] == pytest.approx(meets / s["duration_s"])
    assert s["slo_attainment__loose"] == 1.0
