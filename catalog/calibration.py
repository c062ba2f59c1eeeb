"""Calibrate the roofline (catalog/roofline.py) by our own measurements: per metric and profile,
a ridge regression of the measured value's log on roofline features, with 95% prediction
intervals, and its leave-one-deployment-out error.

Why a model over features rather than one factor per (hardware, engine, quantization): on a
small host the framework's per-step overhead, not the bytes moved, sets a small model's TPOT,
so the measured/roofline ratio differs by model size within one quantization; the features
(the roofline metric itself, its idle TPOT and prefill time, quantization, engine args) carry
that. With few measurements the fit falls back to one factor (the mean log ratio), and with
none to the roofline with a wide stated interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95
Z = 1.959964
RIDGE = 1.0  # on standardized features: a few dozen rows and eight features need it
# Without measurements: the roofline within a factor of e^(1.96 x 1.2) ~ 10 either way.
PRIOR_LOG_SD = 1.2
FLOOR = 1e-6  # a metric's floor before its log: a roofline capacity of 0 stays finite
# No measurement repeats to better than this (log-sd, ~5%): a perfect fit of a handful of
# points must not claim a zero-width interval.
MIN_LOG_SD = 0.05
QUANTS = ("bf16", "fp16", "int8", "int4")  # one-hots against fp32 (and whatever is absent)
KEY = ("deployment", "lengths", "profile")
MODELS = ("ridge", "factor")


def features(est: pd.DataFrame, metric: str) -> np.ndarray:
    """(rows, k) features of the roofline estimate EST for METRIC; column 0 is the intercept."""
    cols = [np.ones(len(est)), _log(est[metric]), _log(est["idle_tpot_ms"]),
            _log(est["prefill_ms"]),
            # An engine without the arg: its batch is unbounded, its chunk the whole prompt.
            _log(pd.to_numeric(est["max_num_seqs"], errors="coerce").fillna(256)),
            _log(pd.to_numeric(est["max_num_batched_tokens"], errors="coerce")
                 .fillna(pd.to_numeric(est["input_tokens"], errors="coerce"))),
            _log(est["parameters"])]
    quant = est["quantization"].astype(str).to_numpy()
    cols += [(quant == q).astype(float) for q in QUANTS]
    return np.column_stack(cols)


@dataclass(frozen=True, slots=True)
class Fit:
    """log(measured) ≈ X β in one of three modes: `ridge`, `ratio` (one factor) or `prior`."""

    mode: str
    beta: np.ndarray
    mean: np.ndarray      # feature centring (ridge)
    scale: np.ndarray     # feature scaling (ridge)
    cov: np.ndarray       # (A^-1 X'X A^-1) in standardized space: the coefficients' shape
    sigma: float          # residual standard deviation of the log
    df: float             # residual degrees of freedom
    n: int
    # The features' range in the fit (ridge): a row outside it is predicted at its edge, since
    # a line fitted on a few dozen rows says nothing far beyond them.
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point estimate and LEVEL prediction interval (in the metric's units) for rows X."""
        if self.mode == "prior":
            mu = x[:, 1]
            se = np.full(len(x), PRIOR_LOG_SD)
            q = Z
        elif self.mode == "ratio":
            mu = x[:, 1] + self.beta[0]
            se = self.sigma * np.sqrt(1.0 + 1.0 / self.n) * np.ones(len(x))
            q = t_quantile(self.df)
        else:
            z = _standardize(np.clip(x, self.lo, self.hi), self.mean, self.scale)
            mu = z @ self.beta
            lev = np.einsum("ij,jk,ik->i", z, self.cov, z)
            se = self.sigma * np.sqrt(1.0 + lev)
            q = t_quantile(self.df)
        return np.exp(mu), np.exp(mu - q * se), np.exp(mu + q * se)


