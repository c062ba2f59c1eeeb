"""servecat.store's stat_tag: a rewrite shows without reading the file, on disk and on S3."""

from __future__ import annotations

from servecat.store import open_store
from tests.pipeline.test_s3 import s3  # noqa: F401 - the moto fixture


def check(store) -> None:
    assert store.stat_tag("estimates/e.parquet") is None  # absent
    store.write("estimates/e.parquet", b"one")
    first = store.stat_tag("estimates/e.parquet")
    assert first and store.stat_tag("estimates/e.parquet") == first  # unchanged: same tag
    store.write("estimates/e.parquet", b"two, longer")
    assert store.stat_tag("estimates/e.parquet") not in (None, first)


def test_stat_tag_on_disk(tmp_path):
    check(open_store(tmp_path))


def test_stat_tag_on_s3(s3):  # noqa: F811 - the moto fixture
    _, url, bucket = s3
    check(open_store(f"s3://{bucket}/store", s3_endpoint_url=url))
