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


def test_perf_api_compares_hand_and_fastapi_parameters(tmp_path):
    out = tmp_path / "perf.json"
    result = CliRunner().invoke(perf_api, ["--rows", "4000", "--models", "2", "--clients", "3",
                                           "--rate", "5", "--duration", "1", "--closed-duration",
                                           "0", "--warmup", "0.3", "--compare-params",
                                           "--compare-rounds", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    compare = json.loads(out.read_text())["params_compare"]
    # ABBA: each parser runs once per round, over the same queries, without errors.
    assert [r["parser"] for r in compare["rounds"]] == ["hand", "fastapi", "fastapi", "hand"]
    for parser in ("hand", "fastapi"):
        assert compare[parser]["requests"] > 0 and compare[parser]["errors"] == 0
    assert compare["p95_difference_ms"] == compare["fastapi"]["p95_ms"] - compare["hand"]["p95_ms"]
    assert "FastAPI − hand: p95" in result.output


def test_fastapi_twin_answers_as_the_hand_parsed_routes(tmp_path):
    """The twin routes are only a fair comparison if they answer the same bytes."""
    from fastapi.testclient import TestClient

    from catalog.api import create_app
    from cli.commands.perf_api import build_store, query_mix
    from cli.commands.perf_api_twin import PREFIX, add_twins

    built = build_store(tmp_path / "store", 2000, 2, 0)
    app = create_app(tmp_path / "store")
    add_twins(app)
    paths = query_mix(built["model_names"], built["profiles"], 30, 1, built["lengths"])
    with TestClient(app) as client:
        for path in paths:
            hand, twin = client.get(path), client.get(PREFIX + path)
            assert hand.status_code == twin.status_code == 200, path
            assert hand.content == twin.content, path
        # Unknown and out-of-bounds parameters are refused by both.
        for bad in ("/v1/catalog?limit=0", "/v1/catalog?bogus=1", "/v1/recommend?model=x"):
            assert client.get(bad).status_code == client.get(PREFIX + bad).status_code == 422
