// The catalog page's answer: asks /v1/recommend what the form asks, then draws the ranked and
// unranked deployments, a cost-vs-capacity chart and each deployment's measured curve from
// /v1/curves. Data goes into the DOM as text only (textContent), never as markup.

import { diamond, errorBar, errorBarX, finite, fmt, frame, svg } from "./chart.js";

const MAX_CURVES = 12; // one /v1/curves call per chart: enough to compare, few enough to be quick
const form = document.getElementById("query");
const answer = document.getElementById("answer");

/** An HTML element with text or child nodes; `title` and `class` set as attributes. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

const dollars = (v) => (finite(v) ? "$" + v.toLocaleString("en-US", {
  minimumFractionDigits: 2, maximumFractionDigits: 2 }) : "–");
const money = (v) => (finite(v) ? "$" + v.toLocaleString("en-US", {
  minimumSignificantDigits: 3, maximumSignificantDigits: 3 }) : "–");
const percent = (v) => (finite(v) ? `${Math.round(v * 100)}%` : "–");

// A profile's max_quality_loss in words, as the form's hint says it (catalog/page.py).
const QUALITY_LIMIT = { kl: "KL ≤", perplexity_ratio: "perplexity ratio ≤", agreement: "agreement ≥" };

/** A deployment's quality in one line: KL and agreement against the model's reference, or why
 *  there is no figure ("not measured", "skipped: …"); a missing figure is never shown as 0. */
function qualityText(q) {
  if (!q?.status || q.status === "not measured") return "not measured";
  if (q.status !== "ok") return q.reason ? `${q.status}: ${q.reason}` : q.status;
  return `KL ${fmt(q.kl, 2)} · agreement ${percent(q.agreement)}`;
}

function qualityCell(item) {
  const q = item.quality ?? {};
  const ok = q.status === "ok";
  const tip = ok ? `against ${q.reference}: mean KL ${fmt(q.kl, 3)} nats over ` +
    `${q.kl_positions} positions, greedy agreement ${percent(q.agreement)}, perplexity ratio ` +
    `${fmt(q.perplexity_ratio, 4)} (${q.probe_version})` : (q.reason ?? "no quality probe run");
  const against = q.reference === item.deployment ? "the reference" : `vs ${q.reference}`;
  return twoLines(ok ? qualityText(q) : (q.status ?? "not measured"), ok ? against : null,
                  { class: `l quality${ok ? "" : " muted"}`, title: tip });
}

/** The form's non-empty fields: forms send every field, the API wants only those given. */
function query() {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(form)) if (value !== "") params.set(key, value);
  return params;
}

async function getJSON(path, params) {
  const response = await fetch(`${path}?${params}`);
  const body = await response.json();
  if (!response.ok) throw Object.assign(new Error(body.error), { parameter: body.parameter });
  return body;
}

function showError(error) {
  answer.replaceChildren(h("p", { class: "error", id: "error" }, error.message));
  if (error.parameter) form.elements[error.parameter]?.classList.add("invalid");
  answer.dataset.state = "error";
}

// --- what was asked, in words ---------------------------------------------------------------

function workload(body) {
  const t = body.traffic;
  const tokens = finite(t.input_tokens)
    ? ` (${fmt(t.input_tokens)} input / ${fmt(t.output_tokens)} output tokens)` : "";
  const nearest = t.matched_by === "nearest"
    ? `, the measured length profile nearest to the ${fmt(t.requested.input_tokens)} / ` +
      `${fmt(t.requested.output_tokens)} tokens asked for` : "";
  const slo = [
    finite(body.slo.ttft_p99_ms) && `p99 TTFT ≤ ${fmt(body.slo.ttft_p99_ms)} ms`,
    finite(body.slo.tpot_p99_ms) && `p99 TPOT ≤ ${fmt(body.slo.tpot_p99_ms)} ms`,
    finite(body.slo.max_error_rate) && `errors ≤ ${fmt(body.slo.max_error_rate * 100)}%`,
    ...Object.entries(body.max_quality_loss ?? {}).map(([k, v]) => `${QUALITY_LIMIT[k] ?? k} ${fmt(v)}`),
  ].filter(Boolean).join(", ");
  const demand = finite(body.demand_rps)
    ? `${fmt(body.demand_rps)} req/s` : "no demand given (sized for one replica)";
  return h("dl", { class: "workload", id: "workload" },
    h("dt", {}, "model"), h("dd", {}, body.model),
    h("dt", {}, "traffic"), h("dd", {}, `${t.lengths}${tokens}${nearest}`),
    h("dt", {}, "demand"), h("dd", {}, demand),
    h("dt", {}, "profile"), h("dd", {}, `${body.profile}: ${slo}`),
    h("dt", {}, "ranked"),
    h("dd", {}, `${body.matching} of ${body.ranked} deployments with capacity match the filters; ` +
                `${body.unranked.length} not ranked`),
    h("dt", {}, "estimates"), h("dd", { id: "estimates-summary" }, estimatesText(body.estimates)));
}

