"""The queueing scripted server against a FIFO C-server queue computed on its own (bench.queueing)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.endpoint import Endpoint
from bench.loadgen import run_workload
from bench.queueing import fifo_waits, poisson_pattern, queue_capacity, wait_quantile
from bench.scripted_server import Scenario, script_for, scripted_server
from bench.workload import Workload


def test_one_server_mean_wait_is_pollaczek_khinchine():
    # M/D/1: mean wait = rho S / (2 (1 - rho)); an independent check of the recursion.
    service, rho = 0.05, 0.5
    pattern = poisson_pattern(20_000, reps=8, seed=3)
    waits = fifo_waits(pattern / (rho / service), service, 1)[:, 2000:]
    assert waits.mean() == pytest.approx(rho * service / (2 * (1 - rho)), rel=0.05)


def test_waits_grow_with_rate_and_capacity_sits_on_the_limit():
    service, servers = 0.05, 4
    q = wait_quantile([10.0, 30.0, 60.0, 75.0], servers, service)
    assert q[0] == 0.0 and np.all(np.diff(q) > 0)
    cap = queue_capacity(service, servers, service)
    below, above = wait_quantile([cap * 0.99, cap * 1.01], servers, service)
    assert below <= service < above
    assert 0.5 * servers / service < cap < servers / service  # below saturation, well above 0


def test_queueing_server_ttft_is_the_scripted_ttft_plus_the_fifo_wait(tokenizer_path):
    # Poisson arrivals near saturation on 2 slots: most requests wait. Each TTFT (from the
    # scheduled send) = client delay + the wait the recursion gives on the actual send times +
    # the scripted TTFT. Up to 3 attempts (a few seconds each): a burst of the shared host's
    # noise once put the p95 at 4.17 ms (its ten worst 3.5-21 ms) where quiet runs give ~1 ms.
    for _ in range(3):
        problem = _queue_error(tokenizer_path)
        if not problem:
            break
    assert not problem, problem


def _queue_error(tokenizer_path) -> str | None:
    scenario = Scenario(ttft_ms=(8, 12), gap_ms=(8, 12), slots=2, seed=5)
    w = Workload(load="rate", rate=45.0, arrival="poisson", requests=120, input_tokens=8,
                 output_tokens=4, seed=2)
    with scripted_server(scenario, realtime=True) as url:
        result = run_workload(Endpoint(url, "m"), w, tokenizer_path, realtime=True)
    rows = sorted(result.requests.to_pylist(), key=lambda r: r["sent_s"])
    assert all(r["ok"] for r in rows)
    scripts = [script_for(scenario, r["request_id"], r["max_tokens"]) for r in rows]
    sent = np.array([r["sent_s"] for r in rows])
    waits = fifo_waits(sent, np.array([s.e2e_ms for s in scripts]) / 1000, 2) * 1000
    expected = (np.array([r["client_delay_ms"] for r in rows]) + waits
                + np.array([s.ttft_ms for s in scripts]))
    error = np.abs(np.array([r["ttft_ms"] for r in rows]) - expected)
    median, p95 = np.median(error), np.quantile(error, 0.95)
    print(f"\nTTFT vs queue: median error {median:.3f} ms, p95 {p95:.3f} ms, "
          f"waited {(waits > 1).mean():.0%}")
    assert (waits > 1).mean() > 0.3  # the queue really formed
    # The loopback hop and the server's wake-up: a few ms at worst on a busy 2-core host.
    if median < 1.0 and p95 < 4.0:
        return None
    return f"TTFT vs queue: median {median:.3f} ms, p95 {p95:.3f} ms; worst {np.sort(error)[-5:]}"
