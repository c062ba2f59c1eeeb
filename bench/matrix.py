"""Expand a matrix spec into the test matrix: one row per config, with pruning reasons.

A deployment (model × hardware × engine × engine args × quantization) is one running server;
a config is a deployment × a workload. Deployment-level checks run once per deployment;
the memory check that depends on the workload runs vectorised over all configs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.spec import MatrixSpec, load_spec
from servecat import __version__
from servecat.engines import KV_BYTES, WEIGHT_BYTES, supported, unsupported_scale
from servecat.errors import SpecError
from servecat.hardware import hardware_key, load_hardware

GiB = 1024**3
# Most candidate configs one expansion builds, counted before any is built: a bigger grid is a
# typo or hostile (a 10M-config spec died inside numpy), and a product of list lengths is free.
MAX_CONFIGS = 2_000_000
# Concurrency assumed for an open-loop workload with no cap and an engine with no max_num_seqs.
DEFAULT_OPEN_LOOP_CONCURRENCY = 256
# Engine args that become their own columns (the rest stay in `engine_args` JSON).
ARG_COLUMNS = ("tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens")
WORKLOAD_FIELDS = (
    "lengths", "input_dist", "input_tokens", "input_min", "input_max", "input_std",
    "output_dist", "output_tokens", "output_min", "output_max", "output_std", "load",
    "concurrency", "rate", "arrival", "burstiness", "max_concurrency", "requests", "duration_s",
    "warmup_requests", "shared_prefix_tokens", "api", "seed",
)
# A capacity search is one matrix row (`search` true, its range, the profiles it brackets and
# its precision); its probes are chosen at run time, each a config of its own that names the
# search in `probe_of` (null in the matrix). These columns join a workload's hash only on a
# search row, so the ids of fixed levels are what they were before searches existed.
SEARCH_FIELDS = ("search", "search_min", "search_max", "search_slo", "search_precision",
                 "probe_of")

REASON_ENGINE = "engine does not support the quantization on this hardware"
REASON_TP = "tensor parallel size does not divide the GPU count"
REASON_WEIGHTS = "weights do not fit in GPU memory"
REASON_KV = "weights + KV cache for max concurrency x context do not fit in GPU memory"


def stable_hash(obj: object) -> str:
    """SHA-256 of canonical JSON: the same content gives the same hash whatever the key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def slug(text: str, limit: int = 32) -> str:
    """Lower-case [a-z0-9.-] only: safe in partition keys, file names and URLs."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9.]+", "-", text.lower())).strip("-.")[:limit]


@dataclass
class Expansion:
    """The kept configs plus what was pruned and why."""

    spec: MatrixSpec
    configs: pd.DataFrame
    pruned: Counter = field(default_factory=Counter)  # reason -> number of configs
    pruned_deployments: Counter = field(default_factory=Counter)  # reason -> deployments
    candidates: int = 0

    @property
    def deployments(self) -> list[str]:
        """Deployment keys in matrix order (the Dagster partition keys)."""
        return list(dict.fromkeys(self.configs["deployment"]))


def _load_levels(spec: MatrixSpec) -> list[dict]:
    """Distinct load levels and capacity searches as workload columns: by kind, fixed levels
    ascending, then the searches of that kind by their lowest load."""
    levels = {}
    for load in spec.workloads.loads:
        is_rate = load.search == "rate" or (load.search is None and bool(load.rate))
        shape = ({"arrival": load.arrival, "burstiness": load.burstiness,
                  "max_concurrency": load.max_concurrency} if is_rate else
                 {"arrival": "constant", "burstiness": 1.0, "max_concurrency": None})
        if load.search:
            row = {"load": load.search, "concurrency": None, "rate": None, **shape,
                   "search": True, "search_min": float(load.min), "search_max": float(load.max),
                   "search_slo": ",".join(load.slo),
                   "search_precision": float(load.search_precision)}
            levels[json.dumps(row, sort_keys=True)] = row
            continue
        for c in load.concurrency:
            row = {"load": "concurrency", "concurrency": int(c), "rate": None, "arrival": "constant",
                   "burstiness": 1.0, "max_concurrency": None}
            levels[json.dumps(row, sort_keys=True)] = row
        for r in load.rate:
            row = {"load": "rate", "concurrency": None, "rate": float(r), **shape}
            levels[json.dumps(row, sort_keys=True)] = row
    return sorted(levels.values(), key=lambda x: (
        x["load"], bool(x.get("search")),
        x.get("search_min") or x["concurrency"] or x["rate"], x.get("search_max") or 0.0))


def count_configs(spec: MatrixSpec, table: dict) -> tuple[int, int]:
    """(deployments, workloads) of SPEC before pruning, counted without building any: their
    product is the number of candidate configs. Hardware names must be in TABLE."""
    quants = sum(len(m.quantizations or spec.quantizations) for m in spec.models)
    gpus = sum(len(c.counts or table[c.name].counts) for c in spec.hardware)
    grids = sum(math.prod(len(v) for v in e.args.values()) for e in spec.engines)
    return quants * gpus * grids, len(spec.workloads.lengths) * len(_load_levels(spec))


def check_size(spec: MatrixSpec, table: dict, source: str, max_configs: int = MAX_CONFIGS) -> None:
    """A SpecError naming the size when SPEC has more than MAX_CONFIGS candidate configs."""
    deps, workloads = count_configs(spec, table)
    if deps * workloads > max_configs:
        raise SpecError(source, "", f"the matrix has {deps * workloads:,} configs ({deps:,} "
                                    f"deployments x {workloads:,} workloads), over the cap of "
                                    f"{max_configs:,}: narrow a dimension or split the spec")


def _workloads(spec: MatrixSpec) -> pd.DataFrame:
    """One row per workload, in sweep order: lengths as listed, load levels ascending."""
    w = spec.workloads
    levels = _load_levels(spec)
    no_search = {"search": False, "search_min": None, "search_max": None, "search_slo": None,
                 "search_precision": None, "probe_of": None}
    rows = []
    for lp in w.lengths:
        (imin, imax), (omin, omax) = lp.input_tokens.bounds(), lp.output_tokens.bounds()
        base = {
            "lengths": lp.name, "input_dist": lp.input_tokens.dist,
            "input_tokens": lp.input_tokens.mean(), "input_min": imin, "input_max": imax,
            "input_std": lp.input_tokens.std, "output_dist": lp.output_tokens.dist,
            "output_tokens": lp.output_tokens.mean(), "output_min": omin, "output_max": omax,
            "output_std": lp.output_tokens.std, "requests": w.requests,
            "duration_s": w.duration_s, "warmup_requests": w.warmup_requests,
            "shared_prefix_tokens": lp.shared_prefix_tokens, "api": lp.api, "seed": w.seed,
        }
        rows += [{**base, **no_search, **level} for level in levels]
    df = pd.DataFrame(rows, columns=[*WORKLOAD_FIELDS, *SEARCH_FIELDS])
    for name in ("concurrency", "max_concurrency"):
        df[name] = df[name].astype("Int64")
    for name in ("duration_s", "search_min", "search_max", "search_precision"):
        df[name] = df[name].astype(float)
    for name in ("search_slo", "probe_of"):
        df[name] = df[name].astype("string")
    df["search"] = df["search"].astype(bool)
    records = df.to_dict("records")
    hashes = [stable_hash({k: r[k] for k in WORKLOAD_FIELDS + (SEARCH_FIELDS if r["search"] else ())})
              for r in records]
    df["workload_hash"] = hashes
    df["workload_id"] = [f"{slug(r['lengths'], 20)}-{load_tag(r)}-{h[:6]}"
                         for r, h in zip(records, hashes, strict=True)]
    df["workload_index"] = np.arange(len(df))
    return df


def load_tag(row: dict) -> str:
    """`c8`, `r2.5`, `r2.5-gamma`, a search `search-r0.5-64`: the load part of a workload id."""
    search = row.get("search")
    if row["load"] == "concurrency":
        return (f"search-c{row['search_min']:g}-{row['search_max']:g}" if search
                else f"c{row['concurrency']}")
    level = f"search-r{row['search_min']:g}-{row['search_max']:g}" if search else f"r{row['rate']:g}"
    return level + ("" if row["arrival"] == "poisson" else f"-{row['arrival']}")


def _rule_matches(conditions: dict, values: dict) -> bool:
    return all(values.get(k) in v for k, v in conditions.items() if k in values)


def _deployments(spec: MatrixSpec, table: dict, pruned: Counter, n_workloads: int) -> pd.DataFrame:
    """Kept deployments, one row each; pruned ones counted by reason (× workloads)."""
    dep_rule_keys = {"model", "hardware", "gpu_count", "engine", "quantization",
                     "tensor_parallel_size"}
    dep_rules = [(r.conditions(), r.reason) for r in spec.exclude
                 if set(r.conditions()) <= dep_rule_keys]
    rows = []
    for model in spec.models:
        quants = model.quantizations or spec.quantizations
        for choice in spec.hardware:
            hw = table[choice.name]
            for count in choice.counts or hw.counts:
                usable = hw.memory_gb * GiB * count * spec.memory_utilization
                for engine in spec.engines:
                    grid = dict(engine.args)
                    grid.setdefault("tensor_parallel_size", [count])
                    keys = sorted(grid)
                    for values in itertools.product(*(grid[k] for k in keys)):
                        args = dict(zip(keys, values, strict=True))
                        for quant in quants:
                            dims = {"model": model.short_name, "hardware": hw.name,
                                    "gpu_count": count, "engine": engine.name,
                                    "quantization": quant,
                                    "tensor_parallel_size": args["tensor_parallel_size"]}
                            reason = None
                            weights = model.parameters * WEIGHT_BYTES[quant]
                            if not supported(engine.name, hw.name, quant):
                                reason = REASON_ENGINE
                            elif scale := unsupported_scale(engine.name, count,
                                                            args["tensor_parallel_size"]):
                                reason = scale
                            elif count % args["tensor_parallel_size"]:
                                reason = REASON_TP
                            else:
                                for cond, why in dep_rules:
                                    if _rule_matches(cond, dims):
                                        reason = f"excluded: {why}" if why else "excluded by rule"
                                        break
                            if reason is None and weights > usable:
                                reason = REASON_WEIGHTS
                            if reason:
                                pruned[reason] += n_workloads
                                continue
                            identity = {"model": model.id, "hardware": hw.name,
                                        "gpu_count": count, "engine": engine.name,
                                        "quantization": quant, "engine_args": args}
                            h = stable_hash(identity)
                            key = "-".join([slug(model.short_name), hardware_key(hw.name, count),
                                            engine.name, quant, h[:8]])
                            rows.append({
                                "deployment": key, "deployment_hash": h,
                                "model": model.short_name, "model_id": model.id,
                                "parameters": model.parameters, "layers": model.layers,
                                "kv_heads": model.kv_heads, "head_dim": model.head_dim,
                                "hardware": hw.name, "gpu_count": count,
                                "hardware_key": hardware_key(hw.name, count),
                                "engine": engine.name, "quantization": quant,
                                "engine_args": json.dumps(args, sort_keys=True),
                                **{c: args.get(c) for c in ARG_COLUMNS},
                                "weights_gb": weights / GiB, "usable_memory_gb": usable / GiB,
                                "kv_bytes_per_token": 2 * model.layers * model.kv_heads
                                * model.head_dim * KV_BYTES[quant],
                            })
    deps = pd.DataFrame(rows)
    for name in ARG_COLUMNS:
        if name in deps:
            deps[name] = deps[name].astype("Int64")
    return deps


def _row_rule_mask(deps: pd.DataFrame, workloads: pd.DataFrame, d_idx: np.ndarray,
                   w_idx: np.ndarray, spec: MatrixSpec) -> tuple[np.ndarray, np.ndarray]:
    """Configs excluded by rules that name workload fields, and the reason for each."""
    reasons = np.full(len(d_idx), None, dtype=object)
    dep_keys = {"model", "hardware", "gpu_count", "engine", "quantization", "tensor_parallel_size"}
    for rule in spec.exclude:
        cond = rule.conditions()
        if set(cond) <= dep_keys:
            continue
        mask = np.ones(len(d_idx), dtype=bool)
        for key, values in cond.items():
            if key in deps.columns:
                mask &= deps[key].isin(values).to_numpy()[d_idx]
            else:
                mask &= workloads[key].isin(values).to_numpy()[w_idx]
        why = f"excluded: {rule.reason}" if rule.reason else "excluded by rule"
        reasons[mask & (reasons == None)] = why  # noqa: E711 (element-wise)
    return reasons != None, reasons  # noqa: E711


def _take(column: pd.Series, idx: np.ndarray):
    """column[idx]; strings as categoricals, so a million rows cost no string copies."""
    if isinstance(column.dtype, pd.api.extensions.ExtensionDtype) and column.dtype.kind in "biuf":
        return column.array.take(idx)
    if column.dtype.kind in "biuf":
        return column.to_numpy()[idx]
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return pd.Categorical.from_codes(codes[idx], categories=uniques)


def expand(spec: MatrixSpec, hardware_path: str | Path | None = None,
           max_configs: int = MAX_CONFIGS, source: str | None = None) -> Expansion:
    """All configs of SPEC: kept rows in a DataFrame, pruned ones counted by reason. A SpecError
    (naming SOURCE, default the matrix name) if SPEC has more than MAX_CONFIGS candidates."""
    table = load_hardware(hardware_path or spec.hardware_table)
    check_size(spec, table, source or f"matrix {spec.name}", max_configs)
    workloads = _workloads(spec)
    n_wl = len(workloads)
    pruned: Counter = Counter()
    deps = _deployments(spec, table, pruned, n_wl)
    n_candidates = (len(deps) * n_wl) + sum(pruned.values())
    pruned_deps = Counter({k: v // n_wl for k, v in pruned.items()})
    if deps.empty:
        return Expansion(spec, pd.DataFrame(), pruned, pruned_deps, n_candidates)

    # Feasibility on plain arrays over deployments x workloads, before any row is built.
    d_idx = np.repeat(np.arange(len(deps)), n_wl)
    w_idx = np.tile(np.arange(n_wl), len(deps))
    is_conc = (workloads["load"] == "concurrency").to_numpy()
    # A concurrency search may reach its max.
    top = workloads["concurrency"].astype(float).fillna(workloads["search_max"]).fillna(0)
    client = np.where(is_conc, top.to_numpy(float),
                      workloads["max_concurrency"].fillna(DEFAULT_OPEN_LOOP_CONCURRENCY)
                      .to_numpy(float))  # an open-loop workload holds at most its cap
    # KV cache for the most sequences the server holds at once x the longest context.
    max_seqs = deps["max_num_seqs"].astype(float).fillna(np.inf).to_numpy(float)
    seqs = np.minimum(client[w_idx], max_seqs[d_idx])
    context = (workloads["input_max"] + workloads["output_max"]).to_numpy(float)[w_idx]
    kv_gb = deps["kv_bytes_per_token"].to_numpy(float)[d_idx] * seqs * context / GiB
    too_big = (deps["weights_gb"].to_numpy(float)[d_idx] + kv_gb
               > deps["usable_memory_gb"].to_numpy(float)[d_idx])
    excluded, rule_reasons = _row_rule_mask(deps, workloads, d_idx, w_idx, spec)
    for reason, n in Counter(rule_reasons[excluded]).items():
        pruned[reason] += n
    pruned[REASON_KV] += int((too_big & ~excluded).sum())
    keep = ~(too_big | excluded)
    d_idx, w_idx = d_idx[keep], w_idx[keep]

    # config_id = deployment content hash + workload content hash (16 hex): stable, and a
    # config's id starts with its deployment's hash. No per-row hashing needed.
    dep_h = deps["deployment_hash"].str.slice(0, 8).to_numpy(dtype=object)
    wl_h = workloads["workload_hash"].str.slice(0, 8).to_numpy(dtype=object)
    cols = {"matrix": spec.name, "servecat_version": __version__,
            "config_id": dep_h[d_idx] + wl_h[w_idx]}
    for frame, idx, drop in ((deps, d_idx, ["deployment_hash", "kv_bytes_per_token"]),
                             (workloads, w_idx, ["workload_hash"])):
        for name in frame.columns.drop(drop):
            cols[name] = _take(frame[name], idx)
    cols["kv_cache_gb"] = kv_gb[keep]
    df = pd.DataFrame(cols)
    first = ["matrix", "servecat_version", "config_id", "deployment", "workload_id"]
    df = df[first + [c for c in df.columns if c not in first]]
    return Expansion(spec, df, Counter({k: v for k, v in pruned.items() if v}),
                     pruned_deps, n_candidates)


def expand_file(path: str | Path, require_kept: bool = True,
                max_configs: int = MAX_CONFIGS) -> Expansion:
    """Load and expand the spec at PATH (at most MAX_CONFIGS candidate configs); a spec that
    prunes everything is an error."""
    spec = load_spec(path)
    result = expand(spec, _hardware_path(spec, path), max_configs, str(path))
    if require_kept and result.configs.empty:
        reasons = "; ".join(f"{r}: {n}" for r, n in result.pruned.most_common())
        raise SpecError(str(path), "", f"every config was pruned ({reasons})")
    return result


def _hardware_path(spec: MatrixSpec, path: str | Path) -> str | None:
    if spec.hardware_table and not Path(spec.hardware_table).is_absolute():
        return str(Path(path).parent / spec.hardware_table)
    return spec.hardware_table
