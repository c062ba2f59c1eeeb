"""Answers from the deployment table: deployments ranked at their operating points for a model ×
length profile × profile, sized for a demand; and a deployment's measured curve.

Framework-free; bad input raises catalog.errors (the API maps them to 4xx with the parameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from catalog.errors import InvalidParameter, NotFound, Unavailable, names_list
from catalog.estimate_points import EstimatesHolder, add_estimates, estimates_mode, replicas
from servecat.values import plain

# Traffic whose mean input or output tokens are more than this factor away from every measured
# length profile is outside them: prefill and decode costs scale with the lengths, so an
# operating point measured at half or twice the tokens no longer describes that traffic.
MAX_RATIO = 2.0
IDENTITY = ("deployment", "hardware", "gpu_count", "engine", "quantization",
            "tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens", "engine_args")
CAPACITY = {"rps": "capacity_rps", "rps_lo": "capacity_rps_lo", "rps_hi": "capacity_rps_hi",
            "concurrency": "capacity_concurrency", "concurrency_lo": "capacity_concurrency_lo",
            "concurrency_hi": "capacity_concurrency_hi", "status": "capacity_status",
            "lower_bound": "capacity_lower_bound", "load": "load", "levels": "levels",
            "requests": "requests", "pass_level": "pass_level", "fail_level": "fail_level",
            "pass_requests": "pass_requests", "fail_requests": "fail_requests",
            "limiting": "capacity_limiting", "draws": "draws",
            "share_lower_bound": "capacity_share_lower_bound",
            "share_none": "capacity_share_none", "reason": "capacity_reason"}
OPERATING_POINT = ("output_tokens_per_s", "output_tokens_per_s_per_gpu", "ttft_p99_ms",
                   "tpot_p99_ms", "error_rate", "goodput_rps", "usd_per_hour_on_demand",
                   "usd_per_hour_spot", "cost_per_mtok_on_demand", "cost_per_mtok_spot")
# Quality against the model's reference deployment (catalog/quality.py), beside the speed.
QUALITY = {"status": "quality_status", "reason": "quality_status_reason",
           "reference": "quality_reference", "probe_version": "quality_probe_version",
           "kl": "quality_kl", "agreement": "quality_agreement",
           "perplexity_ratio": "quality_perplexity_ratio", "perplexity": "quality_perplexity",
           "kl_positions": "quality_kl_positions"}
LEVEL_FIELDS = ("config_id", "load", "concurrency", "rate", "status", "requests_per_s",
                "output_tokens_per_s", "output_tokens_per_s_per_gpu", "ttft_p99_ms",
                "ttft_p99_ms_lo", "ttft_p99_ms_hi", "tpot_p99_ms", "tpot_p99_ms_lo",
                "tpot_p99_ms_hi", "error_rate", "num_requests", "n", "n_ok")
REBUILD = "rebuild it: `dagster asset materialize --select model_catalog` (or `make demo`)"


@dataclass(frozen=True, slots=True)
class Traffic:
    """The length profile a query is answered for, and how it was chosen."""

    lengths: str
    input_tokens: float | None
    output_tokens: float | None
    matched_by: str                       # "lengths" or "nearest"
    requested: tuple[float, float] | None  # the input/output tokens asked for

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lengths": self.lengths, "matched_by": self.matched_by,
                               "input_tokens": plain(self.input_tokens),
                               "output_tokens": plain(self.output_tokens)}
        if self.requested is not None:
            wanted_in, wanted_out = self.requested
            out["requested"] = {"input_tokens": wanted_in, "output_tokens": wanted_out}
            out["input_ratio"] = wanted_in / self.input_tokens
            out["output_ratio"] = wanted_out / self.output_tokens
        return out


class DeploymentIndex:
    """The deployment table grouped by model × length profile × profile, rows in rank order, with
    each row's JSON item prepared once; and the measured levels grouped by deployment."""

    def __init__(self, deployments: pd.DataFrame, levels: pd.DataFrame | None,
                 profiles: dict[str, dict[str, Any]] | None = None,
                 hardware: list[dict[str, Any]] | None = None,
                 estimates: EstimatesHolder | None = None):
        df = deployments.copy()
        rank = pd.to_numeric(df["rank"], errors="coerce").to_numpy(float, na_value=np.nan)
        order = np.lexsort((df["deployment"].astype(str).to_numpy(),
                            np.nan_to_num(rank, nan=np.inf), df["profile"].astype(str).to_numpy(),
                            df["lengths"].astype(str).to_numpy(), df["model"].astype(str).to_numpy()))
        df = df.iloc[order].reset_index(drop=True)
        self.frame = df
        names = sorted(df["profile"].astype(str).unique())
        self.profiles = profiles or {name: {"name": name} for name in names}
        self.groups = {k: np.asarray(v) for k, v in
                       df.groupby(["model", "lengths", "profile"], sort=False).indices.items()}
        self.models = sorted(df["model"].astype(str).unique())
        self.lengths = _lengths_by_model(df)
        # A hardware filter names a type (h100) or a type with its count (h100x2).
        hw_type = df["hardware_type"] if "hardware_type" in df else df["hardware"]
        gpus = pd.to_numeric(df["gpu_count"], errors="coerce").fillna(1).astype(int).astype(str)
        df["hardware_key"] = hw_type.astype(str) + "x" + gpus
        self.known = {"hardware": _names(df, "hardware", "hardware_type", "hardware_key"),
                      "engine": _names(df, "engine"), "quantization": _names(df, "quantization")}
        self.arrays = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(float, na_value=np.nan)
                       if c in df else np.full(len(df), np.nan)  # no quality in old snapshots
                       for c in ("rank", "capacity_rps", "capacity_rps_lo", "gpu_count",
                                 "usd_per_hour_on_demand", "usd_per_hour_spot", "quality_kl",
                                 "quality_agreement")}
        self.strings = {c: df[c].astype(str).to_numpy() for c in
                        ("hardware", "engine", "quantization") if c in df}
        self.strings["hardware_type"] = hw_type.astype(str).to_numpy()
        self.strings["hardware_key"] = df["hardware_key"].to_numpy()
        self.items = [_item(r) for r in _records(df)]
        self.levels = None if levels is None else _Levels.of(levels)
        self.estimates = estimates   # catalog/estimate_points.py: reloaded apart from snapshots
        self.prices = {str(h.get("name")): h for h in hardware or ()}   # they size estimates

    # --- /v1/recommend ------------------------------------------------------------------------

    def recommend(self, *, model: str, profile: str, lengths: str | None = None,
                  input_tokens: float | None = None, output_tokens: float | None = None,
                  demand_rps: float | None = None, hardware: str | None = None,
                  engine: str | None = None, quantization: str | None = None,
                  max_gpus: int | None = None, max_usd_per_hour: float | None = None,
                  max_kl: float | None = None, min_agreement: float | None = None,
                  limit: int = 50, estimates: str = "exclude") -> dict[str, Any]:
        """Deployments of MODEL for PROFILE on the traffic's length profile, in rank order, each
        sized for DEMAND_RPS; deployments without capacity listed apart with the reason.
        MAX_KL / MIN_AGREEMENT keep the ranked ones with a quality figure within them.
        ESTIMATES=include lists estimated-only deployments after them, marked (add_estimates)."""
        include = estimates_mode(estimates)
        if model not in self.models:
            raise NotFound(f"unknown model {_shown(model)}; known models: "
                           f"{names_list(self.models)}", "model")
        if profile not in self.profiles:
            raise NotFound(f"unknown profile {_shown(profile)}; known profiles: "
                           f"{names_list(sorted(self.profiles))}", "profile")
        traffic = self.traffic(model, lengths, input_tokens, output_tokens)
        filters = {"hardware": hardware, "engine": engine, "quantization": quantization}
        for name, value in filters.items():
            if value is not None and value not in self.known[name]:
                raise NotFound(f"unknown {name} {_shown(value)}; measured: "
                               f"{names_list(self.known[name])}", name)
        rows = self.groups.get((model, traffic.lengths, profile), np.zeros(0, int))
        rows = rows[self._matches(rows, filters)]
        ranked = rows[~np.isnan(self.arrays["rank"][rows])]
        unranked = rows[np.isnan(self.arrays["rank"][rows])]
        sizing = self._sizing(ranked, demand_rps)
        keep, why = self._limits(sizing, max_gpus, max_usd_per_hour)
        keep, why = self._quality(ranked, keep, why, max_kl, min_agreement)
        items = []
        for i in np.flatnonzero(keep)[:limit]:  # at most LIMIT items
            item = dict(self.items[ranked[i]])
            if demand_rps is not None:
                item["serving"] = _serving(sizing, i, item["capacity"]["lower_bound"])
            items.append(item)
        info = self.profiles[profile]
        return add_estimates(self, {
            "model": model, "profile": profile, "traffic": traffic.to_dict(),
            "slo": {k: info.get(k) for k in ("ttft_p99_ms", "tpot_p99_ms", "max_error_rate")},
            "weights": info.get("weights", {}),
            "max_quality_loss": info.get("max_quality_loss") or {}, "demand_rps": demand_rps,
            "filters": {**filters, "max_gpus": max_gpus, "max_usd_per_hour": max_usd_per_hour,
                        "max_kl": max_kl, "min_agreement": min_agreement},
            "ranked": int(len(ranked)), "matching": int(keep.sum()),
            "reason": None if items else self._empty_reason(model, traffic, profile, rows,
                                                            ranked, why),
            "items": items,
            "unranked": [_unranked(self.items[r]) for r in unranked[:limit]],
        }, include, limit)

    def traffic(self, model: str, lengths: str | None, input_tokens: float | None,
                output_tokens: float | None) -> Traffic:
        """The length profile asked for by name, or the nearest to the tokens asked for."""
        known = self.lengths.get(model, {})
        listed = ", ".join(f"{k} ({_tokens(v)})" for k, v in sorted(known.items()))
        if lengths is not None:
            if input_tokens is not None or output_tokens is not None:
                raise InvalidParameter("give either lengths or input_tokens and output_tokens, "
                                       "not both", "lengths")
            if lengths not in known:
                raise NotFound(f"unknown length profile {_shown(lengths)} for {model}; "
                               f"measured: {listed}", "lengths")
            return Traffic(lengths, *known[lengths], "lengths", None)
        if input_tokens is None and output_tokens is None:
            raise InvalidParameter(f"missing parameter lengths: give a length profile or "
                                   f"input_tokens and output_tokens; measured for {model}: "
                                   f"{listed}", "lengths")
        for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
            if value is None:
                other = "output_tokens" if name == "input_tokens" else "input_tokens"
                raise InvalidParameter(f"missing parameter {name}: {other} needs it (or give "
                                       f"lengths; measured: {listed})", name)
        return _nearest(model, known, float(input_tokens), float(output_tokens), listed)

    def _matches(self, rows: np.ndarray, filters: dict[str, str | None]) -> np.ndarray:
        mask = np.ones(len(rows), bool)
        for name, value in filters.items():
            if value is None:
                continue
            hit = self.strings[name][rows] == value
            if name == "hardware":
                hit |= ((self.strings["hardware_type"][rows] == value)
                        | (self.strings["hardware_key"][rows] == value))
            mask &= hit
        return mask

    def _sizing(self, rows: np.ndarray, demand: float | None) -> dict[str, np.ndarray]:
        """Replicas, GPUs and $/hour that serve DEMAND (one replica when there is none)."""
        a = {k: v[rows] for k, v in self.arrays.items()}
        gpus = np.maximum(np.nan_to_num(a["gpu_count"], nan=1.0), 1.0)
        if demand is None:
            n = np.ones(len(rows))
            at_lo = np.full(len(rows), np.nan)
        else:
            n = replicas(demand, a["capacity_rps"])
            at_lo = replicas(demand, a["capacity_rps_lo"])
        return {"replicas": n, "gpus": n * gpus,
                "usd_per_hour_on_demand": n * a["usd_per_hour_on_demand"],
                "usd_per_hour_spot": n * a["usd_per_hour_spot"],
                "replicas_at_capacity_lo": at_lo}

    @staticmethod
    def _limits(sizing: dict[str, np.ndarray], max_gpus: int | None,
                max_usd: float | None) -> tuple[np.ndarray, list[str]]:
        keep, why = np.ones(len(sizing["gpus"]), bool), []
        for name, limit, values in (("max_gpus", max_gpus, sizing["gpus"]),
                                    ("max_usd_per_hour", max_usd,
                                     sizing["usd_per_hour_on_demand"])):
            if limit is not None:
                keep &= values <= limit
                why.append(f"{name}={limit:g} leaves {int(keep.sum())}")
        return keep, why

    def _quality(self, rows: np.ndarray, keep: np.ndarray, why: list[str],
                 max_kl: float | None, min_agreement: float | None) -> tuple[np.ndarray, list[str]]:
        """KEEP narrowed to ROWS within the quality filters; a row without the figure fails
        (`not <=`, `not >=`: NaN fails), since no figure is not no loss."""
        why = list(why)
        for name, limit, values, at_most in (
                ("max_kl", max_kl, self.arrays["quality_kl"][rows], True),
                ("min_agreement", min_agreement, self.arrays["quality_agreement"][rows], False)):
            if limit is not None:
                keep = keep & ((values <= limit) if at_most else (values >= limit))
                why.append(f"{name}={limit:g} leaves {int(keep.sum())} (a deployment without "
                           f"a quality figure never passes)")
        return keep, why

    def _empty_reason(self, model: str, traffic: Traffic, profile: str, rows: np.ndarray,
                      ranked: np.ndarray, why: list[str]) -> str:
        group = self.groups.get((model, traffic.lengths, profile), np.zeros(0, int))
        if not len(group):
            return f"no deployment of {model} was measured on {traffic.lengths} traffic"
        if not len(rows):
            return (f"no deployment of {model} on {traffic.lengths} traffic matches the "
                    f"hardware, engine and quantization asked for ({len(group)} without them)")
        if not len(ranked):
            return (f"no deployment of {model} holds the {profile} SLOs on {traffic.lengths} "
                    f"traffic at any measured load: see `unranked` for each one's reason")
        return (f"{len(ranked)} deployment(s) with capacity, none within the limits: "
                + "; ".join(why))

    # --- /v1/curves ---------------------------------------------------------------------------

    def curves(self, *, deployment: str, lengths: str | None = None) -> dict[str, Any]:
        """DEPLOYMENT's measured load levels per length profile (with p99 intervals and n), and
        its capacity under each profile there."""
        if self.levels is None:
            raise Unavailable(f"this catalog snapshot has no load-level table; {REBUILD}")
        measured = self.levels.lengths.get(deployment)
        if measured is None:
            raise NotFound(f"unknown deployment {_shown(deployment)}; known deployments: "
                           f"{names_list(sorted(self.levels.lengths))}", "deployment")
        if lengths is not None and lengths not in measured:
            raise NotFound(f"unknown length profile {_shown(lengths)} for deployment "
                           f"{deployment}; measured: {', '.join(measured)}", "lengths")
        df = self.frame
        mine = np.flatnonzero(df["deployment"].astype(str).to_numpy() == deployment)
        out = []
        for name in measured if lengths is None else [lengths]:  # a few length profiles
            rows = mine[df["lengths"].astype(str).to_numpy()[mine] == name]
            out.append({"lengths": name, "levels": self.levels.records(deployment, name),
                        "capacity": [{"profile": self.items[r]["profile"],
                                      "rank": self.items[r]["rank"],
                                      **self.items[r]["capacity"]} for r in rows]})
        first = self.items[mine[0]] if len(mine) else {}
        return {"deployment": deployment, "model": first.get("model"),
                **{k: first.get(k) for k in IDENTITY[1:]}, "lengths": out}