/** What the estimates add, in words: how many estimated-only deployments match and how many
 *  might beat the top pick, and whether they are listed. */
function estimatesText(e) {
  if (!e?.available) return `none: ${e?.reason ?? "no estimates"}`;
  if (!e.matching) return e.reason ?? "no estimated-only deployment matches";
  return `${e.matching} deployment(s) estimated but not measured, ${e.might_beat_top} of them ` +
    "might beat the top pick at the optimistic end of their intervals" +
    (e.included ? "; listed after the measured ones, marked “estimate”"
                : "; choose “list after the measured” to see them");
}

// --- the ranked table -----------------------------------------------------------------------

/** The engine settings, one per line: tensor parallelism, batch limits, then any other args. */
function settings(item) {
  const shown = { tp: item.tensor_parallel_size, max_num_seqs: item.max_num_seqs,
                  max_num_batched_tokens: item.max_num_batched_tokens };
  let extra = {};
  try { extra = JSON.parse(item.engine_args || "{}") ?? {}; } catch { extra = {}; }
  for (const [key, value] of Object.entries(extra)) if (!(key in shown)) shown[key] = value;
  const lines = Object.entries(shown).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return h("td", { class: "l settings" }, ...lines.flatMap((line, i) => (i ? [h("br"), line] : [line])));
}

function capacityCell(cap) {
  const bound = cap.lower_bound ? "≥ " : "";
  const interval = !cap.lower_bound && finite(cap.rps_lo)
    ? h("span", { class: "interval" }, `${fmt(cap.rps_lo)}–${fmt(cap.rps_hi)}`) : null;
  return h("td", { class: "nowrap capacity", title: cap.reason }, `${bound}${fmt(cap.rps)}`,
           interval);
}

// Columns of text (left-aligned, like their cells) are the first six.
const COLUMNS = ["#", "deployment", "hardware", "engine", "quant.", "engine settings",
  "capacity req/s (interval)", "concurrency at capacity", "p99 TTFT / TPOT ms",
  "tokens/s per GPU",
  "replicas", "GPUs", "$/hour on-demand (spot)", "$/1M tokens on-demand (spot)",
  "quality vs reference", "P(#1)", "P(top 3)", "Pareto"];

/** A cell with MAIN on top and SECOND, smaller, under it. */
const twoLines = (main, second, attrs = {}) =>
  h("td", attrs, main, second === null ? null : h("span", { class: "interval" }, second));

