"""The HTML page at `/`: a form that asks the catalog's question (model, profile, traffic,
demand, filters) and the answer, drawn in the browser by static/page.js from /v1/recommend and
/v1/curves: the page is a client of the public API, so it shows exactly what a client gets.

Everything it loads is served by the API itself (static/), so it works with no network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from catalog.errors import QueryError
from catalog.estimate_points import ESTIMATES_PARAM
from catalog.index import CatalogIndex
from catalog.params import PAGE_PARAMS, parse_query
from catalog.recommend_query import DeploymentIndex

# What the page passes on to /v1/recommend: its parameters, every one optional.
PAGE_QUERY = (*PAGE_PARAMS, ESTIMATES_PARAM)
STATIC = Path(__file__).parent / "static"
STATIC_URL = "static/page"  # relative, like every URL of the page: it works under a path prefix
STYLE = ("body{font:14px system-ui,sans-serif;margin:24px;color:#222}"
         ".muted{color:#777}")


class Revalidated(StaticFiles):
    """Static files a browser revalidates before each use (a 304 when unchanged): after an
    upgrade it never runs a cached old chart.js under a new page.js."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_assets(app: FastAPI) -> None:
    """Serve static/ at STATIC_URL: the page's script and stylesheet."""
    app.mount("/" + STATIC_URL, Revalidated(directory=STATIC), name="page-assets")


def answer_page(index: CatalogIndex, deployments: DeploymentIndex,
                query: Mapping[str, str]) -> tuple[str, int]:
    """The page for QUERY and its status: 200, or the 4xx /v1/recommend would answer (the
    page then shows the message beside the form, so the person can fix the field)."""
    values = _with_defaults(deployments, dict(query))
    try:  # the same parse and checks as /v1/recommend: the page answers what the API would
        args = parse_query(values, PAGE_QUERY)
        deployments.recommend(**args, limit=1)
        error, status = None, 200
    except QueryError as exc:
        error, status = exc, exc.status
    return _page(index, deployments, values, error), status


def _with_defaults(deployments: DeploymentIndex, values: dict[str, str]) -> dict[str, str]:
    """VALUES with a model, a profile and, when no traffic is given, the model's first
    measured length profile. (page.js leaves empty fields out of the URL.)"""
    out = dict(values)
    out.setdefault("model", deployments.models[0])
    out.setdefault("profile", next(iter(deployments.profiles)))
    measured = sorted(deployments.lengths.get(out["model"], {}))
    if measured and not {"lengths", "input_tokens", "output_tokens"} & set(out):
        out["lengths"] = measured[0]
    return out


def _page(index: CatalogIndex, deployments: DeploymentIndex, values: dict[str, str],
          error: QueryError | None) -> str:
    model, profile = values["model"], values["profile"]
    found = (f'<p class="error" id="error" data-parameter="{escape(error.param or "")}">'
             f"{escape(error.message)}</p>" if error else
             '<p class="muted">Asking the catalog…</p>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>servecat: {escape(model)} · {escape(profile)}</title>"
            f'<link rel="stylesheet" href="{STATIC_URL}/page.css"></head><body>'
            f"<h1>servecat: which deployment should serve this model?</h1>"
            f"{_form(deployments, values)}"
            f'<main id="answer" data-state="loading">{found}'
            f"<noscript><p>This page draws its answer with JavaScript; the same answer as "
            f'JSON: <a href="v1/recommend">/v1/recommend</a>.</p></noscript></main>'
            f'<p class="muted">Snapshot <code>{escape(index.snapshot_id)}</code> · API: '
            f'<a href="docs">/docs</a> · raw per-config rows: '
            f'<a href="v1/catalog?model={escape(model)}">/v1/catalog</a></p>'
            f'<script type="module" src="{STATIC_URL}/page.js"></script></body></html>')


