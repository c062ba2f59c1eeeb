"""The DuckDB views over the store: refreshed any number of times, files or not."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from resources.store import ResultStore
from resources.warehouse import refresh_views


def test_views_refresh_again_and_again_as_files_come_and_go(tmp_path):
    store = ResultStore(root=str(tmp_path / "store"))
    con = duckdb.connect(str(tmp_path / "results.duckdb"))
    # No files yet: empty tables, twice (the second call used to fail dropping a view).
    assert refresh_views(con, store) == {"matrix": 0, "summary": 0, "requests": 0}
    assert refresh_views(con, store) == {"matrix": 0, "summary": 0, "requests": 0}
    store.write_parquet("matrix/demo.parquet", pa.table({"config_id": ["a", "b"]}))
    assert refresh_views(con, store)["matrix"] == 2  # an empty table becomes a view
    assert refresh_views(con, store)["matrix"] == 2
    (tmp_path / "store" / "matrix" / "demo.parquet").unlink()
    assert refresh_views(con, store)["matrix"] == 0  # and a view an empty table again
