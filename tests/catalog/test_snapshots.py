import json
from pathlib import Path

import pytest

from catalog.snapshots import (
    CATALOG_KEY,
    POINTER_KEY,
    NoCatalogError,
    latest_id,
    load_latest,
    write_snapshot,
)


def test_write_then_load_latest(tmp_path, catalog_df):
    root = tmp_path / "store"
    first = write_snapshot(catalog_df, root)
    second = write_snapshot(catalog_df.head(10), root)
    assert first != second
    snap = load_latest(root)
    assert snap.id == latest_id(root) and len(snap.frame) == 10
    assert snap.profiles == catalog_df.attrs["profiles"] and snap.hardware
    # Snapshots are immutable; model_catalog.parquet is the newest; the pointer names it.
    assert (root / "catalog/snapshots").is_dir() and len(list((root / "catalog/snapshots").iterdir())) == 2
    assert (root / CATALOG_KEY).read_bytes() == Path(second).read_bytes()
    pointer = json.loads((root / POINTER_KEY).read_text())
    assert pointer["snapshot"] == snap.id and pointer["rows"] == 10
    assert not [p for p in (root / "catalog").rglob("*.tmp")]


def test_no_catalog_says_how_to_build(tmp_path):
    with pytest.raises(NoCatalogError, match="model_catalog"):
        load_latest(tmp_path)
    assert latest_id(tmp_path) is None


def test_round_trip_keeps_types(store, catalog_df):
    frame = load_latest(store).frame
    assert list(frame.columns) == list(catalog_df.columns)
    assert str(frame["rank"].dtype) == "Int64" and frame["meets_slo"].dtype == bool
