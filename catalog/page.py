"""The HTML page at `/`: a model × profile's top configs and its Pareto chart as inline SVG.

Self-contained (no scripts, no external assets), so it works with no network at all.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from catalog.index import CatalogIndex

WIDTH, HEIGHT, PAD = 720, 400, 56
MAX_POINTS = 1500
TABLE_FIELDS = ("rank", "hardware", "gpu_count", "engine", "quantization", "max_num_seqs", "load",
                "concurrency", "rate", "output_tokens_per_s_per_gpu", "ttft_p99_ms", "tpot_p99_ms",
                "cost_per_mtok_on_demand", "slo_attainment", "pareto", "topsis_score", "rank_note")

STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td.l{text-align:left}.muted{color:#777}svg text{font:11px sans-serif}"""


def _fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _select(name: str, options: list[str], chosen: str) -> str:
    opts = "".join(f'<option{" selected" if o == chosen else ""}>{escape(o)}</option>'
                   for o in options)
    return f'<label>{name} <select name="{name}">{opts}</select></label> '


def chart_svg(index: CatalogIndex, model: str, profile: str) -> str:
    """Scatter of throughput per GPU vs p99 TTFT (log scale) for the group; the front in red."""
    g = index.group(model, profile)
    rows = np.arange(g.start, g.start + g.ranked)
    if not len(rows):
        return '<p class="muted">no ranked configs to chart</p>'
    front = rows[index.arrays["pareto"][rows]]
    # A deterministic stride sample keeps the page small; front points are always drawn.
    sample = rows[:: max(1, len(rows) // MAX_POINTS)]
    x_all = index.arrays["ttft_p99_ms"][rows]
    y_all = index.arrays["output_tokens_per_s_per_gpu"][rows]
    x_lo, x_hi = math.log10(max(np.nanmin(x_all), 1e-3)), math.log10(max(np.nanmax(x_all), 1e-3))
    y_hi = float(np.nanmax(y_all)) or 1.0
    x_span = (x_hi - x_lo) or 1.0

    def xy(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = PAD + (np.log10(np.maximum(index.arrays["ttft_p99_ms"][r], 1e-3)) - x_lo) / x_span * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - index.arrays["output_tokens_per_s_per_gpu"][r] / y_hi * (HEIGHT - 2 * PAD)
        return x, y

    sx, sy = xy(sample)
    fx, fy = xy(front[np.argsort(index.arrays["ttft_p99_ms"][front])])
    dots = "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="#9ab"/>' for a, b in zip(sx, sy, strict=True))
    front_dots = "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="#d33"/>'
                         for a, b in zip(fx, fy, strict=True))
    ticks = "".join(
        f'<text x="{PAD + (e - x_lo) / x_span * (WIDTH - 2 * PAD):.1f}" y="{HEIGHT - PAD + 16}" '
        f'text-anchor="middle">{10 ** e:g}</text>'
        for e in range(math.ceil(x_lo), math.floor(x_hi) + 1))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'role="img" aria-label="Pareto chart">'
            f'<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}" '
            f'fill="none" stroke="#888"/>{dots}{front_dots}{ticks}'
            f'<text x="{WIDTH / 2}" y="{HEIGHT - 12}" text-anchor="middle">p99 TTFT (ms, log)</text>'
            f'<text x="14" y="{HEIGHT / 2}" transform="rotate(-90 14 {HEIGHT / 2})" '
            f'text-anchor="middle">output tokens/s per GPU</text>'
            f'<text x="{PAD}" y="{PAD - 8}">0 – {y_hi:.4g} tokens/s per GPU; '
            f'red: Pareto front ({len(front)}), grey: {len(sample)} of {len(rows)} configs</text></svg>')


def render_page(index: CatalogIndex, model: str, profile: str, top: int = 20) -> str:
    """The page for MODEL and PROFILE (both already checked to exist)."""
    result = index.recommend(model=model, profile=profile, top=top)
    header = "".join(f"<th>{escape(f)}</th>" for f in TABLE_FIELDS)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=l" if isinstance(item[f], str) else ""}>{escape(_fmt(item[f]))}</td>'
                         for f in TABLE_FIELDS) + "</tr>"
        for item in result["items"])
    info = index.profiles.get(profile, {})
    slo = (f"SLO: p99 TTFT ≤ {_fmt(info.get('ttft_p99_ms'))} ms, p99 TPOT ≤ "
           f"{_fmt(info.get('tpot_p99_ms'))} ms") if "ttft_p99_ms" in info else ""
    form = (f'<form method="get">{_select("model", index.model_names, model)}'
            f'{_select("profile", sorted(index.profiles), profile)}<button>show</button></form>')
    return (f"<!doctype html><html><head><meta charset=utf-8><title>servecat catalog: "
            f"{escape(model)} / {escape(profile)}</title><style>{STYLE}</style></head><body>"
            f"<h1>servecat catalog</h1>{form}<p>{escape(model)} · profile <b>{escape(profile)}</b> "
            f"· {escape(slo)} · {result['matching']} ranked configs · snapshot "
            f"<code>{escape(index.snapshot_id)}</code></p>{chart_svg(index, model, profile)}"
            f"<h2>Top {len(result['items'])}</h2><table><tr>{header}</tr>{body}</table>"
            f'<p class="muted">JSON: <a href="/docs">/docs</a></p></body></html>')


def message_page(title: str, message: str) -> str:
    """A plain page for errors (no catalog yet, unknown model)."""
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><p>{escape(message)}</p>"
            f"</body></html>")
