"""Quality beside speed: each deployment's `quality_*` columns from the stored probe runs
(bench/quality.py), per model against its most precise deployment measured
(bench.quality_compare.compare_model), one row per deployment, to join into the deployment table.

A deployment without a run is `not measured`, every figure NaN: nothing downstream may read a
missing figure as lossless (catalog/quality_limits.py turns such rows away where quality counts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Protocol

import pandas as pd
import pyarrow as pa

from bench.quality import PROBE_VERSION, ProbeRun
from bench.quality_compare import QualityResult, compare_model

QUALITY_COLUMNS = tuple(f"quality_{f.name}" for f in fields(QualityResult))
NOT_MEASURED = "not measured"


class ProbeStore(Protocol):
    """What reading the probe runs needs of a result store (resources.store.ResultStore has it)."""

    def list(self, prefix: str) -> list[str]: ...

    def read_parquet(self, relpath: str) -> pa.Table: ...


def stored_probe_runs(store: ProbeStore, version: str = PROBE_VERSION) -> dict[str, ProbeRun]:
    """Every stored probe run of VERSION by deployment key, read from its path
    (bench.quality.quality_path): the run's own `deployment` is empty when probed by hand."""
    pattern = re.compile(rf"(?:^|/)runs/quality/deployment=([^/]+)/{re.escape(version)}\.parquet$")
    found = ((m.group(1), path) for path in store.list("runs/quality/")
             if (m := pattern.search(path)))
    return {key: ProbeRun.from_table(store.read_parquet(path)) for key, path in found}


def model_quality(runs: Mapping[str, ProbeRun | pa.Table],
                  quantizations: Mapping[str, str]) -> pd.DataFrame:
    """The quality columns of ONE model's deployments (deployment -> quantization), indexed by
    deployment. RUNS (deployment -> run, or its stored table) may lack some: those are `not
    measured`; a run of a deployment not in QUANTIZATIONS is left out (with no quantization it
    cannot be weighed as the reference)."""
    mine = {d: r if isinstance(r, ProbeRun) else ProbeRun.from_table(r)
            for d, r in runs.items() if d in quantizations}
    results = compare_model(mine, quantizations) if mine else {}
    rows = {d: results[d].columns() if d in results else _not_measured()
            for d in quantizations}
    return _frame(rows)


def quality_table(runs: Mapping[str, ProbeRun | pa.Table],
                  deployments: pd.DataFrame) -> pd.DataFrame:
    """The quality columns of every deployment in DEPLOYMENTS (any table with deployment, model
    and quantization columns, e.g. the summary), indexed by deployment, each model on its own."""
    ident = (deployments[["deployment", "model", "quantization"]].astype(str)
             .drop_duplicates("deployment"))
    parts = [model_quality(runs, dict(zip(g["deployment"], g["quantization"], strict=True)))
             for _, g in ident.groupby("model", sort=True)]  # one per model: a few
    return pd.concat(parts) if parts else _frame({})


def join_quality(table: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """TABLE with QUALITY's columns joined on deployment; a deployment QUALITY lacks is `not
    measured`."""
    out = table.drop(columns=[c for c in QUALITY_COLUMNS if c in table]).join(
        quality, on="deployment")
    out["quality_status"] = out["quality_status"].fillna(NOT_MEASURED)
    out["quality_kl_positions"] = out["quality_kl_positions"].fillna(0).astype(int)
    return out


def _not_measured() -> dict[str, object]:
    return {**dict.fromkeys(QUALITY_COLUMNS, math.nan), "quality_probe_version": None,
            "quality_reference": None, "quality_status": NOT_MEASURED,
            "quality_status_reason": "no quality probe run stored for this deployment",
            "quality_kl_positions": 0}


def _frame(rows: Mapping[str, Mapping[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(dict(rows), orient="index", columns=list(QUALITY_COLUMNS))
    frame.index.name = "deployment"
    floats = [c for c in QUALITY_COLUMNS if c.removeprefix("quality_") in
              ("perplexity", "perplexity_ratio", "agreement", "kl")]
    texts = [c for c in QUALITY_COLUMNS if c not in floats and c != "quality_kl_positions"]
    return frame.astype({**dict.fromkeys(floats, float), **dict.fromkeys(texts, object),
                         "quality_kl_positions": int})
