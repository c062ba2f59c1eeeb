"""`servecat results sql|shell`: DuckDB views over a real store, on disk and on S3 (moto),
run as a subprocess like a person would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from resources.store import ResultStore
from tests.pipeline.support import Bench, scripted_command, spec_dict
from tests.pipeline.test_s3 import s3, s3_store  # noqa: F401 - s3 is the moto fixture

REPO = Path(__file__).resolve().parents[2]
COUNTS = "SELECT (SELECT count(*) FROM matrix) m, (SELECT count(*) FROM summary) s, " \
         "(SELECT count(*) FROM requests) r"


def servecat(*args: str, env: dict | None = None, stdin: str | None = None):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model) -> Path:
    """A store written by one real benchmark_runs partition (3 levels x 8 requests)."""
    root = tmp_path_factory.mktemp("results")
    (root / "home").mkdir()
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(tiny_model)))
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        bench = Bench(root, instance, spec, ResultStore(root=str(root / "store")),
                      f"sqlite:///{root / 'mlflow.db'}",
                      {"openai": scripted_command({"ttft_ms": [2, 4], "gap_ms": [0.5, 1]})})
        [key] = bench.matrix()
        bench.run(key)
    return root / "store"


def test_sql_counts_the_views_of_a_local_store(store):
    r = servecat("results", "sql", COUNTS, "--store", str(store), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"m": 3, "s": 3, "r": 24}]
    r = servecat("results", "sql", "SELECT status, valid, count(*) n FROM summary GROUP BY ALL",
                 "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].split() == ["status", "valid", "n"]
    assert r.stdout.split("\n")[2].split() == ["ok", "True", "3"]
    r = servecat("results", "sql", "SELECT ok FROM requests LIMIT 2", "--store", str(store),
                 "--format", "csv")
    assert r.stdout.splitlines() == ["ok", "True", "True"]


def test_sql_reads_the_store_on_s3(store, s3):  # noqa: F811 - the moto fixture
    _, url, bucket = s3
    remote = s3_store(url, bucket)
    for path in sorted(store.rglob("*.parquet")):
        remote.write_bytes(str(path.relative_to(store)), path.read_bytes())
    env = dict(os.environ, SERVECAT_S3_ENDPOINT_URL=url)
    r = servecat("results", "sql", COUNTS, "--store", remote.root, "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"m": 3, "s": 3, "r": 24}]
    # SERVECAT_STORE is the default store, as for the pipeline.
    r = servecat("results", "sql", "SELECT count(*) n FROM requests WHERE ok", "--format", "csv",
                 env=env | {"SERVECAT_STORE": remote.root})
    assert r.stdout.splitlines() == ["n", "24"], r.stderr


def test_shell_runs_queries_until_end_of_input(store):
    r = servecat("results", "shell", "--store", str(store), "--format", "csv",
                 stdin="SELECT count(*) AS n\nFROM summary;\n.tables\nSELECT nope;\nSELECT 7 AS x;\n")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["n", "3", "matrix  summary  requests", "x", "7"]
    assert r.stderr.count("\n") == 1 and "Error: Binder Error" in r.stderr


def test_errors_are_one_line(store, tmp_path):
    r = servecat("results", "sql", "SELECT * FROM nowhere", "--store", str(store))
    assert r.returncode == 1 and r.stderr.startswith("Error: query failed: Catalog Error")
    assert r.stderr.count("\n") == 1
    r = servecat("results", "sql", "SELECT 1", "--store", str(tmp_path / "missing"))
    assert r.returncode == 2 and "Invalid value for '--store': no store at" in r.stderr
    assert "Traceback" not in r.stderr
