"""The typed deployment: built once from matrix rows, missing values cleaned once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from servecat.deployment import Deployment
from servecat.values import plain

ROW = {"deployment": "small-cpux1-builtin-bf16-2ab3ab98", "model": "small",
       "model_id": ".servecat/models/small", "hardware": "cpu", "gpu_count": np.int64(1),
       "engine": "builtin", "quantization": "bf16",
       "engine_args": '{"max_num_batched_tokens": 512, "max_num_seqs": 8}',
       "tensor_parallel_size": pd.NA, "max_num_seqs": np.int64(8),
       "max_num_batched_tokens": 512, "kv_cache_gb": 0.1, "input_max": 256, "output_max": 32,
       "workload_id": "chat-r2", "rate": float("nan")}


@pytest.mark.parametrize("missing", [None, float("nan"), np.float64("nan"), pd.NA, pd.NaT])
def test_every_missing_value_is_none(missing):
    assert plain(missing) is None


def test_numpy_scalars_become_python_values():
    assert type(plain(np.int64(3))) is int and type(plain(np.float32(0.5))) is float
    assert plain("x") == "x" and plain(0) == 0


def test_a_deployment_from_matrix_rows_is_typed_and_sized_for_its_largest_workload():
    rows = [ROW, ROW | {"kv_cache_gb": 0.4, "input_max": 512, "output_max": 16},
            ROW | {"kv_cache_gb": float("nan")}]
    d = Deployment.of(rows)
    assert d.key == ROW["deployment"] and d.gpu_count == 1 and type(d.max_num_seqs) is int
    assert (d.kv_cache_gb, d.input_max, d.output_max) == (0.4, 512, 32)
    assert d.tensor_parallel_size is None
    assert d.engine_args == {"max_num_batched_tokens": 512, "max_num_seqs": 8}


def test_rows_read_back_from_parquet_give_the_same_deployment():
    table = pa.Table.from_pylist([{k: plain(v) for k, v in ROW.items()}])
    assert Deployment.of(table.to_pylist()) == Deployment.of([ROW])


def test_values_flatten_for_templates_and_never_carry_nan():
    v = Deployment.from_row(ROW).values()
    assert v["deployment"] == ROW["deployment"] and v["max_num_seqs"] == 8
    assert v["tensor_parallel_size"] is None and "workload_id" not in v
    assert all(not (isinstance(x, float) and x != x) for x in v.values())


def test_a_row_without_what_a_server_needs_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks model_id, engine"):
        Deployment.from_row({k: v for k, v in ROW.items() if k not in ("model_id", "engine")})
    with pytest.raises(ValueError, match="at least one config row"):
        Deployment.of([])
