"""Quality columns from stored probe runs (bench.quality): pure functions, so the reference can
be chosen after the fact, e.g. the highest-precision deployment measured of the same model.

- perplexity: exp(-mean logprob) over every scored passage token (token-weighted);
- agreement: per prompt, the greedy tokens equal to the reference's before the first
  divergence, over the longer of the two continuations; the mean over prompts;
- kl: mean KL(reference || deployment) of the top-N distributions at every position whose
  context is the same in both: all passage positions (teacher-forced), and continuation
  positions up to and including the first divergence.

The top-N lists are truncated. Over the union of both sides' tokens, a token one side did not
list gets that side's smallest listed logprob (it ranked below every listed token, so that is
the most it can have), then each side is renormalised over the union. Identical runs give 0;
a disagreement about which tokens are likely shows as a positive KL, never as infinity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from bench.quality import ProbeRecord, ProbeRun

# Best first: the reference is the most precise deployment measured of a model.
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8", "int4")


@dataclass(frozen=True, slots=True)
class QualityResult:
    """A deployment's quality columns against a reference deployment (NaN where unknown)."""

    probe_version: str
    reference: str | None  # the reference deployment's name
    status: str  # ok | skipped (no logprobs) | incomparable (not the same tokens or version)
    status_reason: str | None
    perplexity: float
    perplexity_ratio: float  # this perplexity / the reference's (1.0: no loss)
    agreement: float  # 1.0: every greedy token as the reference's
    kl: float  # nats per position; 0.0: the same top-N distributions
    kl_positions: int

    def columns(self) -> dict[str, object]:
        """The result as `quality_*` columns, to sit beside a deployment's speed columns."""
        return {f"quality_{k}": v for k, v in asdict(self).items()}


def perplexity(run: ProbeRun) -> float:
    lps = [r.logprob for r in run.records if r.kind == "passage" and r.logprob is not None]
    return math.exp(-sum(lps) / len(lps)) if lps else math.nan


def kl_top(ref: ProbeRecord, got: ProbeRecord) -> float:
    """KL(ref || got) over the union of their top-N tokens (floors as the module says)."""
    p, q = _top(ref), _top(got)
    if not p or not q:
        return math.nan
    union = p.keys() | q.keys()
    pv, qv = _normalised(p, union), _normalised(q, union)
    return sum(pv[t] * (math.log(pv[t]) - math.log(qv[t])) for t in union)


def _top(r: ProbeRecord) -> dict[str, float]:
    top = dict(zip(r.top_tokens, r.top_logprobs, strict=True))
    if r.logprob is not None:
        top.setdefault(r.token, r.logprob)
    return top


def _normalised(lps: dict[str, float], union: set[str]) -> dict[str, float]:
    floor = min(lps.values())
    mass = {t: math.exp(lps.get(t, floor)) for t in union}
    total = sum(mass.values())
    return {t: m / total for t, m in mass.items()}


def _items(run: ProbeRun, kind: str) -> dict[str, list[ProbeRecord]]:
    out: dict[str, list[ProbeRecord]] = {}
    for r in run.records:
        if r.kind == kind:
            out.setdefault(r.item, []).append(r)
    return {k: sorted(v, key=lambda r: r.position) for k, v in out.items()}


def _common_prefix(a: list[ProbeRecord], b: list[ProbeRecord]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n].token == b[n].token:
        n += 1
    return n


def _incomparable(run: ProbeRun, ref: ProbeRun) -> str | None:
    if run.probe_version != ref.probe_version:
        return f"probe {run.probe_version} against a reference probed with {ref.probe_version}"
    if run.token_kind != ref.token_kind:
        return f"tokens as {run.token_kind}s against a reference's {ref.token_kind}s"
    a, b = _items(run, "passage"), _items(ref, "passage")
    if a.keys() != b.keys() or any([r.token for r in a[k]] != [r.token for r in b[k]]
                                   for k in a):
        return "the passages were not tokenized alike (a different tokenizer or model?)"
    return None


def compare(run: ProbeRun, ref: ProbeRun, reference: str) -> QualityResult:
    """RUN's quality columns against REF, the run of the deployment named REFERENCE."""
    ppl = perplexity(run)
    nan = QualityResult(run.probe_version, reference, run.status, run.status_reason, ppl,
                        math.nan, math.nan, math.nan, 0)
    if run.status != "ok":
        return nan
    if ref.status != "ok":
        return _with(nan, "incomparable", f"reference {reference}: {ref.status}: "
                                          f"{ref.status_reason}")
    why = _incomparable(run, ref)
    if why:
        return _with(nan, "incomparable", why)
    kls: list[float] = []
    for item, recs in _items(ref, "passage").items():
        kls += [kl_top(r, g) for r, g in zip(recs, _items(run, "passage")[item], strict=True)
                if r.logprob is not None]
    agreements = []
    got = _items(run, "continuation")
    for item, recs in _items(ref, "continuation").items():
        mine = got.get(item, [])
        n = _common_prefix(recs, mine)
        agreements.append(n / max(len(recs), len(mine)) if recs or mine else 1.0)
        kls += [kl_top(r, g) for r, g in zip(recs[:n + 1], mine[:n + 1], strict=False)]
    kls = [k for k in kls if not math.isnan(k)]
    return QualityResult(run.probe_version, reference, "ok", None, ppl, ppl / perplexity(ref),
                         _mean(agreements), _mean(kls), len(kls))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _with(result: QualityResult, status: str, reason: str) -> QualityResult:
    return replace(result, status=status, status_reason=reason)


def pick_reference(quantizations: Mapping[str, str], runs: Mapping[str, ProbeRun]) -> str | None:
    """The most precise deployment with an `ok` run (ties: the first name in sorted order)."""
    ok = [d for d in sorted(quantizations) if d in runs and runs[d].status == "ok"]
    rank = {q: i for i, q in enumerate(PRECISION_ORDER)}
    return min(ok, key=lambda d: rank.get(quantizations[d], len(rank)), default=None)


def compare_model(runs: Mapping[str, ProbeRun],
                  quantizations: Mapping[str, str]) -> dict[str, QualityResult]:
    """Quality columns of every deployment of ONE model (deployment -> run, -> quantization),
    each against the model's most precise deployment measured."""
    reference = pick_reference(quantizations, runs)
    if reference is None:
        return {d: QualityResult(r.probe_version, None, r.status if r.status != "ok" else
                                 "incomparable", r.status_reason or "no reference deployment",
                                 perplexity(r), math.nan, math.nan, math.nan, 0)
                for d, r in runs.items()}
    return {d: compare(r, runs[reference], reference) for d, r in runs.items()}
