"""The engine-support table says what each engine can do, and the matrix prunes by it."""

from __future__ import annotations

from pathlib import Path

from bench.matrix import expand
from bench.spec import load_spec
from servecat.engines import unsupported_scale

REPO = Path(__file__).resolve().parents[2]


def test_scale_limits():
    assert unsupported_scale("builtin", 1, 1) is None
    assert unsupported_scale("builtin", 2, 2) == "engine builtin has no tensor parallelism"
    assert unsupported_scale("builtin", 2, 1) == "engine builtin uses at most 1 GPU"
    assert unsupported_scale("vllm", 8, 8) is None
    assert "beyond 8" in unsupported_scale("vllm", 16, 16)


def test_full_matrix_keeps_no_builtin_tensor_parallelism():
    exp = expand(load_spec(REPO / "configs/full.yaml"))
    builtin = exp.configs[exp.configs["engine"] == "builtin"]
    assert len(builtin) and (builtin["tensor_parallel_size"] == 1).all()
    assert (builtin["gpu_count"] == 1).all()
    assert exp.pruned["engine builtin has no tensor parallelism"] > 0
    per_model = exp.configs.groupby("model").size()
    assert (per_model > 9000).all(), per_model