@dataclass(frozen=True, slots=True)
class _Levels:
    """The measured load levels, sorted by deployment, length profile, kind and load."""

    frame: pd.DataFrame
    groups: dict[tuple[str, str], np.ndarray]
    lengths: dict[str, list[str]]   # the length profiles each deployment measured

    @classmethod
    def of(cls, levels: pd.DataFrame) -> _Levels:
        frame = levels[[f for f in ("deployment", "lengths", *LEVEL_FIELDS) if f in levels]]
        frame = frame.astype({"deployment": str, "lengths": str}).reset_index(drop=True)
        groups = {k: np.asarray(v) for k, v in
                  frame.groupby(["deployment", "lengths"], sort=True).indices.items()}
        lengths: dict[str, list[str]] = {}
        for dep, name in groups:  # one per deployment × length profile
            lengths.setdefault(dep, []).append(name)
        return cls(frame, groups, lengths)

    def records(self, deployment: str, lengths: str) -> list[dict[str, Any]]:
        rows = self.groups.get((deployment, lengths), np.zeros(0, int))
        fields = [f for f in LEVEL_FIELDS if f in self.frame]
        return _records(self.frame.iloc[rows][fields])


def _nearest(model: str, known: dict[str, tuple[float, float]], wanted_in: float,
             wanted_out: float, listed: str) -> Traffic:
    names = [k for k, (i, o) in known.items() if i and o and i > 0 and o > 0]
    if not names:
        raise InvalidParameter(f"the catalog has no token counts for {model}'s length profiles; "
                               f"pass lengths (measured: {listed})", "lengths")
    means = np.array([known[k] for k in names], float)
    logs = np.log(np.array([wanted_in, wanted_out]) / means)   # (n, 2)
    best = int(np.argmin(np.hypot(logs[:, 0], logs[:, 1])))
    name, (mean_in, mean_out) = names[best], means[best]
    off = np.abs(logs[best]) > math.log(MAX_RATIO)
    if off.any():
        param = "input_tokens" if off[0] else "output_tokens"
        raise InvalidParameter(
            f"input_tokens={wanted_in:g}, output_tokens={wanted_out:g} is outside every measured "
            f"length profile of {model}: the nearest is {name} ({_tokens((mean_in, mean_out))}), "
            f"you asked for {_factor(wanted_in / mean_in)} its input and "
            f"{_factor(wanted_out / mean_out)} its output (more than {MAX_RATIO:g}× off); pass lengths={name} to use it anyway, or "
            f"benchmark this traffic", param)
    return Traffic(name, float(mean_in), float(mean_out), "nearest", (wanted_in, wanted_out))