function rankedTable(body) {
  const head = h("tr", {}, ...COLUMNS.map((c, i) =>
    h("th", { scope: "col", class: i >= 1 && i <= 5 ? "l" : null }, c)));
  const rows = body.items.map((item) => {
    const cap = item.capacity, op = item.operating_point;
    const serving = item.serving ?? { replicas: 1, gpus: item.gpu_count,
      usd_per_hour_on_demand: op.usd_per_hour_on_demand, usd_per_hour_spot: op.usd_per_hour_spot };
    const fewer = serving.upper_bound ? "≤ " : "";
    const atLow = finite(serving.replicas_at_capacity_lo) &&
      serving.replicas_at_capacity_lo !== serving.replicas
      ? `${serving.replicas_at_capacity_lo} at its low end` : null;
    const estimate = item.source === "estimate";
    const latency = `${fmt(op.ttft_p99_ms)} / ${fmt(op.tpot_p99_ms)}`;
    return h("tr", { "data-deployment": item.deployment, title: item.rank_note,
                     "data-source": item.source, class: estimate ? "estimate" : null },
      estimate ? h("td", {}, h("span", { class: "badge" }, "estimate"))
               : h("td", {}, item.rank),
      h("td", { class: "l name" }, item.deployment),
      h("td", { class: "l nowrap" }, `${item.hardware} ×${item.gpu_count}`),
      h("td", { class: "l" }, item.engine), h("td", { class: "l" }, item.quantization),
      settings(item), capacityCell(cap),
      h("td", {}, `${cap.lower_bound ? "≥ " : ""}${fmt(cap.concurrency)}`),
      estimate ? twoLines(latency, `${fmt(op.ttft_p99_ms_lo)}–${fmt(op.ttft_p99_ms_hi)} / ` +
                          `${fmt(op.tpot_p99_ms_lo)}–${fmt(op.tpot_p99_ms_hi)}`,
                          { class: "nowrap" })
               : h("td", { class: "nowrap" }, latency),
      h("td", {}, fmt(op.output_tokens_per_s_per_gpu, 4)),
      twoLines(`${fewer}${serving.replicas}`, atLow, { class: "replicas" }),
      h("td", {}, `${fewer}${serving.gpus}`),
      twoLines(dollars(serving.usd_per_hour_on_demand), dollars(serving.usd_per_hour_spot)),
      twoLines(money(op.cost_per_mtok_on_demand), money(op.cost_per_mtok_spot)),
      qualityCell(item), h("td", {}, percent(item.p_first)), h("td", {}, percent(item.p_top3)),
      h("td", { class: "c" }, item.pareto ? "✓" : ""));
  });
  const estimates = body.items.some((i) => i.source === "estimate")
    ? " Rows marked “estimate” were not measured: the calibrated roofline's figures with their " +
      "95% intervals, listed after every measured deployment and never ranked among them." : "";
  const sized = finite(body.demand_rps) ? `, sized for ${fmt(body.demand_rps)} req/s` :
    "; without a demand, replicas, GPUs and $/hour are those of one replica";
  // The caption stays outside the scrolling box, readable however wide the table is.
  return [h("p", { class: "caption" }, `Deployments ranked at their operating points (the ` +
      `highest load that holds the SLOs)${sized}. “≥” marks a capacity that is a lower bound: ` +
      `every measured load held, so fewer replicas may do. Quality: mean KL and greedy agreement ` +
      `against the model's most precise deployment measured (“not measured” where it was not ` +
      `probed: no figure is not no loss). P(#1) and P(top 3) are the shares of resampled ` +
      `rankings. Pareto: not beaten on throughput, capacity, cost and the p99s at once.` +
      estimates),
    h("div", { class: "scroll" }, h("table", { id: "ranked" }, h("thead", {}, head),
                                    h("tbody", {}, ...rows)))];
}

function unrankedTable(body) {
  if (!body.unranked.length) return null;
  return h("table", { id: "unranked" },
    h("caption", {}, "Not ranked: no capacity under this profile's SLOs on this traffic, or " +
      "turned away by its quality limits"),
    h("thead", {}, h("tr", {}, ...["deployment", "hardware", "engine", "quant.", "capacity",
                                  "quality vs reference", "why"]
      .map((c) => h("th", { scope: "col", class: "l" }, c)))),
    h("tbody", {}, ...body.unranked.map((u) => h("tr", { "data-deployment": u.deployment },
      h("td", { class: "l name" }, u.deployment), h("td", { class: "l nowrap" }, `${u.hardware} ×${u.gpu_count}`),
      h("td", { class: "l" }, u.engine), h("td", { class: "l" }, u.quantization),
      h("td", { class: "l" }, u.capacity_status), qualityCell(u),
      h("td", { class: "l reason" }, u.reason)))));
}

