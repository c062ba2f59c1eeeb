"""`servecat perf api` end to end at toy size: API and load in their own processes."""

import json

from click.testing import CliRunner

from cli.commands.perf_api import perf_api


def test_perf_api_smoke(tmp_path):
    out = tmp_path / "perf.json"
    result = CliRunner().invoke(perf_api, ["--rows", "4000", "--models", "2", "--clients", "5",
                                           "--rate", "5", "--duration", "1.5",
                                           "--closed-duration", "1", "--warmup", "0.5",
                                           "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    paced, closed = data["phases"]
    assert data["catalog_rows"] == 4000 and paced["errors"] == 0 and closed["errors"] == 0
    assert paced["requests"] > 0 and closed["rps"] > 0 and data["pareto_100k_front"] > 0
    assert paced["api_p95_ms"] > 0  # the API's own time, from its Server-Timing header
    assert "p95 ms" in result.output
