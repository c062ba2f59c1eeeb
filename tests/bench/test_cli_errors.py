"""Bad flags to `servecat loadgen ...` and `servecat models build` are one line naming the flag
(exit 2 for a bad value, 1 for a failure), never a traceback. Run as a person runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from servecat.net import free_port

REPO = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:9/v1"  # never contacted: each case fails before the first request
LG = ["loadgen", "--url", URL, "--model", "m", "--tokenizer", "TOK"]


def servecat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single `Error:` line of stderr (click's usage lines may precede it)."""
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


CASES = [  # (args, exit code, what the error line says)
    (["models", "build", "tiny", "--seed", "-1"], 2, "'--seed': -1 is not in the range"),
    (["models", "build", "tiny", "--seed", str(2**70)], 2, "'--seed'"),
    (["loadgen", "--url", "file:///etc/passwd", "--model", "m"], 2,
     "'--url': 'file:///etc/passwd' is not an http:// or https:// URL"),
    (["loadgen", "--url", "127.0.0.1:8000/v1", "--model", "m"], 2, "'--url'"),
    (["loadgen", "--url", "http://h:99999/v1", "--model", "m"], 2, "'--url'"),
    ([*LG[:-1], "/no/such/tokenizer"], 2,
     "'--tokenizer': tokenizer '/no/such/tokenizer': no such file or folder"),
    ([*LG, "--timeout", "0"], 2, "'--timeout': must be a finite number > 0"),
    ([*LG, "--rate", "inf"], 2, "'--rate': must be a finite number > 0"),
    ([*LG, "--rate", "1", "--burstiness", "nan"], 2, "'--burstiness'"),
    ([*LG, "--concurrency", "0"], 2, "'--concurrency': 0 is not in the range"),
    ([*LG, "--concurrency", "2", "--rate", "1"], 2, "give --concurrency or --rate, not both"),
    ([*LG, "--extra-body", "[1]"], 2, "'--extra-body': '[1]' is not a JSON object"),
    ([*LG, "--input-tokens", "uniform:9:3"], 2, "'--input-tokens': uniform needs 1 <= min <= max"),
    ([*LG, "--output-tokens", "normal:8:2:9:3"], 2, "'--output-tokens'"),
    ([*LG, "--seed", "-1"], 2, "'--seed'"),
    ([*LG, "--profiles", "NOTYAML"], 2, "'--profiles'"),
    ([*LG, "--out", "DIR"], 2, "'--out': "),
    (["loadgen", "sweep", *LG[1:], "--concurrencies", "1,a"], 2,
     "'--concurrencies': 'a' is not an integer"),
    (["loadgen", "sweep", *LG[1:], "--rates", "0"], 2, "'--rates': '0': each level must be > 0"),
    (["loadgen", "sweep", *LG[1:], "--rate", "2", "--rates", "1"], 2,
     "--rate sets one load level; this command takes its levels from --concurrencies/--rates"),
    (["loadgen", "slo-search", *LG[1:], "--profile", "interactive", "--start", "4", "--max", "2"],
     2, "'--max': 2 is below --start 4"),
    (["loadgen", "slo-search", *LG[1:], "--profile", "nope"], 2, "'--profile': 'nope' is not one of"),
    (["loadgen", "scripted-server", "--scenario", "{\"nope\": 1}"], 2, "'--scenario'"),
    (["loadgen", "scripted-server", "--port", "-5"], 2, "'--port'"),
]


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[c[2][:48] for c in CASES])
def test_bad_flag_is_one_line(args, code, says, tokenizer_path, tmp_path):
    bad_yaml = tmp_path / "profiles.yaml"
    bad_yaml.write_text("profiles: 3\n")
    fill = {"TOK": str(tokenizer_path), "NOTYAML": str(bad_yaml), "DIR": str(tmp_path)}
    r = servecat(*[fill.get(a, a) for a in args])
    assert r.returncode == code, r.stderr
    assert says in one_error_line(r)


def test_model_out_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = servecat("models", "build", "tiny", "--out", str(blocker / "model"))
    assert r.returncode == 2
    assert f"'--out': cannot create '{blocker / 'model'}': {blocker} is not a writable folder" \
        in one_error_line(r)


def test_broken_endpoint_prints_counts_not_figures(tokenizer_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    r = servecat("loadgen", "--url", url, "--model", "m", "--tokenizer", str(tokenizer_path),
                 "--requests", "4", "--output-tokens", "2", "--no-progress")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        # more than half of the 4 failed: it stops at the third, one after another
        "requests   0 ok, 3 failed of 3 measured requests (connection_refused 3)",
        "no throughput, latency or rate figures: the workload did not run to its end"]
    assert one_error_line(r).startswith(
        f"Error: concurrency 1: stopped early: endpoint {url}/completions looks broken: "
        "3 of the first 3 requests failed (last: connection_refused")


def test_broken_warm_up_says_so(tokenizer_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = servecat("loadgen", "--url", url, "--model", "m", "--tokenizer", str(tokenizer_path),
                 "--rate", "5", "--warmup", "2", "--requests", "4", "--no-progress")
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "requests   none measured (the warm-up failed)"
    assert "2 of the first 2 warm-up requests failed" in one_error_line(r)
    assert "rate 5/s: stopped early" in one_error_line(r)


def test_broken_sweep_keeps_its_level_and_stops(tokenizer_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = servecat("loadgen", "sweep", "--url", url, "--model", "m", "--tokenizer",
                 str(tokenizer_path), "--concurrencies", "1,2", "--requests", "3", "--no-progress")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "concurrency 1          stopped early (0 ok, 2 failed of 2 measured requests "
        "(connection_refused 2))"]
    assert one_error_line(r).startswith("Error: sweep ended at concurrency 1: stopped early")