def _form(deployments: DeploymentIndex, values: dict[str, str]) -> str:
    model, profile = values["model"], values["profile"]
    lengths = deployments.lengths.get(model, {})
    length_options = [("", "nearest to the tokens →"),
                      *((k, f"{k} ({_tokens(v)})") for k, v in sorted(lengths.items()))]
    by_name = "lengths" in values
    about = deployments.profiles.get(profile, {})
    slo = ", ".join([*(f"{label} ≤ {about[key]:g}{unit}" for key, label, unit in (
        ("ttft_p99_ms", "p99 TTFT", " ms"), ("tpot_p99_ms", "p99 TPOT", " ms"))
        if isinstance(about.get(key), int | float)), *_quality_limits(about)])
    any_of = [("", "any")]
    return (
        '<form id="query" method="get" action="">'
        "<fieldset><legend>What to serve</legend>"
        + _select("model", "model", [(m, m) for m in deployments.models], model)
        + _select("profile", "profile (SLOs + weights)",
                  [(p, p) for p in deployments.profiles], profile)
        + f'<span class="hint">{escape(str(about.get("description", "")))}'
          f'{" · " if slo else ""}{escape(slo)}</span></fieldset>'
        "<fieldset><legend>Your traffic</legend>"
        + _select("lengths", "length profile", length_options, values.get("lengths", ""))
        + _number("input_tokens", "or mean input tokens", values, disabled=by_name)
        + _number("output_tokens", "and mean output tokens", values, disabled=by_name)
        + _number("demand_rps", "demand (requests/s)", values)
        + "</fieldset><fieldset><legend>Limits</legend>"
        + _select("hardware", "hardware", any_of + _pairs(deployments.known["hardware"]),
                  values.get("hardware", ""))
        + _select("engine", "engine", any_of + _pairs(deployments.known["engine"]),
                  values.get("engine", ""))
        + _select("quantization", "quantization",
                  any_of + _pairs(deployments.known["quantization"]),
                  values.get("quantization", ""))
        + _number("max_gpus", "max GPUs in all", values, step="1", low="1")
        + _number("max_usd_per_hour", "max $/hour in all", values)
        + _number("max_kl", "max KL vs reference (nats)", values)
        + _number("min_agreement", "min greedy agreement (0–1)", values, high="1")
        + _select("estimates", "estimates", [("exclude", "measured only"),
                                             ("include", "list after the measured")],
                  values.get("estimates", "exclude"))
        + "<button>Show</button></fieldset></form>")


def _quality_limits(about: Mapping[str, Any]) -> list[str]:
    """A profile's max_quality_loss in words: `KL ≤ 0.05`, `agreement ≥ 0.5`."""
    limits = about.get("max_quality_loss") or {}
    words = {"kl": "KL ≤ ", "perplexity_ratio": "perplexity ratio ≤ ", "agreement": "agreement ≥ "}
    return [f"{words.get(k, k + ' ')}{v:g}" for k, v in limits.items()
            if isinstance(v, int | float)]


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(n, n) for n in names]


def _select(name: str, label: str, options: list[tuple[str, str]], chosen: str) -> str:
    known = {value for value, _ in options}
    if chosen not in known:  # a value typed into the URL: keep it visible, the API judges it
        options = [*options, (chosen, chosen)]
    opts = "".join(f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>'
                   f"{escape(text)}</option>" for v, text in options)
    return f'<label>{escape(label)}<select name="{name}">{opts}</select></label>'


def _number(name: str, label: str, values: Mapping[str, Any], step: str = "any",
            low: str = "0", disabled: bool = False, high: str | None = None) -> str:
    value = escape(str(values.get(name, "")))
    top = f' max="{high}"' if high is not None else ""
    return (f'<label>{escape(label)}<input type="number" name="{name}" min="{low}"{top} '
            f'step="{step}" value="{value}"{" disabled" if disabled else ""}></label>')


def _tokens(pair: tuple[float, float]) -> str:
    i, o = pair
    return f"{i:g} in / {o:g} out" if math.isfinite(i) and math.isfinite(o) else "token counts unknown"


def message_page(title: str, message: str) -> str:
    """A plain page for when there is nothing to ask (no catalog yet, an old snapshot)."""
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><p>{escape(message)}</p>"
            f"</body></html>")
