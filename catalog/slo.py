"""SLO attainment and goodput per (config, profile), exact from requests or bounded from percentiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from catalog.config import Profile
from servecat.results import REQUEST_COLUMNS
from servecat.slo import Slo, level_holds, request_meets

PERCENTILES = (0.50, 0.90, 0.95, 0.99)


@dataclass(slots=True)
class RequestOutcomes:
    """The requests table aligned to the summary's rows once, reused for every profile."""

    row: np.ndarray      # summary row of each request
    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    ok: np.ndarray
    count: np.ndarray    # requests per summary row

    @classmethod
    def align(cls, config_ids: pd.Series, requests: pd.DataFrame) -> RequestOutcomes:
        """Map each request to its config's summary row; requests of unknown configs are dropped."""
        missing = [c for c in REQUEST_COLUMNS if c not in requests.columns]
        if missing:
            raise ValueError(f"requests table: missing column(s) {', '.join(missing)}")
        index = pd.Index(config_ids)
        row = index.get_indexer(requests["config_id"])
        keep = row >= 0
        row = row[keep]
        return cls(
            row=row,
            ttft_ms=requests["ttft_ms"].to_numpy(float)[keep],
            tpot_ms=requests["tpot_ms"].to_numpy(float)[keep],
            ok=requests["ok"].fillna(False).to_numpy(bool)[keep],
            count=np.bincount(row, minlength=len(index)),
        )

    def meeting(self, profile: Profile) -> np.ndarray:
        """Requests per summary row that meet PROFILE's SLO (servecat.slo.request_meets)."""
        meets = request_meets(self.ok, self.ttft_ms, self.tpot_ms, Slo.of(profile))
        return np.bincount(self.row, weights=meets, minlength=len(self.count))


def _share_within(summary: pd.DataFrame, metric: str, limit: float) -> np.ndarray:
    """Largest percentile level q with p_q ≤ LIMIT (0 if even p50 exceeds it): a lower bound."""
    cols = [f"{metric}_p{round(q * 100)}_ms" for q in PERCENTILES]
    values = summary[cols].to_numpy(float)
    return np.max(np.where(values <= limit, np.array(PERCENTILES), 0.0), axis=1)


def attainment_from_percentiles(summary: pd.DataFrame, profile: Profile) -> np.ndarray:
    """Lower bound on the share of requests meeting PROFILE, from the summary's percentiles alone.

    Per metric, at least the largest percentile level at or under the limit is within it (e.g. p95 ≤
    limit < p99 gives 0.95). Both at once: at least a + b − 1 (Fréchet bound). Failed requests never
    meet an SLO, so the bound is scaled by num_completed / num_requests.
    """
    ttft = _share_within(summary, "ttft", profile.ttft_p99_ms)
    tpot = _share_within(summary, "tpot", profile.tpot_p99_ms)
    # All TPOTs missing (single-token outputs): only TTFT constrains.
    tpot = np.where(summary["tpot_p99_ms"].isna().to_numpy(), 1.0, tpot)
    both = np.clip(ttft + tpot - 1.0, 0.0, 1.0)
    total = summary["num_requests"].to_numpy(float)
    completed = summary["num_completed"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, completed / total, 0.0)
    return both * share


def slo_attainment(summary: pd.DataFrame, outcomes: RequestOutcomes | None,
                   profile: Profile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slo_attainment, goodput_rps, source) per summary row for PROFILE.

    Exact where the requests table has rows for the config (source "requests"): the share of its
    requests that succeeded within both SLOs, and goodput = those requests / duration_s. Elsewhere
    (source "percentiles"): the lower bound of attainment_from_percentiles, and goodput = that
    share × num_requests / duration_s.
    """
    duration = summary["duration_s"].to_numpy(float)
    estimate = attainment_from_percentiles(summary, profile)
    met = estimate * summary["num_requests"].to_numpy(float)
    exact = np.zeros(len(summary), bool)
    if outcomes is not None:
        exact = outcomes.count > 0
        meeting = outcomes.meeting(profile)
        with np.errstate(divide="ignore", invalid="ignore"):
            estimate = np.where(exact, meeting / outcomes.count, estimate)
        met = np.where(exact, meeting, met)
    with np.errstate(divide="ignore", invalid="ignore"):
        goodput = np.where(duration > 0, met / duration, np.nan)
    source = np.where(exact, "requests", "percentiles").astype(object)
    return estimate, goodput, source


def meets_slo(summary: pd.DataFrame, profile: Profile) -> np.ndarray:
    """Per config: whether its load level holds PROFILE's SLO (servecat.slo.level_holds)."""
    return level_holds(summary, Slo.of(profile))
