"""Every fault mode becomes a failed request with its error type; a broken endpoint stops early."""

from __future__ import annotations

import pytest

from bench import errors as E
from bench.endpoint import Endpoint
from bench.errors import EndpointBroken
from bench.loadgen import run_workload
from bench.scripted_server import Scenario, scripted_server
from bench.workload import Workload
from servecat.net import free_port

# request id -> fault, and the error type each must land as.
FAULTS = {
    "1": ("http_400", E.HTTP_4XX),
    "3": ("http_429", E.RATE_LIMITED),
    "5": ("http_500", E.HTTP_5XX),
    "7": ("cut", E.STREAM_CUT),
    "9": ("malformed", E.MALFORMED_SSE),
    "11": ("empty", E.EMPTY_STREAM),
    "13": ("hang", E.TIMEOUT_FIRST_BYTE),
    "15": ("stall", E.TIMEOUT_READ),
    "17": ("error_event", E.SERVER_ERROR_EVENT),
    "19": ("close", E.CONNECTION_ERROR),
}


def test_each_fault_is_a_failed_request_of_its_type(tokenizer_path):
    scenario = Scenario(ttft_ms=(5, 5), gap_ms=(2, 2), faults={k: v[0] for k, v in FAULTS.items()})
    with scripted_server(scenario) as url:
        w = Workload(concurrency=4, requests=40, input_tokens=8, output_tokens=4)
        result = run_workload(Endpoint(url, "m", read_timeout_s=0.5), w, tokenizer_path)
    rows = {r["request_id"]: r for r in result.requests.to_pylist()}
    assert len(rows) == 40  # the run finished
    for rid, (fault, kind) in FAULTS.items():
        assert not rows[rid]["ok"], fault
        assert rows[rid]["error_type"] == kind, (fault, rows[rid]["error_message"])
        assert rows[rid]["error_message"]
        assert rows[rid]["ttft_ms"] is None and rows[rid]["e2e_ms"] is None
    assert rows["5"]["http_status"] == 500 and "http_500" in rows["5"]["error_message"]
    assert all(r["ok"] for rid, r in rows.items() if rid not in FAULTS)
    s = result.summary
    assert s["num_failed"] == len(FAULTS) and s["error_rate"] == pytest.approx(len(FAULTS) / 40)
    assert s["early_stopped"] is False
    assert s["ttft_p50_ms"] is not None  # failed requests are left out of latencies


def test_total_timeout(tokenizer_path):
    with scripted_server(Scenario(ttft_ms=(5, 5), faults={"0": "stall"})) as url:
        w = Workload(concurrency=1, requests=2, input_tokens=8, output_tokens=4)
        ep = Endpoint(url, "m", read_timeout_s=10, total_timeout_s=0.5)
        result = run_workload(ep, w, tokenizer_path)
    assert result.requests.column("error_type").to_pylist() == [E.TIMEOUT_TOTAL, None]


def test_connection_refused_stops_early(tokenizer_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    w = Workload(concurrency=2, requests=200, input_tokens=8, output_tokens=4)
    with pytest.raises(EndpointBroken, match="looks broken: 11 of the first 11") as info:
        run_workload(Endpoint(url, "m"), w, tokenizer_path)
    partial = info.value.result
    assert 11 <= partial.requests.num_rows < 200
    assert set(partial.requests.column("error_type").to_pylist()) == {E.CONNECTION_REFUSED}
    assert partial.summary["early_stopped"] is True and partial.summary["error_rate"] == 1.0


def test_errors_below_threshold_do_not_stop(tokenizer_path):
    # Every other request fails: half of the first 20 is not more than half.
    faults = {str(i): "http_500" for i in range(0, 40, 2)}
    with scripted_server(Scenario(faults=faults)) as url:
        w = Workload(concurrency=1, requests=40, input_tokens=8, output_tokens=2)
        result = run_workload(Endpoint(url, "m"), w, tokenizer_path)
    assert result.summary["error_rate"] == 0.5 and result.summary["num_requests"] == 40


def test_broken_during_warmup(tokenizer_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    w = Workload(concurrency=4, requests=10, warmup_requests=30, input_tokens=8, output_tokens=4)
    with pytest.raises(EndpointBroken) as info:
        run_workload(Endpoint(url, "m"), w, tokenizer_path)
    assert info.value.result.requests.num_rows == 0  # nothing measured
    assert info.value.result.summary["num_requests"] == 0


def test_api_key_from_environment_is_sent_not_shown(monkeypatch):
    monkeypatch.setenv("SERVECAT_TEST_KEY", "sk-secret")
    ep = Endpoint("http://127.0.0.1:1/v1", "m", api_key_env="SERVECAT_TEST_KEY")
    assert ep.request_headers()["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(ep)
    monkeypatch.delenv("SERVECAT_TEST_KEY")
    assert "Authorization" not in ep.request_headers()


def test_short_run_of_a_dead_endpoint_is_broken(tokenizer_path):
    # Fewer than 20 requests: the threshold is over all of them.
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointBroken, match="3 of the first 3"):
        run_workload(Endpoint(url, "m"), Workload(concurrency=1, requests=4), tokenizer_path)
