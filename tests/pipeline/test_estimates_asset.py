"""`deployment_estimates` from real results: every kept deployment estimated, marked, stored."""

from __future__ import annotations

import dagster as dg

from assets.estimates import ESTIMATES_PATH, deployment_estimates
from assets.results import benchmark_results


def test_estimates_refit_from_measured_results(bench_env):
    [key] = bench_env.matrix()
    bench_env.run(key)
    result = dg.materialize([benchmark_results, deployment_estimates],
                            instance=bench_env.instance, resources=bench_env.resources())
    assert result.success
    md = result.asset_materializations_for_node("deployment_estimates")[0].metadata
    table = bench_env.store.read_parquet(ESTIMATES_PATH).to_pandas()
    # One deployment x one length profile x the four profiles, every row an estimate.
    assert len(table) == md["rows"].value == 4
    assert (table["source"] == "estimate").all() and set(table["deployment"]) == {key}
    assert (table["capacity_rps_lo"] <= table["capacity_rps"]).all()
    assert (table["capacity_rps"] <= table["capacity_rps_hi"]).all()
    assert "roofline" in md["assumptions"].value
    assert md["lodo_errors"].value  # a table, or the sentence saying nothing could be held out