// --- cost vs capacity -----------------------------------------------------------------------

/** The measured items: estimates have no measured levels to draw. */
const measured = (body) => body.items.filter((i) => i.source !== "estimate");

/** Indices of the 2-D front of POINTS: no other has more capacity (x) and lower cost (y). */
function front2d(points) {
  const order = points.map((_, i) => i).sort((a, b) => points[b].x - points[a].x || points[a].y - points[b].y);
  const out = [];
  let best = Infinity;
  for (const i of order) if (points[i].y < best) { out.push(i); best = points[i].y; }
  return out.reverse(); // ascending capacity
}

function costChart(body) {
  const points = measured(body)
    .filter((i) => finite(i.capacity.rps) && finite(i.operating_point.cost_per_mtok_on_demand))
    .map((i) => ({ item: i, x: i.capacity.rps, y: i.operating_point.cost_per_mtok_on_demand,
                   lo: i.capacity.rps_lo, hi: i.capacity.rps_hi }));
  if (!points.length) return null;
  const xs = points.flatMap((p) => [p.x, p.hi].filter(finite));
  const c = frame({ width: 640, height: 320, title: "Cost vs capacity (one replica each)",
    x: { lo: 0, hi: Math.max(...xs) * 1.08, label: "capacity under the SLOs (requests/s)" },
    y: { lo: 0, hi: Math.max(...points.map((p) => p.y)) * 1.1,
         label: "$ per 1M output tokens, on-demand" } });
  const front = front2d(points);
  const steps = front.map((i, k) => {
    const [px, py] = [c.x(points[i].x), c.y(points[i].y)];
    return k === 0 ? `M${px},${py}` : `V${py}H${px}`;
  }).join("");
  c.plot.append(svg("path", { class: "front", d: steps,
    title: "2-D front of this chart: no deployment drawn here has more capacity at a lower cost" }));
  points.forEach((p, i) => {
    const cap = p.item.capacity;
    const tip = `#${p.item.rank} ${p.item.deployment}\ncapacity ${cap.lower_bound ? "≥ " : ""}` +
      `${fmt(p.x)} req/s` + (cap.lower_bound ? " (lower bound)" : ` (${fmt(p.lo)}–${fmt(p.hi)})`) +
      `\n${money(p.y)} per 1M output tokens on-demand, ${money(p.item.operating_point.cost_per_mtok_spot)} spot` +
      `\nquality: ${qualityText(p.item.quality)}`;
    if (!cap.lower_bound && finite(p.lo) && finite(p.hi)) {
      c.plot.append(errorBarX(c.y(p.y), c.x(p.lo), c.x(p.hi), tip));
    }
    if (cap.lower_bound) {  // the true capacity lies to the right
      c.plot.append(svg("path", { class: "bound", d: `M${c.x(p.x)},${c.y(p.y)}h22m-5,-4l5,4l-5,4`,
                                  title: tip }));
    }
    c.plot.append(
      svg("circle", { class: `point${front.includes(i) ? " on-front" : ""}`, cx: c.x(p.x),
                      cy: c.y(p.y), r: 5, title: tip }),
      svg("text", { class: "tag", x: c.x(p.x) + 7, y: c.y(p.y) - 7 }, `#${p.item.rank}`));
  });
  return h("figure", { id: "cost" }, c.node, h("figcaption", {},
    "Each ranked deployment at its operating point: capacity per replica (bar: its interval; " +
    "arrow: a lower bound) against the cost of its tokens there. The line joins this chart's " +
    "2-D front: deployments that no other beats on both capacity and cost."));
}

// --- latency vs throughput, per deployment ---------------------------------------------------

const LOAD_ORDER = (lv) => (lv.load === "rate" ? lv.rate : lv.concurrency);

