// Small SVG charts with real axes: linear scales, 1-2-5 ticks, grid, axis titles, and
// tooltips as SVG <title> children (native, keyboard-free, no library, no network).

const NS = "http://www.w3.org/2000/svg";

/** An SVG element with ATTRS; string children become text, a `title` attr becomes a tooltip. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "title") {
      const tip = document.createElementNS(NS, "title");
      tip.textContent = value;
      node.appendChild(tip);
    } else if (value !== null && value !== undefined) {
      node.setAttribute(key, value);
    }
  }
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export const finite = (v) => typeof v === "number" && Number.isFinite(v);

/** V with DIGITS significant digits and thousands separators; "–" when missing. */
export function fmt(v, digits = 3) {
  if (!finite(v)) return "–";
  return v.toLocaleString("en-US", { maximumSignificantDigits: digits });
}

/** About COUNT round ticks (1, 2 or 5 × 10^k apart) covering [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + (lo === 0 ? 1 : Math.abs(lo));
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => raw <= s);
  const first = Math.floor(lo / step) * step;
  const out = [];
  for (let t = first; t <= hi + step * 0.999; t += step) out.push(Number(t.toPrecision(12)));
  return { values: out, step };
}

function tickLabel(value, step) {
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  return value.toLocaleString("en-US", { minimumFractionDigits: decimals,
                                          maximumFractionDigits: decimals });
}

/**
 * An empty chart: frame, grid, ticks and axis titles over [x.lo, x.hi] × [y.lo, y.hi] (each
 * widened to round ticks). Returns {node, x, y, plot, box}: scales from data to pixels, the
 * group to draw marks into, and the plot area's edges in pixels.
 */
export function frame({ width = 380, height = 220, x, y, title = "" }) {
  const m = { left: 58, right: 14, top: title ? 26 : 12, bottom: 42 };
  const xt = ticks(x.lo, x.hi, Math.max(3, Math.round((width - 80) / 70)));
  const yt = ticks(y.lo, y.hi, Math.max(3, Math.round((height - 60) / 40)));
  const [x0, x1] = [xt.values[0], xt.values.at(-1)];
  const [y0, y1] = [yt.values[0], yt.values.at(-1)];
  const px = (v) => m.left + ((v - x0) / (x1 - x0)) * (width - m.left - m.right);
  const py = (v) => height - m.bottom - ((v - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                            "aria-label": title || `${y.label} vs ${x.label}` });
  const axes = svg("g", { class: "axes" });
  for (const v of xt.values) {
    axes.append(svg("line", { class: "grid", x1: px(v), x2: px(v), y1: py(y0), y2: py(y1) }),
                svg("text", { x: px(v), y: py(y0) + 15, "text-anchor": "middle" },
                    tickLabel(v, xt.step)));
  }
  for (const v of yt.values) {
    axes.append(svg("line", { class: "grid", x1: px(x0), x2: px(x1), y1: py(v), y2: py(v) }),
                svg("text", { x: px(x0) - 5, y: py(v) + 4, "text-anchor": "end" },
                    tickLabel(v, yt.step)));
  }
  axes.append(
    svg("path", { class: "axis", d: `M${px(x0)},${py(y1)}V${py(y0)}H${px(x1)}` }),
    svg("text", { class: "label", x: (px(x0) + px(x1)) / 2, y: height - 6,
                  "text-anchor": "middle" }, x.label),
    svg("text", { class: "label", x: 12, y: (py(y0) + py(y1)) / 2, "text-anchor": "middle",
                  transform: `rotate(-90 12 ${(py(y0) + py(y1)) / 2})` }, y.label));
  if (title) axes.append(svg("text", { class: "title", x: m.left, y: 15 }, title));
  const plot = svg("g", { class: "plot" });
  node.append(axes, plot);
  const box = { left: px(x0), right: px(x1), top: py(y1), bottom: py(y0) };
  return { node, x: px, y: py, plot, box };
}

/** A vertical error bar from LO to HI at X (pixels), with caps. */
export function errorBar(x, lo, hi, tip) {
  return svg("path", { class: "errorbar", d: `M${x - 3},${lo}H${x + 3}M${x},${lo}V${hi}M${x - 3},${hi}H${x + 3}`,
                       title: tip });
}

/** A horizontal error bar from LO to HI at Y (pixels), with caps. */
export function errorBarX(y, lo, hi, tip) {
  return svg("path", { class: "errorbar", d: `M${lo},${y - 3}V${y + 3}M${lo},${y}H${hi}M${hi},${y - 3}V${y + 3}`,
                       title: tip });
}

/** A diamond marker centred on (X, Y) pixels. */
export function diamond(x, y, r, attrs) {
  return svg("path", { ...attrs, d: `M${x},${y - r}L${x + r},${y}L${x},${y + r}L${x - r},${y}Z` });
}
