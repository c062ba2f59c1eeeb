"""`benchmark_matrix`: the test matrix of a spec, written to the store; deployments registered."""
# No `from __future__ import annotations` here: Dagster resolves config/resource types at runtime.

import hashlib
import os
from pathlib import Path

import dagster as dg

from bench.matrix import expand_file
from bench.matrix_summary import as_markdown, totals
from resources.store import ResultStore
from servecat.errors import SpecError
from servecat.store import matrix_path

deployments = dg.DynamicPartitionsDefinition(name="deployments")

DEFAULT_SPEC = os.environ.get("SERVECAT_MATRIX", "configs/demo.yaml")
SPEC_DIGEST = "spec_sha256"  # metadata: what the spec sensor's cursor starts from


class MatrixConfig(dg.Config):
    spec_path: str = DEFAULT_SPEC


def spec_digest(path: str | Path) -> str | None:
    """The SHA-256 of the spec file's bytes, or None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


@dg.asset(group_name="benchmarks", kinds={"parquet"})
def benchmark_matrix(context: dg.AssetExecutionContext, config: MatrixConfig,
                     store: ResultStore) -> dg.MaterializeResult:
    """One row per config (deployment x workload) of the matrix spec; registers deployments."""
    digest = spec_digest(config.spec_path)  # before expanding: the bytes that were expanded
    try:
        exp = expand_file(config.spec_path)
    except SpecError as exc:
        # Nothing is written or registered for a bad spec.
        raise dg.Failure(description=str(exc)) from None
    uri = store.write_parquet(matrix_path(exp.spec.name), exp.configs)
    keys = exp.deployments
    known = set(context.instance.get_dynamic_partitions(deployments.name))
    new = [k for k in keys if k not in known]
    if new:
        context.instance.add_dynamic_partitions(deployments.name, new)
    context.log.info(f"{len(keys)} deployments ({len(new)} new) from {config.spec_path}")
    t = totals(exp)
    return dg.MaterializeResult(metadata={
        "spec": config.spec_path, SPEC_DIGEST: digest or "", "matrix": exp.spec.name,
        "path": dg.MetadataValue.path(uri),
        "configs": t["kept"], "pruned": t["pruned"], "deployments": t["deployments"],
        "new_deployments": len(new), "summary": dg.MetadataValue.md(as_markdown(exp)),
    })