function latencyPanel(levels, metric, label, slo, item) {
  const ok = levels.filter((lv) => finite(lv.requests_per_s) && finite(lv[metric]));
  const cap = item?.capacity;
  const xs = ok.map((lv) => lv.requests_per_s).concat([cap?.rps_hi, cap?.rps].filter(finite));
  const ys = ok.map((lv) => (finite(lv[`${metric}_hi`]) ? lv[`${metric}_hi`] : lv[metric]));
  // An SLO far above every measured level would squash the curve flat against the axis:
  // the chart then stops above the data and says where the SLO is.
  const sloOnChart = finite(slo) && slo <= 3 * Math.max(...ys, 0);
  if (sloOnChart) ys.push(slo * 1.15);
  const c = frame({ width: 340, height: 200, x: { lo: 0, hi: Math.max(...xs, 1e-9) * 1.05,
    label: "throughput (requests/s)" }, y: { lo: 0, hi: Math.max(...ys, 1e-9) * 1.05, label } });
  if (cap && finite(cap.rps_lo) && finite(cap.rps_hi) && cap.rps_hi > cap.rps_lo) {
    const [a, b] = [c.x(cap.rps_lo), c.x(cap.rps_hi)];
    c.plot.append(svg("rect", { class: "band", x: a, width: b - a, y: c.box.top,
      height: c.box.bottom - c.box.top,
      title: `capacity interval ${fmt(cap.rps_lo)}–${fmt(cap.rps_hi)} req/s` }));
  }
  if (finite(slo) && !sloOnChart) {
    c.plot.append(svg("text", { class: "slo-label", x: c.box.left + 4, y: c.box.top + 10 },
                      `↑ SLO ${fmt(slo)} ms, far above every level`));
  } else if (finite(slo)) {
    c.plot.append(svg("line", { class: "slo", x1: c.box.left, x2: c.box.right, y1: c.y(slo),
                                y2: c.y(slo), title: `SLO: ${label} ≤ ${fmt(slo)}` }),
                  svg("text", { class: "slo-label", x: c.box.left + 4, y: c.y(slo) - 4 },
                      `SLO ${fmt(slo)} ms`));
  }
  for (const kind of ["concurrency", "rate"]) {  // a closed-loop and an open-loop sweep
    const run = ok.filter((lv) => lv.load === kind).sort((a, b) => LOAD_ORDER(a) - LOAD_ORDER(b));
    if (run.length > 1) {
      c.plot.append(svg("path", { class: `curve ${kind}`,
        d: run.map((lv, k) => `${k ? "L" : "M"}${c.x(lv.requests_per_s)},${c.y(lv[metric])}`).join("") }));
    }
  }
  for (const lv of ok) {
    const lo = lv[`${metric}_lo`], hi = lv[`${metric}_hi`];
    const tip = `${lv.load} ${fmt(LOAD_ORDER(lv))}: ${fmt(lv.requests_per_s)} req/s, ` +
      `${label} ${fmt(lv[metric])}` + (finite(lo) ? ` (95% interval ${fmt(lo)}–${fmt(hi)})` : "") +
      `, ${lv.n_ok ?? "?"} of ${lv.n ?? "?"} requests ok`;
    if (finite(lo) && finite(hi)) c.plot.append(errorBar(c.x(lv.requests_per_s), c.y(lo), c.y(hi), tip));
    const miss = finite(slo) && lv[metric] > slo;
    c.plot.append(svg("circle", { class: `level${miss ? " miss" : ""}`, cx: c.x(lv.requests_per_s),
                                  cy: c.y(lv[metric]), r: 3.5, title: tip }));
  }
  const op = item?.operating_point;
  if (cap && finite(cap.rps) && finite(op?.[metric])) {
    if (cap.lower_bound) {  // as on the cost chart: the true capacity lies to the right
      c.plot.append(svg("path", { class: "bound",
        d: `M${c.x(cap.rps)},${c.y(op[metric])}h18m-5,-4l5,4l-5,4` }));
    }
    c.plot.append(diamond(c.x(cap.rps), c.y(op[metric]), 6, { class: "operating-point",
      title: `operating point: ${cap.lower_bound ? "≥ " : ""}${fmt(cap.rps)} req/s, ` +
             `${label} ${fmt(op[metric])}` }));
  }
  return c.node;
}

