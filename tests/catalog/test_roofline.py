"""The roofline estimate: bytes moved and FLOPs against the hardware table, batching limits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalog.roofline import Assumptions, estimate
from servecat.hardware import load_hardware
from servecat.profiles import Profile, load_profiles

HW = load_hardware()
PROFILES = load_profiles()
LOOSE = Profile("loose", ttft_p99_ms=60_000, tpot_p99_ms=1_000)


def row(**kw) -> dict:
    """An 8B-ish Llama on one H100 at bf16, chat-sized requests."""
    base = {"deployment": "d", "model": "m", "parameters": 8e9, "layers": 32, "kv_heads": 8,
            "head_dim": 128, "hardware": "h100", "gpu_count": 1, "quantization": "bf16",
            "max_num_seqs": 256, "max_num_batched_tokens": 2048, "lengths": "chat",
            "input_tokens": 1000, "output_tokens": 200}
    return base | kw


def one(profiles=(LOOSE,), a: Assumptions | None = None, **kw) -> pd.Series:
    return estimate(pd.DataFrame([row(**kw)]), HW, list(profiles), a).iloc[0]


def test_idle_decode_is_weights_plus_kv_over_bandwidth():
    a = Assumptions()
    r = one(a=a)
    h = HW["h100"]
    kv_token = 2 * 32 * 8 * 128 * 2.0  # K and V, layers x kv heads x head dim, 16-bit
    read = 8e9 * 2.0 + (1000 + 200 / 2) * kv_token
    expected_ms = read / (h.memory_bandwidth_gbps * 1e9 * a.bandwidth_efficiency) * 1e3
    assert r["idle_tpot_ms"] == pytest.approx(expected_ms, rel=1e-9)
    # Prefill: one 1000-token chunk, compute-bound at 2 x params x tokens.
    flops = h.peak_bf16_tflops * 1e12 * a.compute_efficiency
    assert r["prefill_ms"] == pytest.approx(2 * 8e9 * 1000 / flops * 1e3, rel=1e-9)


def test_quantization_moves_fewer_bytes_and_more_gpus_more_bandwidth():
    bf16, int8 = one()["idle_tpot_ms"], one(quantization="int8")["idle_tpot_ms"]
    assert int8 < bf16 * 0.6  # int8 weights are half; the KV cache stays 16-bit
    assert one(gpu_count=2)["idle_tpot_ms"] == pytest.approx(bf16 / 2)


def test_small_chunks_cost_a_weights_read_each():
    whole = one(max_num_batched_tokens=2048)["prefill_ms"]
    chunked = one(max_num_batched_tokens=8)["prefill_ms"]  # 125 steps, each reading 16 GB
    assert chunked > 10 * whole


def test_max_num_seqs_and_kv_memory_bound_the_batch():
    few = one(max_num_seqs=2)
    many = one(max_num_seqs=256)
    assert few["capacity_limiting"] == "max_num_seqs"
    assert few["capacity_concurrency"] <= 2 + 1e-9
    assert many["capacity_rps"] > 5 * few["capacity_rps"]
    # 70B at bf16 leaves ~4 GB of an H200's memory for KV at 8k tokens a request: a few.
    big = one(parameters=7e10, layers=80, hardware="h200", input_tokens=8000,
              output_tokens=200)
    assert big["kv_concurrency"] < 20
    assert big["capacity_concurrency"] <= big["kv_concurrency"] + 1e-9


def test_the_operating_point_meets_the_profile_slo():
    table = estimate(pd.DataFrame([row(), row(deployment="e", quantization="int8")]), HW,
                     PROFILES)
    ok = table[table["capacity_rps"] > 0]
    assert len(ok) == len(table)
    limits = ok["profile"].map({p.name: p for p in PROFILES})
    assert (ok["ttft_p99_ms"] <= limits.map(lambda p: p.ttft_p99_ms) * (1 + 1e-6)).all()
    assert (ok["tpot_p99_ms"] <= limits.map(lambda p: p.tpot_p99_ms) * (1 + 1e-6)).all()
    assert (ok["tpot_p50_ms"] <= ok["tpot_p99_ms"]).all()
    # A stricter SLO never allows a higher rate.
    cap = ok.set_index(["deployment", "profile"])["capacity_rps"]
    assert (cap.xs("interactive", level=1) <= cap.xs("offline", level=1)).all()


def test_an_unreachable_slo_gives_no_capacity():
    strict = Profile("strict", ttft_p99_ms=1, tpot_p99_ms=1)
    r = one(profiles=[strict])
    assert r["capacity_rps"] == 0 and r["capacity_status"] == "none"
    assert np.isnan(r["tpot_p99_ms"])


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="hardware tpu9"):
        estimate(pd.DataFrame([row(hardware="tpu9")]), HW, PROFILES)
    with pytest.raises(ValueError, match="head_dim"):
        estimate(pd.DataFrame([row()]).drop(columns="head_dim"), HW, PROFILES)
    with pytest.raises(ValueError, match="quantization fp8"):
        estimate(pd.DataFrame([row(quantization="fp8")]), HW, PROFILES)


def test_a_closed_loop_is_estimated_as_one():
    closed = dict(load="concurrency", search_max=16, max_num_seqs=4)
    few = one(profiles=[LOOSE], **closed)
    many = one(profiles=[LOOSE], **(closed | {"search_max": 64}))
    assert few["capacity_concurrency"] <= 4 + 1e-9  # the batch, at most max_num_seqs
    # More clients than slots only queue: throughput stops at what 4 slots serve.
    assert many["capacity_rps"] == pytest.approx(few["capacity_rps"], rel=1e-6)
    # One client at a time: throughput is one over the request's own time.
    single = one(profiles=[LOOSE], **(closed | {"search_max": 1}))
    own_s = (single["prefill_ms"] + 200 * single["idle_tpot_ms"]) / 1e3
    assert single["capacity_rps"] == pytest.approx(1 / own_s, rel=0.05)
    assert single["capacity_rps"] < few["capacity_rps"]