def _serving(sizing: dict[str, np.ndarray], i: int, lower_bound: bool) -> dict[str, Any]:
    """Row I of the sizing, counts as integers; a lower-bound capacity makes them upper bounds."""
    out = {k: plain(v[i]) for k, v in sizing.items()}
    for k in ("replicas", "gpus", "replicas_at_capacity_lo"):
        # Past 2**53 a float is no longer a whole count, and JSON encoders refuse big integers.
        if out[k] is not None and abs(out[k]) < 2**53:
            out[k] = int(out[k])
    out["upper_bound"] = bool(lower_bound)  # capacity >= its value: fewer replicas may do
    return out


def _item(r: dict[str, Any]) -> dict[str, Any]:
    """One measured deployment row as the API shows it: identity, capacity, operating point."""
    return {"source": "measured", "rank": r.get("rank"), "model": r.get("model"),
            "lengths": r.get("lengths"), "profile": r.get("profile"),
            **{k: r.get(k) for k in IDENTITY},
            "capacity": {k: r.get(c) for k, c in CAPACITY.items()},
            "operating_point": {k: r.get(k) for k in OPERATING_POINT},
            "pareto": r.get("pareto"), "topsis_score": r.get("topsis_score"),
            "p_first": r.get("p_first"), "p_top3": r.get("p_top3"),
            "mean_rank": r.get("mean_rank"), "rank_note": r.get("rank_note"),
            "quality": _quality(r)}


