"""One SLO rule: per request, per load level, and every site that asks "meets the SLO?" agrees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.deployment_run import Saturation
from bench.profiles import Profile as BenchProfile
from bench.profiles import as_profile, load_profiles
from bench.sweep import meets
from catalog.config import Profile as CatalogProfile
from catalog.slo import RequestOutcomes, meets_slo
from servecat.slo import Slo, holds, level_holds, level_misses, misses, request_meets

SLO = Slo(ttft_p99_ms=450, tpot_p99_ms=40)
NAN = float("nan")


def test_request_meets_ok_ttft_and_tpot_with_nan_tpot_passing():
    ok = [True, True, True, False, True, True]
    ttft = [450, 451, 100, 100, NAN, 100]
    tpot = [40, 10, 41, 10, 10, NAN]
    assert request_meets(ok, ttft, tpot, SLO).tolist() == [True, False, False, False, False, True]


def test_level_holds_needs_known_ttft_and_error_rate_and_passes_nan_tpot():
    ttft = [400, 400, 500, NAN, 400, 400]
    tpot = [30, NAN, 30, 30, 50, 30]
    err = [0.0, 0.0, 0.0, 0.0, 0.0, 0.01]
    assert holds(ttft, tpot, err, SLO).tolist() == [True, True, False, False, False, False]
    assert holds(ttft, tpot, err, Slo(450, 40, max_error_rate=0.01)).tolist()[-1]
    assert not holds(400, 30, NAN, SLO)
    assert misses([500], [50], [0.1], SLO).tolist() == [[True, True, True]]


def test_level_holds_on_a_summary_dict_and_a_dataframe():
    rows = [
        {"ttft_p99_ms": 400.0, "tpot_p99_ms": 30.0, "error_rate": 0.0},
        {"ttft_p99_ms": 400.0, "tpot_p99_ms": None, "num_failed": 0},  # no error_rate: from counts
        {"ttft_p99_ms": 400.0, "tpot_p99_ms": 30.0, "num_failed": 1, "num_requests": 100},
        {"ttft_p99_ms": None, "tpot_p99_ms": None, "num_failed": 4, "num_requests": 4},
        {},
    ]
    expected = [True, True, False, False, False]
    assert [level_holds(r, SLO) for r in rows] == expected
    assert level_holds(pd.DataFrame(rows), SLO).tolist() == expected
    assert level_misses(pd.DataFrame(rows), SLO)[2].tolist() == [False, False, True]


def test_every_site_uses_the_one_rule():
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame({
        "ttft_p99_ms": rng.uniform(300, 600, n), "tpot_p99_ms": rng.uniform(20, 60, n),
        "num_requests": 50, "num_failed": rng.choice([0, 0, 0, 1], n),
    })
    frame.loc[::7, "tpot_p99_ms"] = np.nan
    frame["error_rate"] = frame["num_failed"] / frame["num_requests"]
    bench_p = BenchProfile("p", 450, 40)
    catalog_p = CatalogProfile("p", 450, 40, weights={"ttft_p99_ms": 1.0})
    rule = level_holds(frame, Slo.of(bench_p))
    assert 0 < rule.sum() < n
    rows = frame.to_dict("records")
    assert [meets(r, bench_p) for r in rows] == rule.tolist()             # bench/sweep.py
    assert meets_slo(frame, catalog_p).tolist() == rule.tolist()          # catalog/slo.py
    # bench/deployment_run.py: at margin 1 and no throughput growth, saturated <=> not holds.
    saturation = Saturation(450, 40, margin=1.0, min_growth=0.0)
    previous = {"output_tokens_per_s": 200.0}
    stopped = [saturation.reason(r | {"output_tokens_per_s": 100.0}, previous) is not None
               for r in rows]
    assert stopped == (~rule).tolist()


def test_request_sites_agree():
    rng = np.random.default_rng(4)
    n = 500
    requests = pd.DataFrame({"config_id": rng.choice(["a", "b", "c"], n), "ok": rng.random(n) > 0.05,
                             "ttft_ms": rng.uniform(300, 600, n), "tpot_ms": rng.uniform(20, 60, n)})
    requests.loc[::9, "tpot_ms"] = np.nan
    outcomes = RequestOutcomes.align(pd.Series(["a", "b", "c"]), requests)
    profile = CatalogProfile("p", 450, 40, weights={"ttft_p99_ms": 1.0})
    met = request_meets(requests["ok"], requests["ttft_ms"], requests["tpot_ms"], Slo.of(profile))
    expected = [met[requests["config_id"] == c].sum() for c in "abc"]
    np.testing.assert_array_equal(outcomes.meeting(profile), expected)


def test_profiles_yaml_fields_still_parse_and_max_error_rate_is_optional():
    profiles = load_profiles()
    assert {p.name for p in profiles} >= {"interactive", "server"}
    assert all(p.max_error_rate == 0.01 for p in profiles)  # as configs/profiles.yaml says
    p = as_profile({"name": "x", "slo": {"ttft_p99_ms": 100, "tpot_p99_ms": 10,
                                         "max_error_rate": 0.01}})
    assert p.slo == Slo(100, 10, 0.01)
    assert as_profile({"name": "x", "slo": {"ttft_p99_ms": 1, "tpot_p99_ms": 1}}).max_error_rate == 0
    with pytest.raises(ValueError, match=r"profile\.slo\.ttft_p99_ms: -1 is not a positive"):
        as_profile({"name": "x", "slo": {"ttft_p99_ms": -1, "tpot_p99_ms": 10}})
    with pytest.raises(ValueError, match=r"slo\.p95: unknown SLO"):
        Slo.from_mapping({"ttft_p99_ms": 1, "tpot_p99_ms": 1, "p95": 3})
    with pytest.raises(ValueError, match="max_error_rate"):
        Slo(1, 1, max_error_rate=2)


def test_scaled_keeps_the_error_limit():
    assert Slo(100, 10, 0.01).scaled(2) == Slo(200, 20, 0.01)