function curveCard(item, curve, slo) {
  const title = item.rank ? `#${item.rank} ${item.deployment}` : `${item.deployment} (not ranked)`;
  const what = `${item.hardware} ×${item.gpu_count} · ${item.engine} · ${item.quantization}`;
  const levels = curve?.levels ?? [];
  const missing = levels.length - levels.filter((lv) => finite(lv.requests_per_s)).length;
  const note = missing ? ` ${missing} level(s) without results are not drawn.` : "";
  const card = h("figure", { class: "curve-card", "data-deployment": item.deployment },
    h("figcaption", {}, h("b", {}, title), ` — ${what}`, h("br"),
      h("span", { class: "muted" }, (item.capacity?.reason ?? item.reason ?? "") + note)));
  if (!levels.length) {
    card.append(h("p", { class: "muted" }, "no measured load levels on this traffic"));
    return card;
  }
  const ranked = item.rank ? item : null;
  const svgs = [latencyPanel(levels, "ttft_p99_ms", "p99 TTFT (ms)", slo.ttft_p99_ms, ranked),
                latencyPanel(levels, "tpot_p99_ms", "p99 TPOT (ms)", slo.tpot_p99_ms, ranked)];
  svgs.forEach((node) => node.classList.add("latency"));
  card.append(h("div", { class: "panels" }, ...svgs));
  return card;
}

async function curves(body) {
  const chosen = [...measured(body), ...body.unranked].slice(0, MAX_CURVES);
  const section = h("section", { id: "curves" }, h("h2", {}, "Latency vs throughput"),
    h("p", { class: "muted" }, `Each deployment's measured load levels on ${body.traffic.lengths} ` +
      "traffic, joined in load order; bars: 95% intervals of each p99; red dashes: the SLO; " +
      "red dots: levels that miss it; shaded: the capacity interval; diamond: the operating point." +
      (chosen.length < measured(body).length + body.unranked.length
        ? ` The first ${chosen.length} deployments are drawn.` : "")));
  const results = await Promise.allSettled(chosen.map((item) =>
    getJSON("v1/curves", new URLSearchParams({ deployment: item.deployment,
                                               lengths: body.traffic.lengths }))));
  const grid = h("div", { class: "cards" });
  results.forEach((r, i) => {
    if (r.status === "rejected") {
      grid.append(h("p", { class: "error" }, `${chosen[i].deployment}: ${r.reason.message}`));
    } else {
      grid.append(curveCard(chosen[i], r.value.lengths[0], body.slo));
    }
  });
  section.append(grid);
  return section;
}

// --- the page --------------------------------------------------------------------------------

async function main() {
  const known = document.getElementById("error");
  if (known) {  // the server already said what is wrong: point at the field
    form.elements[known.dataset.parameter]?.classList.add("invalid");
    answer.dataset.state = "error";
    return;
  }
  const body = await getJSON("v1/recommend", query());
  answer.replaceChildren(workload(body));
  if (body.reason) answer.append(h("p", { class: "notice", id: "reason" }, body.reason));
  if (body.items.length) answer.append(...rankedTable(body));
  const unranked = unrankedTable(body);
  if (unranked) answer.append(unranked);
  const cost = costChart(body);
  if (cost) answer.append(h("h2", {}, "Cost vs capacity"), cost);
  answer.append(await curves(body));
  answer.dataset.state = "ready";
}

// Typed-in tokens and a chosen length profile are two ways to say the same thing: one at a time.
function syncTraffic() {
  const byName = form.elements.lengths.value !== "";
  for (const name of ["input_tokens", "output_tokens"]) form.elements[name].disabled = byName;
}

form.elements.lengths.addEventListener("change", syncTraffic);
// Navigating (not fetching in place) keeps every answer a URL a person can share.
const go = () => { window.location.search = query().toString(); };
form.elements.model.addEventListener("change", () => {  // length profiles differ per model
  form.elements.lengths.value = "";
  form.elements.lengths.disabled = true;
  go();
});
form.addEventListener("submit", (event) => {  // a short URL: only the fields given
  event.preventDefault();
  go();
});
syncTraffic();
main().catch(showError);
