"""Matrix expansion: counts, pruning reasons, hash stability, and every bad-input case."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.matrix import REASON_ENGINE, REASON_KV, REASON_TP, REASON_WEIGHTS, expand_file
from cli.main import main
from servecat.errors import SpecError

BASE = {
    "name": "t",
    "models": [{"id": "org/model-8b", "parameters": 8e9, "layers": 32, "kv_heads": 8,
                "head_dim": 128}],
    "hardware": [{"name": "h100", "counts": [1, 2]}],
    "engines": [{"name": "vllm", "args": {"max_num_seqs": [64], "tensor_parallel_size": [1, 2]}}],
    "quantizations": ["bf16", "int4"],
    "workloads": {
        "lengths": [{"name": "chat", "input_tokens": 512, "output_tokens": 128}],
        "loads": [{"concurrency": [1, 8]}, {"rate": [2.0], "max_concurrency": 16}],
        "requests": 10,
    },
}


def write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_counts_and_tensor_parallel_pruning(tmp_path):
    exp = expand_file(write(tmp_path, BASE))
    # h100x1: tp1 only (tp2 pruned); h100x2: tp1, tp2 -> 3 deployments x 2 quants x 3 workloads.
    assert len(exp.configs) == 3 * 2 * 3
    assert exp.candidates == 2 * 2 * 2 * 3
    assert exp.pruned == {REASON_TP: 2 * 3}
    assert len(exp.deployments) == 6
    assert set(exp.configs["workload_id"].str.split("-").str[1]) == {"c1", "c8", "r2"}
    # Workloads sweep in order: concurrency ascending, then rates.
    first = exp.configs[exp.configs["deployment"] == exp.deployments[0]]
    assert first["workload_index"].tolist() == [0, 1, 2]
    assert first["concurrency"].tolist()[:2] == [1, 8]


def test_every_pruning_reason(tmp_path):
    spec = copy.deepcopy(BASE)
    spec["models"].append({"id": "org/model-70b", "parameters": 70e9, "layers": 80,
                           "kv_heads": 8, "head_dim": 128})
    spec["hardware"] = [{"name": "l4", "counts": [1]}, "cpu"]
    spec["engines"] = [{"name": "runpod"}, {"name": "builtin", "args": {"max_num_seqs": [256]}}]
    spec["quantizations"] = ["fp32", "bf16", "int4"]
    spec["workloads"]["lengths"] = [{"name": "long", "input_tokens": 30000, "output_tokens": 1000},
                                    {"name": "short", "input_tokens": 64, "output_tokens": 16}]
    spec["workloads"]["loads"] = [{"concurrency": [1, 256]}]
    spec["workloads"]["requests"] = 256
    spec["exclude"] = [{"engine": "builtin", "hardware": "cpu", "quantization": "int4",
                        "reason": "no int4 here"},
                       {"lengths": "short", "concurrency": 1, "reason": "too small to matter"}]
    exp = expand_file(write(tmp_path, spec))
    reasons = set(exp.pruned)
    assert {REASON_ENGINE, REASON_WEIGHTS, REASON_KV, "excluded: too small to matter"} <= reasons
    # The deployment-level rule never reaches rows: builtin/cpu/int4 is already unsupported.
    kept = exp.configs
    assert not ((kept["engine"] == "runpod") & (kept["hardware"] == "cpu")).any()
    assert not ((kept["model"] == "model-70b") & (kept["hardware"] == "l4")).any()
    assert not ((kept["lengths"] == "short") & (kept["concurrency"] == 1)).any()
    assert (kept["weights_gb"] + kept["kv_cache_gb"] <= kept["usable_memory_gb"]).all()
    assert exp.candidates == len(kept) + sum(exp.pruned.values())


def test_hash_stable_across_runs_key_order_and_list_order(tmp_path):
    a = expand_file(write(tmp_path, BASE, "a.yaml")).configs
    b = expand_file(write(tmp_path, BASE, "b.yaml")).configs
    assert a["config_id"].tolist() == b["config_id"].tolist()
    reordered = {k: BASE[k] for k in reversed(list(BASE))}
    reordered["models"] = [dict(reversed(list(m.items()))) for m in BASE["models"]]
    reordered["quantizations"] = list(reversed(BASE["quantizations"]))
    c = expand_file(write(tmp_path, reordered, "c.yaml")).configs
    assert set(c["config_id"]) == set(a["config_id"])
    assert set(c["deployment"]) == set(a["deployment"])
    assert a["config_id"].is_unique
    # A different engine arg is a different deployment and different configs.
    changed = copy.deepcopy(BASE)
    changed["engines"][0]["args"]["max_num_seqs"] = [128]
    d = expand_file(write(tmp_path, changed, "d.yaml")).configs
    assert not set(d["config_id"]) & set(a["config_id"])


def test_deployment_keys_are_partition_safe(tmp_path):
    exp = expand_file(write(tmp_path, BASE))
    for key in exp.deployments:
        assert key.replace("-", "").replace(".", "").isalnum() and key == key.lower()
        assert key.startswith("model-8b-h100x")


def test_local_model_shape_read_from_config(tmp_path, tiny_model):
    spec = copy.deepcopy(BASE)
    spec["models"] = [{"id": str(tiny_model), "name": "tiny"}]
    spec["hardware"] = ["cpu"]
    spec["engines"] = [{"name": "builtin"}]
    spec["quantizations"] = ["fp32"]
    exp = expand_file(write(tmp_path, spec))
    row = exp.configs.iloc[0]
    assert (row["layers"], row["kv_heads"], row["head_dim"]) == (4, 2, 32)
    assert 4.5e6 < row["parameters"] < 5.5e6


BAD = [
    ("malformed", None, "malformed YAML: line"),
    ("unknown field", lambda s: s.update(modles=[]), "modles: unknown field"),
    ("unknown hardware", lambda s: s.update(hardware=["a200"]),
     "hardware[0].name: unknown hardware 'a200'"),
    ("unknown quantization", lambda s: s["models"][0].update(quantizations=["int3"]),
     "models[0].quantizations[0]: 'int3' is not one of fp32, bf16, fp16, int8, int4"),
    ("empty dimension", lambda s: s.update(engines=[]), "engines: List should have at least 1"),
    ("output length 0", lambda s: s["workloads"]["lengths"][0].update(output_tokens=0),
     "workloads.lengths[0].output_tokens: must be > 0 tokens, got 0"),
    ("unknown engine", lambda s: s["engines"][0].update(name="trt"),
     "engines[0].name: 'trt' is not one of"),
    ("gpu count", lambda s: s["hardware"][0].update(counts=[3]),
     "hardware[0].counts: 3 GPUs is not offered for h100"),
    ("missing shape", lambda s: s["models"][0].pop("layers"), "models[0].layers: required for"),
    ("prunes everything", lambda s: s.update(hardware=["cpu"], quantizations=["int4"]),
     "every config was pruned"),
]


@pytest.mark.parametrize(("case", "mutate", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_and_field(tmp_path, case, mutate, message):
    if mutate is None:
        path = tmp_path / "spec.yaml"
        path.write_text("name: t\nmodels: [\n  - id: x\n")
    else:
        spec = copy.deepcopy(BASE)
        mutate(spec)
        path = write(tmp_path, spec)
    with pytest.raises(SpecError) as err:
        expand_file(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    # The CLI says the same thing, exits non-zero and writes nothing.
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["matrix", "expand", str(path), "--out", str(out)])
    assert result.exit_code != 0 and message in result.output
    assert not out.exists()


def test_cli_summary_and_parquet(tmp_path):
    out = tmp_path / "m.parquet"
    result = CliRunner().invoke(main, ["matrix", "expand", str(write(tmp_path, BASE)),
                                       "--summary", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "18 configs kept of 24" in result.output and REASON_TP in result.output
    import pandas as pd

    assert len(pd.read_parquet(out)) == 18


def test_full_matrix_has_9000_configs_per_model():
    exp = expand_file(Path(__file__).resolve().parents[2] / "configs" / "full.yaml")
    per_model = exp.configs.groupby("model", observed=True).size()
    assert len(per_model) >= 5 and (per_model >= 9000).all(), per_model