def fit(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE) -> Fit:
    """Fit log(Y) on X (rows with a positive finite Y and a roofline value above 0); the mode
    follows the row count."""
    keep = np.isfinite(y) & (y > 0) & np.isfinite(x).all(axis=1) & _estimated(x)
    x, ly = x[keep], np.log(y[keep])
    n, k = x.shape
    empty = np.zeros((k, k))
    if n < 2:
        return Fit("prior", np.zeros(1), np.zeros(k), np.ones(k), empty, PRIOR_LOG_SD, np.inf, n)
    if n < k + 4:
        r = ly - x[:, 1]
        return Fit("ratio", np.array([r.mean()]), np.zeros(k), np.ones(k), empty,
                   max(float(r.std(ddof=1)), MIN_LOG_SD), float(n - 1), n)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    mean[0], scale[0] = 0.0, 1.0
    scale = np.where(scale > 0, scale, 1.0)
    z = _standardize(x, mean, scale)
    penalty = np.full(k, ridge)
    penalty[0] = 0.0  # the intercept is not shrunk
    inv = np.linalg.inv(z.T @ z + np.diag(penalty))
    beta = inv @ z.T @ ly
    hat = z @ inv @ z.T
    df = max(n - float(np.trace(hat)), 1.0)
    resid = ly - z @ beta
    sigma = max(float(np.sqrt(resid @ resid / df)), MIN_LOG_SD)
    return Fit("ridge", beta, mean, scale, inv @ z.T @ z @ inv, sigma, df, n,
               x.min(axis=0), x.max(axis=0))


def t_quantile(df: float, z: float = Z) -> float:
    """Student's t quantile at normal quantile Z (Cornish-Fisher in 1/df; within 1% for df>=3)."""
    if not np.isfinite(df):
        return z
    return float(z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2))


def calibrate(est: pd.DataFrame, measured: pd.DataFrame, metrics: Sequence[str],
              train: np.ndarray | None = None, model: str = "ridge") -> pd.DataFrame:
    """EST (roofline rows, KEY + metrics) with `<metric>_est`, `_lo`, `_hi` for each metric,
    fitted per metric and profile on MEASURED (KEY + metrics: bracketed values only) of the
    deployments TRAIN selects (default: all measured). MODEL `ridge` fits the features;
    `factor` one factor per hardware × engine × quantization (a group with fewer than two
    measurements takes the profile's one factor)."""
    if model not in MODELS:
        raise ValueError(f"calibration model {model!r}: choose one of {', '.join(MODELS)}")
    out = est.copy()
    joined = est.merge(measured[[*KEY, *metrics]], on=list(KEY), how="left",
                       suffixes=("", "_measured"))
    train_mask = np.ones(len(est), bool) if train is None else np.asarray(train, bool)
    for metric in metrics:
        y = pd.to_numeric(joined[f"{metric}_measured"], errors="coerce").to_numpy(float)
        point, lo, hi = (np.full(len(est), np.nan) for _ in range(3))
        modes = np.full(len(est), "", dtype=object)
        for _, idx in est.groupby("profile", sort=False).indices.items():
            x = features(est.iloc[idx], metric)
            if model == "factor":
                _factor(est.iloc[idx], x, y[idx], train_mask[idx], point, lo, hi, modes, idx)
                continue
            m = fit(x[train_mask[idx]], y[idx][train_mask[idx]])
            point[idx], lo[idx], hi[idx] = m.predict(x)
            modes[idx] = m.mode
        out[f"{metric}_est"], out[f"{metric}_lo"], out[f"{metric}_hi"] = point, lo, hi
        out[f"{metric}_fit"] = modes
    return out


def _factor(est: pd.DataFrame, x: np.ndarray, y: np.ndarray, train: np.ndarray,
            point: np.ndarray, lo: np.ndarray, hi: np.ndarray, modes: np.ndarray,
            idx: np.ndarray) -> None:
    """`factor` calibration of one profile's rows, written into POINT, LO, HI, MODES at IDX."""
    pooled = _ratio(x[train], y[train])
    keys = (est["hardware"].astype(str) + "/" + est.get("engine", pd.Series("", est.index))
            .astype(str) + "/" + est["quantization"].astype(str)).to_numpy()
    for key in dict.fromkeys(keys):
        rows = keys == key
        own = _ratio(x[train & rows], y[train & rows])
        m = own if own.mode == "ratio" else pooled
        point[idx[rows]], lo[idx[rows]], hi[idx[rows]] = m.predict(x[rows])
        modes[idx[rows]] = "factor" if m is own else f"{m.mode} (pooled)"


