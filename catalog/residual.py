"""The second stage of the estimates: what the fitted physics (catalog/physical.py) still misses
at the operating points, learnt from the measured deployments by their configs.

Why: the physics is fitted on the load levels, yet a capacity is where a p99 crosses an SLO and
a p50 TPOT is read at that capacity's concurrency, neither of which the levels' medians pin
down. Its misses there are not noise alone: on the validation fixture the fitted physics put
p50 TPOT 25% high on average and missed max_num_seqs 16 twice as much as 4 (a batch of 16 on a
2-core host stalls in ways a roofline has no term for). So, per metric, a ridge of
log(estimate / measured) over the fitted deployments' operating points on a few config features
(quantization, max_num_seqs, max_num_batched_tokens, whether the prompt is chunked, prompt and
output lengths, model size, the profile) corrects the estimate. Which correction (none, the
mean miss, a ridge at some penalty) is chosen by how well it predicts a deployment left out of
its fit: on few or noisy operating points the answer is a mild one or none. Its misses on those
left-out deployments give the prediction interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from catalog.calibration import MIN_LOG_SD, PRIOR_LOG_SD, QUANTS, Z, t_quantile

# The ridge penalties tried (on standardized features), and the fewest deployments a correction
# is learnt from: each candidate is scored on deployments it was not fitted on.
PENALTIES = (1.0, 3.0, 10.0, 30.0, 100.0)
MIN_DEPLOYMENTS = 4


def features(rows: pd.DataFrame, profiles: Sequence[str] = ()) -> np.ndarray:
    """(rows, k) config features of estimate rows (roofline.estimate's columns), with a
    one-hot per profile of PROFILES: one fit for all profiles, so that one with a handful of
    operating points (cost-saver's 10 of 82 on the fixture) borrows the config effects of the
    others and keeps a shift of its own."""
    def num(name: str, default: float) -> np.ndarray:
        v = (pd.to_numeric(rows[name], errors="coerce").to_numpy(float, na_value=np.nan)
             if name in rows else np.full(len(rows), np.nan))
        return np.where(np.isfinite(v), v, default)

    inp = np.maximum(num("input_tokens", 1.0), 1.0)
    budget = num("max_num_batched_tokens", np.nan)
    budget = np.where(np.isfinite(budget), budget, inp)  # no arg: the whole prompt at once
    quant = rows["quantization"].astype(str).to_numpy()
    cols = [(quant == q).astype(float) for q in QUANTS]
    cols += [np.log(np.maximum(num("max_num_seqs", 256.0), 1.0)), np.log(np.maximum(budget, 1.0)),
             (inp > budget).astype(float), np.log(inp),
             np.log(np.maximum(num("output_tokens", 1.0), 1.0)),
             np.log(np.maximum(num("parameters", 1.0), 1.0))]
    profile = rows["profile"].astype(str).to_numpy() if "profile" in rows else None
    cols += [(profile == p).astype(float) if profile is not None else np.zeros(len(rows))
             for p in profiles]
    return np.column_stack(cols)


@dataclass(frozen=True, slots=True)
class Correction:
    """log(estimate / measured) ≈ shift(x): `ridge`, `mean` (one shift for all), `none` (no
    shift), or `prior` (nothing to learn from); SIGMA is the log-sd of a new row's miss."""

    mode: str
    mean_miss: float = 0.0
    centre: np.ndarray | None = None
    scale: np.ndarray | None = None
    beta: np.ndarray | None = None
    sigma: float = PRIOR_LOG_SD
    df: float = np.inf
    penalty: float = 0.0

    def shift(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "ridge":
            return self.mean_miss + ((x - self.centre) / self.scale) @ self.beta
        return np.full(len(x), self.mean_miss if self.mode == "mean" else 0.0)

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(shift per row, log-sd of a new row's miss, t quantile) for rows X."""
        q = Z if self.mode == "prior" else t_quantile(self.df)
        return self.shift(x), np.full(len(x), self.sigma), q


def _ridges(x: np.ndarray, miss: np.ndarray, penalties: Sequence[float]) -> list[Correction]:
    """One ridge correction of MISS on X per penalty (the standardization and Z'Z shared)."""
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - centre) / scale
    mean = float(miss.mean())
    gram, target = z.T @ z, z.T @ (miss - mean)
    eye = np.eye(x.shape[1])
    return [Correction("ridge", mean, centre, scale, np.linalg.solve(gram + p * eye, target),
                       penalty=p) for p in penalties]


def _candidates(x: np.ndarray, miss: np.ndarray) -> list[Correction]:
    """Every correction fit_correction chooses from, fitted on X and MISS."""
    return [Correction("none"), Correction("mean", float(miss.mean())),
            *_ridges(x, miss, PENALTIES)]


def fit_correction(x: np.ndarray, miss: np.ndarray, groups: np.ndarray | None = None
                   ) -> Correction:
    """The correction of MISS (log estimate / measured at the fitted deployments' operating
    points, config features X), chosen by how well each candidate predicts a deployment it
    was not fitted on (GROUPS: each row's deployment): no shift, the mean miss, or a ridge at
    one of PENALTIES. A correction that does not carry over to a new deployment is not made.
    Its interval is the chosen candidate's held-out spread: what a new deployment will see."""
    n = len(miss)
    if n < 2:
        return Correction("prior")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    names = list(dict.fromkeys(groups.tolist()))
    if len(names) < MIN_DEPLOYMENTS:  # too few to tell a correction from noise
        return Correction("none", sigma=max(float(np.sqrt(np.mean(miss ** 2))), MIN_LOG_SD),
                          df=float(n - 1))
    held = np.empty((2 + len(PENALTIES), n))
    for g in names:
        out = groups == g
        for i, c in enumerate(_candidates(x[~out], miss[~out])):
            held[i, out] = miss[out] - c.shift(x[out])
    best = int(np.argmin(np.abs(held).mean(axis=1)))
    chosen = _candidates(x, miss)[best]
    sigma = max(float(np.sqrt(np.mean(held[best] ** 2))), MIN_LOG_SD)
    return replace(chosen, sigma=sigma, df=float(len(names) - 1))
