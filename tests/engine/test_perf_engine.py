"""`servecat perf engine --quick` end to end on the tiny model: which rows exist, how each was
measured, and that ratios only join rows measured the same way (the real figures come from
running it by hand on the small model)."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from bench.perf_workloads import QUICK, EngineLimits
from cli.commands.perf_engine import perf_engine
from cli.commands.perf_engine_served import builtin_server, vllm_server

SERVED = "builtin `servecat serve`"
CEILING = "builtin engine core (in-process ceiling)"


def test_every_server_gets_the_same_limits_and_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVECAT_VLLM_PYTHON", sys.executable)  # vLLM need not be installed
    limits = EngineLimits(threads=2)
    ours = builtin_server(tmp_path, "fp32", limits, QUICK, tmp_path / "b.log",
                          prefix_caching=False).argv
    vllm = vllm_server(tmp_path, "fp32", limits, QUICK, tmp_path / "v.log")
    for argv in (ours, vllm.argv):
        flags = dict(zip(argv, argv[1:], strict=False))
        assert flags["--max-num-seqs"] == "64" and flags["--max-num-batched-tokens"] == "2048"
    assert ours[ours.index("--kv-cache-memory") + 1] == "2"
    assert ours[ours.index("--num-threads") + 1] == "2" and "--no-prefix-caching" in ours
    assert vllm.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert vllm.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and "--enable-prefix-caching" in vllm.argv


def test_perf_engine_quick(tiny_model, tmp_path):
    """One builtin server (the no-prefix-caching one is skipped to stay near a minute)."""
    out = tmp_path / "perf.json"
    result = CliRunner().invoke(perf_engine, [
        "--model", str(tiny_model), "--dtype", "fp32", "--quick", "--skip",
        "vllm,hf-cb,no-prefix-caching",
        "--threads", "1", "--log-dir", str(tmp_path / "logs"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["complete"] is True  # rewritten after every row, marked complete at the end
    rows = {(r["system"], r["workload"]): r for r in data["rows"]}
    workloads = ("A", "B", "c1", "prefix")

    # The served builtin engine is the reference on every workload, measured over HTTP.
    for w in workloads:
        served = rows[(SERVED, w)]
        assert served["method"] == "http" and served["reference"] and served["engine"] == "builtin"
        assert rows[(CEILING, w)]["method"] == "in-process"
    assert {("HF generate, one at a time", "c1"), ("HF generate, static batch 8", "A"),
            ("HF generate, static batch 32", "A")} <= set(rows)
    assert all(r["method"] == "in-process" for r in data["rows"] if r["engine"] == "hf")

    a = rows[(SERVED, "A")]
    assert a["requests"] == 6 and a["ttft_n"] == a["requests"] - a["failed"]
    assert a["tok_s"] > 0 and a["ttft_p99_ms"] >= a["ttft_p50_ms"] > 0
    assert rows[(SERVED, "B")]["rate"] > 0 and rows[(SERVED, "A")]["rate"] is None
    assert rows[(SERVED, "c1")]["requests"] == 3

    # The ceiling and HF rows share groups' dtype and workload but not their method: no ratio
    # is taken against them (tests/bench/test_perf_compare.py has ratios between http rows).
    assert data["ratios"] == []
    # Serving overhead: served builtin vs its in-process core, per workload.
    overhead = {o["workload"]: o for o in data["serving_overhead"]}
    assert set(overhead) == set(workloads)
    assert overhead["B"]["tok_s_lost_pct"] is None  # an open loop's throughput is its rate

    m = data["machine"]
    assert {"cpu", "cpu_flags", "torch", "torch_cpu_capability", "engine_kernels", "bf16_path",
            "load_avg_before", "load_avg_after"} <= set(m)
    assert {"avx512_bf16", "amx_tile"} <= set(m["cpu_flags"])
    assert data["limits"] == {"max_num_seqs": 64, "max_num_batched_tokens": 2048,
                              "kv_cache_gib": 2, "threads": 1}
    assert data["workloads"]["fp32"]["prefix"]["shared_prefix_tokens"] == 32
    assert f"| {SERVED} | http | A | fp32 |" in result.output
