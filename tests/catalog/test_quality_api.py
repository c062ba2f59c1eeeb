"""Quality in `/v1/recommend` over real HTTP: per item (with its reference deployment), the
profile's max_quality_loss, the max_kl / min_agreement filters, and their 422s."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from catalog import build_catalog
from catalog.recommend import build_deployments
from catalog.snapshots import write_snapshot
from tests.catalog.conftest import LiveServer
from tests.catalog.quality_runs import (
    BROKEN,
    GOOD,
    LENGTHS,
    MODEL,
    REFERENCE,
    UNPROBED,
    DictStore,
    probe_runs,
    quality_sweep,
)
from tests.catalog.test_quality import CAREFUL, FAST, WEIGHS_QUALITY

ASK = {"model": MODEL, "lengths": LENGTHS}


@pytest.fixture(scope="module")
def live(tmp_path_factory, hardware):
    from catalog.api import create_app
    from catalog.quality import stored_probe_runs
    from tests.catalog.conftest import REPO

    summary, requests = quality_sweep()
    profiles = [FAST, CAREFUL, WEIGHS_QUALITY]
    deployments = build_deployments(summary, requests, hardware, profiles, draws=40,
                                    probes=stored_probe_runs(DictStore(probe_runs())))
    root = tmp_path_factory.mktemp("quality") / "store"
    write_snapshot(build_catalog(summary, requests, hardware, profiles), root,
                   tables=deployments.tables())
    with LiveServer(create_app(root, configs_dir=REPO / "configs")) as server:
        yield server


def get(live, status=200, **params):
    r = live.client.get("/v1/recommend", params={**ASK, **params})
    assert r.status_code == status, r.text
    return r.json()


def test_each_item_carries_its_quality_and_reference(live):
    body = get(live, profile="fast")
    assert body["max_quality_loss"] == {}
    quality = {i["deployment"]: i["quality"] for i in body["items"]}
    assert set(quality) == {REFERENCE, GOOD, BROKEN, UNPROBED}
    assert {q["reference"] for d, q in quality.items() if d != UNPROBED} == {REFERENCE}
    assert quality[REFERENCE]["kl"] == 0.0 and quality[REFERENCE]["agreement"] == 1.0
    assert quality[BROKEN]["kl"] > 0.3 and quality[GOOD]["status"] == "ok"
    absent = quality[UNPROBED]
    assert absent["status"] == "not measured" and absent["reference"] is None
    assert absent["kl"] is None and absent["agreement"] is None  # never 0: not lossless


def test_a_quality_limit_lists_the_broken_quantization_unranked_saying_why(live):
    body = get(live, profile="careful")
    assert body["max_quality_loss"] == {"kl": 0.1}
    assert [i["deployment"] for i in body["items"]] == [GOOD, REFERENCE]
    why = {u["deployment"]: u for u in body["unranked"]}
    assert "max_quality_loss.kl 0.1" in why[BROKEN]["reason"]
    assert why[BROKEN]["quality"]["kl"] > 0.1
    assert "no quality figure (not measured" in why[UNPROBED]["reason"]


def test_max_kl_and_min_agreement_filter_and_leave_out_the_unmeasured(live):
    body = get(live, profile="fast", max_kl=0.1)
    assert {i["deployment"] for i in body["items"]} == {REFERENCE, GOOD}
    assert body["filters"]["max_kl"] == 0.1 and body["matching"] == 2 < body["ranked"]
    body = get(live, profile="fast", min_agreement=0.9)
    assert [i["deployment"] for i in body["items"]] == [REFERENCE]
    body = get(live, profile="fast", max_kl=0)  # only the reference loses nothing
    assert [i["deployment"] for i in body["items"]] == [REFERENCE]
    none = get(live, profile="fast", max_kl=1e-9, min_agreement=1, hardware="h100",
               engine="vllm", quantization="int8")
    assert none["items"] == [] and "max_kl=1e-09 leaves 0" in none["reason"]
    assert "without a quality figure never passes" in none["reason"]


@pytest.mark.parametrize("params, fragment", [
    ({"max_kl": "-0.1"}, "must be at least 0"),
    ({"max_kl": "nan"}, "finite"),
    ({"max_kl": "inf"}, "finite"),
    ({"max_kl": "low"}, "not a number"),
    ({"min_agreement": "1.5"}, "must be at most 1"),
    ({"min_agreement": "-0.5"}, "must be at least 0"),
    ({"min_agreement": "NaN"}, "finite"),
])
def test_bad_quality_filters_are_422s_naming_the_parameter(live, params, fragment):
    body = get(live, 422, profile="fast", **params)
    [name] = params
    assert body["parameter"] == name and name in body["error"] and fragment in body["error"]


def test_the_page_has_the_quality_filters(live):
    page = live.client.get("/", params={**ASK, "profile": "careful", "max_kl": "0.1"})
    assert page.status_code == 200
    assert 'name="max_kl"' in page.text and 'value="0.1"' in page.text
    assert 'name="min_agreement"' in page.text and "KL ≤ 0.1" in page.text
    bad = live.client.get("/", params={**ASK, "profile": "fast", "min_agreement": "2"})
    assert bad.status_code == 422 and "min_agreement" in bad.text


def test_the_page_shows_quality_beside_cost_and_capacity(live, tmp_path):
    from tests.catalog.test_page_browser import CHROMIUM, rendered

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    query = {**ASK, "profile": "careful"}
    api = get(live, **query)
    dom = rendered(f"{live.url}/?{urlencode(query)}", tmp_path)
    [answer] = dom.find("main", id="answer")
    assert answer.attrs["data-state"] == "ready", answer.all_text()[:2000]
    assert "KL ≤ 0.1" in dom.find("dl", id="workload")[0].all_text()
    rows = dom.find("table", id="ranked")[0].find("tbody")[0].find("tr")
    for row, item in zip(rows, api["items"], strict=True):
        [cell] = row.find("td", cls="quality")
        q = item["quality"]
        assert cell.text == f"KL {q['kl']:.2g} · agreement {round(q['agreement'] * 100)}%"
        against = "the reference" if item["deployment"] == REFERENCE else f"vs {REFERENCE}"
        assert cell.all_text().endswith(against)
    unranked = dom.find("table", id="unranked")[0].find("tbody")[0].find("tr")
    cells = {r.attrs["data-deployment"]: r.find("td", cls="quality")[0].all_text()
             for r in unranked}
    assert cells[UNPROBED] == "not measured" and cells[BROKEN].startswith("KL ")
