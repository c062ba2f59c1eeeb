"""`servecat perf engine` end to end on the tiny model: rows, ratios, JSON (small sizes; the
real figures come from running it by hand, see the engine's closing note)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from servecat.commands.perf_engine import perf_engine


def test_perf_engine_writes_table_and_json(tiny_model, tmp_path):
    out = tmp_path / "perf.json"
    result = CliRunner().invoke(perf_engine, [
        "--model", str(tiny_model), "--dtype", "fp32", "--requests", "6", "--prompt-len",
        "8-40", "--output-len", "4-12", "--hf-sequential", "2", "--skip", "hf-cb,vllm",
        "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    systems = {(r["system"], r["workload"]) for r in data["rows"]}
    assert {("builtin (in-process)", "A"), ("builtin (in-process)", "B"),
            ("bare forward ceiling (ours)", "A"), ("HF generate, one at a time", "A"),
            ("HF generate, static batch 8", "A"), ("HF generate, static batch 32", "A")} <= systems
    ours = next(r for r in data["rows"] if r["system"].startswith("builtin") and
                r["workload"] == "A")
    assert ours["requests"] == 6 and 6 * 4 <= ours["output_tokens"] <= 6 * 12
    assert ours["tok_s"] > 0 and ours["ttft_p99"] >= ours["ttft_p50"] > 0
    assert "fp32: builtin / HF generate, static batch 8" in data["ratios"]
    assert data["threads"] == 1 and isinstance(data["engine_kernels"], bool)
    assert "| builtin (in-process) | A | fp32 |" in result.output
