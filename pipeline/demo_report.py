"""What `make demo` prints: the measured results and the catalog's top configs."""

from __future__ import annotations

import pandas as pd

from resources.store import ResultStore
from resources.warehouse import Warehouse


def results_table(store: ResultStore, warehouse: Warehouse, matrices: list[str]) -> str:
    with warehouse.connect(store, read_only=True) as con:
        df = con.execute("""
            SELECT deployment, workload_id, status, round(output_tokens_per_s, 1) AS tok_s,
                   round(ttft_p50_ms) AS ttft_p50, round(ttft_p99_ms) AS ttft_p99,
                   round(tpot_p50_ms, 1) AS tpot_p50, round(tpot_p99_ms, 1) AS tpot_p99,
                   round(error_rate, 3) AS err
            FROM summary WHERE list_contains(?, matrix) ORDER BY deployment, workload_index""",
            [matrices]).df()
    counts = _counts(store, warehouse)
    head = (f"results ({counts['summary']} summary rows, {counts['requests']} request rows, "
            f"{counts['matrix']} matrix rows in the store):")
    return head + "\n" + df.to_string(index=False)


def _counts(store: ResultStore, warehouse: Warehouse) -> dict[str, int]:
    with warehouse.connect(store, read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("matrix", "summary", "requests")}


def top_configs(catalog: pd.DataFrame, matrices: list[str], n: int = 3) -> str:
    """The top N configs per profile among the MATRICES' configs."""
    cols = ["profile", "rank", "deployment", "workload_id", "output_tokens_per_s_per_gpu",
            "ttft_p99_ms", "tpot_p99_ms", "cost_per_mtok_on_demand", "topsis_score", "rank_note"]
    df = catalog[catalog["matrix"].isin(matrices) & catalog["rank"].notna()
                 & (catalog["rank"] <= n)]
    df = df.sort_values(["profile", "rank"])[cols].round(3)
    return "top configs per profile (catalog):\n" + df.to_string(index=False)
