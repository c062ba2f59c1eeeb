"""A real `vllm` deployment partition on vLLM's CPU build (`make vllm-env`), end to end."""

from __future__ import annotations

import subprocess

import pyarrow.parquet as pq
import pytest
import yaml

from resources.target_resource import TargetsResource
from targets.vllm import DEFAULT_COMMAND, vllm_python
from tests.pipeline.support import spec_dict

pytestmark = pytest.mark.skipif(not vllm_python().exists(),
                                reason=f"vLLM not installed at {vllm_python()}: make vllm-env")


def test_vllm_partition_end_to_end(bench_env, tiny_model):
    spec = spec_dict(tiny_model, levels=(1, 4), requests=8, output_tokens=16)
    spec["engines"] = [{"name": "vllm", "args": {"max_num_seqs": [8],
                                                 "max_num_batched_tokens": [512]}}]
    spec["quantizations"] = ["bf16"]
    bench_env.spec.write_text(yaml.safe_dump(spec))
    [key] = bench_env.matrix()
    assert "-vllm-bf16-" in key
    # vLLM's own command plus --enforce-eager: its torch.compile warm-up is 15-50 s of the
    # start on two cores (88 s to /health compiled cold, 37-40 s eager) and is not under test.
    # A command of our own also shows vLLM's placeholders and env reach a user's template.
    eager = TargetsResource(health_timeout_s=400,
                            commands={"vllm": DEFAULT_COMMAND + " --enforce-eager"})
    result = bench_env.run(key, targets=eager)
    assert result.success
    rows = [pq.read_table(bench_env.store.uri(p)).to_pylist()[0]
            for p in bench_env.store.list(f"runs/summary/deployment={key}/")]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["num_completed"] == 8 and r["error_rate"] == 0
        assert r["mean_output_tokens"] == 16  # ignore_eos reached vLLM
        # vLLM's own view, scraped from /metrics before and after the workload.
        assert r["server_ttft_mean_ms"] > 0 and r["server_generation_tokens"] == 8 * 16
    leftover = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"],
                              capture_output=True, text=True).stdout.split()
    assert not leftover
