"""`benchmark_matrix` in a real temporary Dagster instance, and from the dagster CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from assets.matrix import benchmark_matrix, deployments
from resources.store import ResultStore

REPO = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "asset-test",
    "models": [{"id": "org/m", "parameters": 1e9, "layers": 16, "kv_heads": 4, "head_dim": 64}],
    "hardware": [{"name": "h100", "counts": [1]}],
    "engines": [{"name": "vllm", "args": {"max_num_seqs": [16, 64]}}],
    "quantizations": ["bf16"],
    "workloads": {"lengths": [{"name": "chat", "input_tokens": 128, "output_tokens": 32}],
                  "loads": [{"concurrency": [1, 4]}], "requests": 4},
}


def materialize(instance, spec_path: Path, store: Path, raise_on_error: bool = True):
    return dg.materialize(
        [benchmark_matrix], instance=instance, raise_on_error=raise_on_error,
        resources={"store": ResultStore(root=str(store))},
        run_config={"ops": {"benchmark_matrix": {"config": {"spec_path": str(spec_path)}}}},
    )


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


def test_writes_table_registers_partitions_idempotently(tmp_path, instance):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    result = materialize(instance, spec, tmp_path / "store")
    assert result.success
    keys = instance.get_dynamic_partitions(deployments.name)
    assert len(keys) == 2
    table = pd.read_parquet(tmp_path / "store" / "matrix" / "asset-test.parquet")
    assert len(table) == 4 and set(table["deployment"]) == set(keys)
    md = result.asset_materializations_for_node("benchmark_matrix")[0].metadata
    assert md["configs"].value == 4 and "| engine | configs |" in md["summary"].value
    # Again: no duplicate partitions.
    assert materialize(instance, spec, tmp_path / "store").success
    assert sorted(instance.get_dynamic_partitions(deployments.name)) == sorted(keys)


def test_bad_spec_writes_and_registers_nothing(tmp_path, instance):
    bad = dict(SPEC, quantizations=["int3"])
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(bad))
    result = materialize(instance, spec, tmp_path / "store", raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "quantizations[0]: 'int3' is not one of" in str(failure.event_specific_data.error)
    assert instance.get_dynamic_partitions(deployments.name) == []
    assert not (tmp_path / "store").exists()


def test_dagster_cli_materializes(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "configs/deploy/local/dagster.yaml").read_text())
    env = dict(os.environ, DAGSTER_HOME=str(home), SERVECAT_STORE=str(tmp_path / "store"),
               SERVECAT_MATRIX=str(spec))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
         "-m", "pipeline.definitions", "--select", "benchmark_matrix"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "store" / "matrix" / "asset-test.parquet").exists()
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert len(inst.get_dynamic_partitions("deployments")) == 2