def _quality(r: dict[str, Any]) -> dict[str, Any]:
    """A row's quality figures; a snapshot built before quality was measured says so."""
    out = {k: r.get(c) for k, c in QUALITY.items()}
    if out["status"] is None:
        out["status"], out["reason"] = "not measured", "this catalog snapshot has no quality"
    return out


def _unranked(item: dict[str, Any]) -> dict[str, Any]:
    return {**{k: item[k] for k in IDENTITY}, "capacity_status": item["capacity"]["status"],
            "reason": item["rank_note"], "quality": item["quality"]}


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values, None for every missing one."""
    return [{k: plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def _lengths_by_model(df: pd.DataFrame) -> dict[str, dict[str, tuple[float, float]]]:
    cols = [c for c in ("lengths_input_tokens", "lengths_output_tokens") if c in df]
    if len(cols) < 2:
        pairs = df[["model", "lengths"]].drop_duplicates()
        return {m: {k: (np.nan, np.nan) for k in g["lengths"].astype(str)}
                for m, g in pairs.groupby("model")}
    means = df.groupby(["model", "lengths"])[cols].first()
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for (model, lengths), (i, o) in zip(means.index, means.to_numpy(float), strict=True):
        out.setdefault(str(model), {})[str(lengths)] = (float(i), float(o))
    return out


def _names(df: pd.DataFrame, *columns: str) -> list[str]:
    values = set()
    for c in columns:
        if c in df:
            values |= set(df[c].dropna().astype(str))
    return sorted(values - {"nan", "None"})


def _tokens(pair: tuple[float, float]) -> str:
    i, o = pair
    if i is None or o is None or not (np.isfinite(i) and np.isfinite(o)):
        return "token counts unknown"
    return f"{i:.4g} in / {o:.4g} out"


def _factor(ratio: float) -> str:
    return f"{ratio:.3g}×" if ratio >= 1 else f"1/{1 / ratio:.3g} of"


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")
