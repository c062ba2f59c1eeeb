"""The result store on S3: moto's server mode on 127.0.0.1 (a real S3 API over HTTP)."""

from __future__ import annotations

import io
import threading
import time
import uuid

import boto3
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from resources.store import ResultStore, StoreError
from resources.warehouse import refresh_views
from servecat.net import free_port


@pytest.fixture
def s3(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps buckets in this process across servers: a fresh bucket per test.
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield server, url, bucket
    server.stop()


def s3_store(url: str, bucket: str) -> ResultStore:
    return ResultStore(root=f"s3://{bucket}/servecat", s3_endpoint_url=url, attempts=3,
                       backoff_s=0.1)


def objects(url: str, bucket: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_partition_on_s3_and_duckdb_reads_it(bench_env, s3):
    _, url, bucket = s3
    bench_env.store = s3_store(url, bucket)
    [key] = bench_env.matrix()
    bench_env.run(key)
    stored = objects(url, bucket)
    assert sum(k.startswith("servecat/runs/summary/") for k in stored) == 3
    assert sum(k.startswith("servecat/runs/requests/") for k in stored) == 3
    with bench_env.resources()["warehouse"].connect(bench_env.store) as con:
        counts = refresh_views(con, bench_env.store)
        assert counts == {"matrix": 3, "summary": 3, "requests": 24}
        assert con.execute("SELECT count(*) FROM summary WHERE status = 'ok'").fetchone()[0] == 3


def test_store_down_is_a_clear_failure(s3):
    server, url, bucket = s3
    store = s3_store(url, bucket)
    store.write_bytes("a.txt", b"x")
    server.stop()
    started = time.monotonic()
    with pytest.raises(StoreError, match=rf"write s3://{bucket}/servecat/b.txt: failed after 3 attempts"):
        store.write_bytes("b.txt", b"y")
    assert time.monotonic() - started < 30


def test_store_stopped_mid_run_fails_and_leaves_no_partial_file(bench_env, s3, tiny_model):
    import yaml

    from tests.pipeline.support import scripted_command, spec_dict

    server, url, bucket = s3
    bench_env.store = s3_store(url, bucket)
    bench_env.spec.write_text(yaml.safe_dump(spec_dict(tiny_model, output_tokens=16)))
    bench_env.commands = {"openai": scripted_command({"ttft_ms": [10, 20], "gap_ms": [10, 15]})}
    [key] = bench_env.matrix()
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=bench_env.run(key, raise_on_error=False)))
    thread.start()
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="servecat/runs/summary/")
        if listed.get("KeyCount", 0) >= 1:
            break
        time.sleep(0.05)
    server.stop()
    thread.join(timeout=120)
    run = result["r"]
    assert not run.success
    failure = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "failed after 3 attempts" in str(failure.event_specific_data.error)
    server.start()  # same process, same in-memory buckets: look at what was left
    stored = objects(url, bucket)
    summaries = [k for k in stored if k.startswith("servecat/runs/summary/")]
    assert 1 <= len(summaries) < 3
    for name, data in stored.items():
        if name.endswith(".parquet"):
            pq.read_table(io.BytesIO(data))  # every object is a whole Parquet file


def test_catalog_snapshots_live_on_s3(bench_env, s3):
    """model_catalog with an S3 store: snapshot, side tables and LATEST.json land in the bucket,
    nothing on local disk, and the catalog API reads them from there."""
    import dagster as dg
    import httpx

    from assets.catalog import model_catalog
    from assets.results import benchmark_results
    from catalog.api import create_app
    from catalog.snapshots import load_latest
    from tests.pipeline.support import LiveApp

    _, url, bucket = s3
    bench_env.store = s3_store(url, bucket)
    [key] = bench_env.matrix()
    bench_env.run(key)
    result = dg.materialize([benchmark_results, model_catalog], instance=bench_env.instance,
                            resources=bench_env.resources())
    assert result.success
    stored = objects(url, bucket)
    catalog = sorted(k for k in stored if k.startswith("servecat/catalog/"))
    assert "servecat/catalog/LATEST.json" in catalog
    assert "servecat/catalog/model_catalog.parquet" in catalog
    assert any(k.endswith(".deployments.parquet") for k in catalog)
    snapshot = load_latest(bench_env.store.backend())
    assert len(snapshot.frame) and "deployments" in snapshot.tables
    import os

    os.environ["SERVECAT_S3_ENDPOINT_URL"] = url  # how `servecat api --store s3://...` finds it
    try:
        with LiveApp(create_app(f"s3://{bucket}/servecat", poll_s=0.2)) as api:
            health = httpx.get(f"{api.url}/healthz").json()
            assert health["snapshot"] == snapshot.id
    finally:
        del os.environ["SERVECAT_S3_ENDPOINT_URL"]


def test_benchmark_requests_live_on_s3(s3):
    """The API's and the sensor's requests as S3 objects; two writers never lose a change."""
    import json

    from catalog.benchmark_requests import BenchmarkRequests, InvalidTransition, ObjectRequests
    from servecat.store import open_store

    _, url, bucket = s3
    root = open_store(f"s3://{bucket}/servecat", url)
    requests = BenchmarkRequests(root)
    assert isinstance(requests, ObjectRequests)
    first = requests.create("org/model", {"quantizations": ["fp16"]}, "key-sha256:abc")
    second = requests.create("org/other")
    stored = objects(url, bucket)
    assert json.loads(stored[f"servecat/benchmark_requests/{first.id}.json"])["model"] == "org/model"
    assert [r.id for r in requests.list("pending")] == sorted([first.id, second.id],
                                                             key=lambda i: (requests.get(i).created_at, i))
    assert requests.get(first.id).matrix_overrides == {"quantizations": ["fp16"]}
    assert requests.get("br-0000000000000000") is None and requests.get("../x") is None
    requests.set_status(first.id, "accepted", details={"deployments": ["d1"]})
    with pytest.raises(InvalidTransition, match="cannot go from accepted to done"):
        requests.set_status(first.id, "done")

    # Two processes (API and sensor) moving different requests at once, and racing on one.
    errors: list[Exception] = []

    def move(rid: str, steps: list[str]) -> None:
        other = BenchmarkRequests(open_store(f"s3://{bucket}/servecat", url))
        for step in steps:
            try:
                other.set_status(rid, step, reason="r" if step in ("failed", "rejected") else None,
                                 details={step: True})
            except InvalidTransition as exc:
                errors.append(exc)

    threads = [threading.Thread(target=move, args=(first.id, ["running", "done"])),
               threading.Thread(target=move, args=(first.id, ["running", "failed"])),
               threading.Thread(target=move, args=(second.id, ["rejected"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    final = requests.get(first.id)
    assert final.status in ("done", "failed")
    assert final.details["deployments"] == ["d1"] and final.details["running"] is True
    assert final.details.get("done") or final.details.get("failed")
    assert len(errors) == 2  # the loser's 'running' and its final step were refused, not lost
    assert requests.get(second.id).status == "rejected"
