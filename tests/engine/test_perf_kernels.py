"""`servecat perf kernels`: a row per kernel and shape, with both timings and the JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.commands.perf_kernels import perf_kernels
from engine import cpu_kernels


def test_perf_kernels_table_and_json(tmp_path):
    out = tmp_path / "kernels.json"
    result = CliRunner().invoke(perf_kernels, ["--dtype", "fp32", "--threads", "1",
                                               "--repeat", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["repeat"] == 2  # the shape of the table is under test here, not its timings
    kernels = [r["kernel"] for r in data["rows"]]
    assert len(kernels) == 18 and sum(k.startswith("decode attention") for k in kernels) == 2
    assert sum(k.startswith("int8 linear") for k in kernels) == 6
    assert "rms_norm 2048x768" in kernels
    for r in data["rows"]:
        assert r["pytorch_ms"] > 0
        assert (r["ours_ms"] is not None) == (cpu_kernels.available() or
                                              r["kernel"].startswith(("linear", "int8")))
    assert "| fp32 | decode attention 64 seqs x 400 tokens |" in result.output


def test_bad_dtype_is_named():
    result = CliRunner().invoke(perf_kernels, ["--dtype", "fp8"])
    assert result.exit_code == 2 and "'fp8' is not one of fp32, bf16" in result.output