def _ratio(x: np.ndarray, y: np.ndarray) -> Fit:
    """One factor over the roofline (column 1 of X), or the prior below two measurements."""
    keep = np.isfinite(y) & (y > 0) & _estimated(x)
    k = x.shape[1]
    if keep.sum() < 2:
        return Fit("prior", np.zeros(1), np.zeros(k), np.ones(k), np.zeros((k, k)),
                   PRIOR_LOG_SD, np.inf, int(keep.sum()))
    r = np.log(y[keep]) - x[keep, 1]
    return Fit("ratio", np.array([r.mean()]), np.zeros(k), np.ones(k), np.zeros((k, k)),
               max(float(r.std(ddof=1)), MIN_LOG_SD), float(keep.sum() - 1), int(keep.sum()))


def leave_one_deployment_out(est: pd.DataFrame, measured: pd.DataFrame,
                             metrics: Sequence[str], model: str = "ridge") -> pd.DataFrame:
    """Per held-out deployment's rows: the measured value, the roofline's and the calibrated
    estimate fitted without that deployment, with its interval. Rows: KEY × metric."""
    both = est.merge(measured[[*KEY, *metrics]], on=list(KEY), suffixes=("", "_measured"))
    deployments = both["deployment"].astype(str).to_numpy()
    parts = []
    for d in dict.fromkeys(deployments):
        cal = calibrate(est, measured[measured["deployment"].astype(str) != d], metrics,
                        model=model)
        cal = cal[cal["deployment"].astype(str) == d]
        mine = both[deployments == d]
        for metric in metrics:
            got = mine[[*KEY, f"{metric}_measured"]].merge(
                cal[[*KEY, metric, f"{metric}_est", f"{metric}_lo", f"{metric}_hi"]],
                on=list(KEY))
            parts.append(pd.DataFrame({
                **{k: got[k] for k in KEY}, "metric": metric,
                "measured": got[f"{metric}_measured"], "roofline": got[metric],
                "estimate": got[f"{metric}_est"], "lo": got[f"{metric}_lo"],
                "hi": got[f"{metric}_hi"]}))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out[np.isfinite(out["measured"]) & (out["measured"] > 0)] if len(out) else out


def error_table(held_out: pd.DataFrame) -> pd.DataFrame:
    """Per metric (and profile): rows, MAPE of the roofline and of the calibrated estimate,
    and the share of held-out rows (and deployments, all of their rows) the interval covers."""
    h = held_out.assign(
        ape_roofline=(held_out["roofline"] - held_out["measured"]).abs() / held_out["measured"],
        ape_calibrated=(held_out["estimate"] - held_out["measured"]).abs() / held_out["measured"],
        covered=(held_out["lo"] <= held_out["measured"]) & (held_out["measured"] <= held_out["hi"]))
    rows = []
    for keys, part in [*(((m, "all"), p) for m, p in h.groupby("metric", sort=False)),
                       *h.groupby(["metric", "profile"], sort=False)]:
        per_dep = part.groupby("deployment")["covered"].all()
        rows.append({"metric": keys[0], "profile": keys[1], "rows": len(part),
                     "deployments": part["deployment"].nunique(),
                     "mape_roofline": float(part["ape_roofline"].mean()),
                     "mape_calibrated": float(part["ape_calibrated"].mean()),
                     "coverage_rows": float(part["covered"].mean()),
                     "coverage_deployments": float(per_dep.mean())})
    return pd.DataFrame(rows)


def _estimated(x: np.ndarray) -> np.ndarray:
    """Rows of X whose roofline value (column 1, a log) is above the floor. A roofline of 0 (a
    capacity where it misses the SLO at one client) says nothing of how far off it is, and a
    measurement over it made a ratio or a slope of 10^5."""
    return x[:, 1] > np.log(FLOOR) + 1e-9


def _log(values) -> np.ndarray:
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float, na_value=np.nan)
    return np.log(np.maximum(np.where(np.isfinite(v), v, FLOOR), FLOOR))


def _standardize(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (x - mean) / scale
