"""The servecat code location: `dagster dev -m pipeline.definitions`."""

from __future__ import annotations

import dagster as dg

from assets.matrix import benchmark_matrix
from pipeline.environment import resources

defs = dg.Definitions(
    assets=[benchmark_matrix],
    resources=resources(),
)
