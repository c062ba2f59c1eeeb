"""`servecat loadgen` (one workload, sweep, slo-search) against the scripted server."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bench.profiles import Profile
from bench.schema import REQUEST_SCHEMA, SUMMARY_SCHEMA
from bench.scripted_server import Scenario, scripted_server
from bench.sweep import slo_search
from bench.workload import Workload
from cli.main import main


@pytest.fixture(scope="module")
def url():
    with scripted_server(Scenario(ttft_ms=(5, 10), gap_ms=(1, 2))) as u:
        yield u


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_loadgen_prints_summary_and_writes_files(url, tokenizer_path, tmp_path):
    out, js = tmp_path / "req.parquet", tmp_path / "summary.json"
    text = _run(["loadgen", "--url", url, "--model", "m", "--tokenizer", str(tokenizer_path),
                 "--concurrency", "4", "--requests", "20", "--input-tokens", "uniform:8:16",
                 "--output-tokens", "4", "--out", str(out), "--json", str(js)])
    assert "20/20 ok" in text and "TTFT" in text and "interactive" in text
    assert pq.read_table(out).schema == REQUEST_SCHEMA
    assert list(json.loads(js.read_text())) == SUMMARY_SCHEMA.names


def test_loadgen_rate_and_chat(url, tokenizer_path):
    text = _run(["loadgen", "--url", url, "--model", "m", "--tokenizer", str(tokenizer_path),
                 "--rate", "50", "--max-concurrency", "4", "--requests", "20", "--api", "chat",
                 "--output-tokens", "3", "--no-progress"])
    assert "target 50.00" in text


def test_loadgen_usage_errors(url, tokenizer_path):
    r = CliRunner().invoke(main, ["loadgen", "--url", url, "--model", "m", "--tokenizer",
                                  str(tokenizer_path), "--input-tokens", "lots"])
    assert r.exit_code == 2 and "--input-tokens 'lots'" in r.output


def test_sweep_and_slo_search_commands(url, tokenizer_path, tmp_path):
    common = ["--url", url, "--model", "m", "--tokenizer", str(tokenizer_path), "--requests", "8",
              "--output-tokens", "3"]
    text = _run(["loadgen", "sweep", *common, "--concurrencies", "1,2", "--out", str(tmp_path / "s.parquet")])
    assert pq.read_table(tmp_path / "s.parquet").column("concurrency").to_pylist() == [1, 2]
    text = _run(["loadgen", "slo-search", *common, "--profile", "interactive", "--max", "4"])
    assert "highest concurrency meeting interactive: ≥ 4 (never failed up to --max 4)" in text


def test_slo_search_doubles_then_bisects(monkeypatch, tokenizer_path):
    # A fake endpoint whose p99 TTFT is 10 ms per concurrency: 450 ms allows 45.
    from bench import sweep as sweep_module

    seen = []

    def fake_run(endpoint, w, tok, profiles, **kw):
        seen.append(w.concurrency)
        return type("R", (), {"summary": {"num_failed": 0, "ttft_p99_ms": 10.0 * w.concurrency,
                                          "tpot_p99_ms": 5.0}})()

    monkeypatch.setattr(sweep_module, "run_workload", fake_run)
    found = slo_search(None, Workload(concurrency=1), tokenizer_path, Profile("p", 450, 40))
    assert found.best_concurrency == 45
    assert seen[:7] == [1, 2, 4, 8, 16, 32, 64]  # doubling, then bisection
    assert [c for c, ok, _ in found.probes if ok][-1] == 45
