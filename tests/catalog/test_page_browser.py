"""The page at `/` in headless Chromium against a live API: after its script ran, the ranked
table, the unranked list, the cost-vs-capacity chart and each deployment's latency charts are
in the DOM with the counts /v1/recommend and /v1/curves imply, and bad input is shown beside
the form. Skipped, saying why, where Chromium is not installed (`make test` installs it when
it can)."""

from __future__ import annotations

import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.catalog.conftest import SWEEP_MODEL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian "
                                "package `chromium`; `make test` installs it when it can)")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Node:
    """An element of the dumped DOM: tag, attributes, children and text."""

    def __init__(self, tag: str, attrs: dict[str, str | None]):
        self.tag, self.attrs = tag, attrs
        self.children: list[Node] = []
        self.text = ""

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        """Every descendant with TAG, class CLS and ATTRS, in document order."""
        out = []
        for child in self.children:
            if ((tag is None or child.tag == tag) and (cls is None or cls in child.classes)
                    and all(child.attrs.get(k) == v for k, v in attrs.items())):
                out.append(child)
            out += child.find(tag, cls, **attrs)
        return out

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):  # tolerate a stray end tag
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                break

    def handle_data(self, data):
        self.stack[-1].text += data


def rendered(url: str, profile_dir: Path) -> Node:
    """URL's DOM after its scripts ran: virtual time lets the fetches finish first."""
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile_dir}", "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and "<html" in run.stdout, run.stderr[-2000:]
    builder = TreeBuilder()
    builder.feed(run.stdout)
    return builder.root


def front_2d(points: list[tuple[float, float]]) -> int:
    """How many POINTS (capacity, cost) no other beats on both: more capacity, lower cost."""
    return sum(not any(x2 >= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in points)
               for x, y in points)


def test_page_draws_the_ranked_deployments_and_their_charts(sweep_live, tmp_path):
    query = {"model": SWEEP_MODEL, "profile": "interactive", "lengths": "512:256",
             "demand_rps": 23}
    api = sweep_live.client.get("/v1/recommend", params=query).json()
    items, unranked = api["items"], api["unranked"]
    assert items and unranked  # the data shows both tables
    dom = rendered(f"{sweep_live.url}/?{urlencode(query)}", tmp_path)

    [answer] = dom.find("main", id="answer")
    assert answer.attrs["data-state"] == "ready", answer.all_text()[:2000]
    workload = dom.find("dl", id="workload")[0].all_text()
    assert "512:256" in workload and "23 req/s" in workload and "p99 TTFT ≤ 450 ms" in workload

    [table] = dom.find("table", id="ranked")
    rows = table.find("tbody")[0].find("tr")
    assert [r.attrs["data-deployment"] for r in rows] == [i["deployment"] for i in items]
    for row, item in zip(rows, items, strict=True):
        assert row.find("td")[0].all_text() == str(item["rank"])
        capacity = row.find("td", cls="capacity")[0].all_text()
        assert capacity.startswith("≥ ") == item["capacity"]["lower_bound"]
        [replicas] = row.find("td", cls="replicas")
        assert replicas.text.removeprefix("≤ ") == str(item["serving"]["replicas"])
        # No probe run in this catalog: quality says so, never a figure of no loss.
        [quality] = row.find("td", cls="quality")
        assert quality.all_text() == "not measured" == item["quality"]["status"]
    [missing] = dom.find("table", id="unranked")
    assert [r.attrs["data-deployment"] for r in missing.find("tbody")[0].find("tr")] == \
        [u["deployment"] for u in unranked]
    assert "lowest measured level" in missing.all_text()

    [cost] = dom.find("figure", id="cost")
    assert len(cost.find("circle", cls="point")) == len(items)
    points = [(i["capacity"]["rps"], i["operating_point"]["cost_per_mtok_on_demand"])
              for i in items]
    assert len(cost.find("circle", cls="on-front")) == front_2d(points)
    assert len(cost.find("path", cls="front")) == 1
    assert_axes(cost.find("svg")[0])

    cards = dom.find("figure", cls="curve-card")
    assert [c.attrs["data-deployment"] for c in cards] == \
        [d["deployment"] for d in [*items, *unranked]]
    for card in cards:
        deployment = card.attrs["data-deployment"]
        curve = sweep_live.client.get("/v1/curves", params={"deployment": deployment,
                                                            "lengths": "512:256"}).json()
        levels = [lv for lv in curve["lengths"][0]["levels"] if lv["requests_per_s"] is not None]
        panels = card.find("svg", cls="latency")
        assert len(panels) == 2  # p99 TTFT and p99 TPOT
        ranked = deployment in {i["deployment"] for i in items}
        for panel in panels:
            assert len(panel.find("path", cls="curve")) == 1  # one closed-loop sweep, joined
            assert len(panel.find("circle", cls="level")) == len(levels)
            assert len(panel.find("path", cls="errorbar")) == len(levels)
            # The SLO as a dashed line, or a note when it is far above every level.
            assert len(panel.find("text", cls="slo-label")) == 1
            assert len(panel.find("path", cls="operating-point")) == (1 if ranked else 0)
            assert_axes(panel)


def assert_axes(chart: Node) -> None:
    """Real axes: several numeric ticks on each, and both axis titles."""
    [axes] = chart.find("g", cls="axes")
    ticks = [t.all_text() for t in axes.find("text") if not t.classes & {"label", "title"}]
    numbers = [float(t.replace(",", "")) for t in ticks]
    assert len(numbers) >= 6 and all(math.isfinite(n) for n in numbers)
    assert len(axes.find("text", cls="label")) == 2


def test_page_shows_bad_input_beside_the_form(sweep_live, tmp_path):
    query = {"model": SWEEP_MODEL, "profile": "interactive", "lengths": "chat"}
    assert sweep_live.client.get("/", params=query).status_code == 404
    dom = rendered(f"{sweep_live.url}/?{urlencode(query)}", tmp_path)
    [answer] = dom.find("main", id="answer")
    assert answer.attrs["data-state"] == "error"
    assert "unknown length profile 'chat'" in dom.find("p", id="error")[0].all_text()
    [field] = dom.find("select", name="lengths")
    assert "invalid" in field.classes
