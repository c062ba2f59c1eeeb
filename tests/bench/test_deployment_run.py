"""A deployment's sweep: saturation stops the climb, failures end it, done work is skipped."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from bench.deployment_run import Saturation, sweep, workload_of
from bench.endpoint import Endpoint
from bench.profiles import Profile
from bench.scripted_server import Scenario, scripted_server

PROFILES = [Profile("loose", 60000, 1000)]


def config(i: int, concurrency: int) -> dict:
    return {"config_id": f"c{i}", "workload_id": f"chat-c{concurrency}", "workload_index": i,
            "lengths": "chat", "input_dist": "fixed", "input_tokens": 16, "input_min": 16,
            "input_max": 16, "input_std": 0.0, "output_dist": "fixed", "output_tokens": 4,
            "output_min": 4, "output_max": 4, "output_std": 0.0, "load": "concurrency",
            "concurrency": concurrency, "rate": float("nan"), "arrival": "constant",
            "burstiness": 1.0, "max_concurrency": None, "requests": 4, "duration_s": None,
            "warmup_requests": 0, "shared_prefix_tokens": 0, "api": "completions", "seed": 0}


@contextmanager
def endpoint():
    with scripted_server(Scenario(ttft_ms=(1, 2), gap_ms=(0.5, 1))) as url:
        yield Endpoint(base_url=url, model="scripted", api_key_env=None)


def test_saturation_skips_higher_levels_with_a_reason(tiny_model):
    configs = [config(0, 1), config(1, 2), config(2, 4)]
    written = []
    # SLOs nobody meets, and growth nobody reaches: saturated at the second level.
    strict = Saturation(ttft_p99_ms=1e-6, tpot_p99_ms=1e-6, margin=1.0, min_growth=100.0)
    with endpoint() as ep:
        out = sweep(configs, ep, str(tiny_model), PROFILES, done=set(),
                    on_outcome=written.append, saturation=strict, log=lambda _: None)
    assert [o.status for o in out] == ["ok", "ok", "skipped"]
    assert out[2].reason.startswith("saturated: p99 TTFT") and "(at concurrency 2)" in out[2].reason
    assert written == out
    assert out[2].summary_row()["status_reason"] == out[2].reason


def test_done_configs_are_not_measured_again(tiny_model):
    configs = [config(0, 1), config(1, 2)]
    with endpoint() as ep:
        out = sweep(configs, ep, str(tiny_model), PROFILES, done={"c0"},
                    on_outcome=lambda _: None, log=lambda _: None)
    assert [o.config["config_id"] for o in out] == ["c1"]


def test_dead_endpoint_fails_the_workload_and_ends_the_sweep(tiny_model):
    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="x", api_key_env=None)
    out = sweep([config(0, 1), config(1, 2)], ep, str(tiny_model), PROFILES, done=set(),
                on_outcome=lambda _: None, log=lambda _: None)
    assert [o.status for o in out] == ["failed"]
    assert "endpoint broken" in out[0].reason


def test_a_server_that_exits_just_after_refusing_is_reported_by_its_exit(tiny_model):
    # The kernel closes a dying server's sockets a moment before its exit status can be read:
    # the workload's reason is the exit, not the refused connections that came first.
    calls = []

    def check_alive() -> None:  # alive before the workload and at the first look after it
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("server exited with code 3")

    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="x", api_key_env=None)
    [out] = sweep([config(0, 1)], ep, str(tiny_model), PROFILES, done=set(),
                  on_outcome=lambda _: None, log=lambda _: None, check_alive=check_alive)
    assert out.status == "failed" and out.reason == "server exited with code 3", out.reason


@pytest.mark.parametrize("value", [float("nan"), None])
def test_workload_of_reads_matrix_nulls(value):
    row = config(0, 1) | {"rate": value}
    assert workload_of(row).rate is None and workload_of(row).concurrency == 1
