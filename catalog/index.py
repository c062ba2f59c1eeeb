"""An in-memory, query-ready form of one catalog snapshot: what the API serves from.

At load the rows are sorted by (model, profile, rank), so every (model, profile) group is a
contiguous slice already in rank order and every model is a contiguous run of groups. A query is
then a few numpy masks over one slice plus a JSON dump of the rows it returns. The index is
immutable: the API swaps a whole new index in when a new snapshot appears.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from catalog.config import CRITERIA
from catalog.errors import InvalidParameter, NotFound, StaleCursor, names_list
from catalog.estimate_points import EstimatesHolder
from catalog.recommend_query import DeploymentIndex
from catalog.snapshots import Snapshot

SORTABLE = ("rank", "topsis_score", "output_tokens_per_s", "output_tokens_per_s_per_gpu",
            "ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms", "cost_per_mtok_on_demand",
            "cost_per_mtok_spot", "tokens_per_usd", "slo_attainment", "goodput_rps",
            "requests_per_s", "gpu_count")
RECOMMEND_FIELDS = (
    "rank", "config_id", "deployment", "workload_id", "model", "profile", "hardware", "gpu_count",
    "engine", "quantization", "tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens",
    "lengths", "load", "concurrency", "rate", "output_tokens_per_s", "output_tokens_per_s_per_gpu",
    "ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms", "error_rate", "cost_per_mtok_on_demand",
    "cost_per_mtok_spot", "tokens_per_usd", "slo_attainment", "goodput_rps", "meets_slo",
    "pareto", "topsis_score", "rank_note",
)


@dataclass(slots=True)
class Group:
    """One (model, profile) slice [start, stop); its first `ranked` rows are the ranked ones."""

    start: int
    stop: int
    ranked: int


class CatalogIndex:
    """Columns sorted by (model, profile, rank), with per-group slices.

    Storage is by type, row-major, so returning a page of rows is one gather per type:
    floats (F), integers (I, with a null mask), booleans (B) and strings as codes (C) into one
    table of unique values (U). Columns used in filters and sorts are also kept contiguous in
    `arrays` for fast masks.
    """

    def __init__(self, snapshot: Snapshot, estimates: EstimatesHolder | None = None):
        self.snapshot_id = snapshot.id
        self.created_at = snapshot.created_at
        self.profiles = {p["name"]: p for p in snapshot.profiles}
        self.hardware_info = snapshot.hardware
        df = snapshot.frame
        missing = sorted({"config_id", "model", "profile", "rank", "hardware", "engine",
                          "quantization", "pareto", "meets_slo", *SORTABLE, *CRITERIA} - set(df.columns))
        if missing:
            raise ValueError(f"catalog snapshot {snapshot.id}: missing column(s) "
                             f"{', '.join(missing)}; build it with catalog.build_catalog")
        model_code, models = pd.factorize(df["model"].astype(str), sort=True)
        profile_code, profiles = pd.factorize(df["profile"].astype(str), sort=True)
        rank = df["rank"].to_numpy(dtype=float, na_value=np.nan)
        order = np.lexsort((df["config_id"].astype(str).to_numpy(), np.nan_to_num(rank, nan=np.inf),
                            profile_code, model_code))
        df = df.iloc[order].reset_index(drop=True)
        self.n = len(df)
        self.columns = list(df.columns)
        self._store(df)
        self.model_of = model_code[order]
        self.profile_of = profile_code[order]
        self.model_names = list(models)
        self.profile_names = list(profiles)
        if not self.profiles:
            self.profiles = {name: {"name": name} for name in self.profile_names}
        self._codes: dict[str, tuple[np.ndarray, list[str]]] = {}
        for col in ("engine", "quantization", "hardware", "hardware_type"):
            if col in df:
                codes, names = pd.factorize(df[col].astype(str), sort=True)
                self._codes[col] = (codes.astype(np.int32), list(names))
        known = (set(self._codes["hardware"][1]) | set(self._codes.get("hardware_type", ([], []))[1])
                 | {h["name"] for h in self.hardware_info})
        self.hardware_names = sorted(known - {"nan", "None"})
        self.model_slices = _runs(self.model_of)
        self.groups: dict[tuple[str, str], Group] = {}
        n_profiles = max(len(self.profile_names), 1)
        ranked = ~np.isnan(rank[order])
        for code, (start, stop) in _runs(self.model_of * n_profiles + self.profile_of).items():
            key = (self.model_names[code // n_profiles], self.profile_names[code % n_profiles])
            r = int(ranked[start:stop].sum())  # one iteration per (model, profile)
            self.groups[key] = Group(start, stop, r)
        self._orders: dict[tuple[str, bool, int, int], np.ndarray] = {}
        self._fields: dict[tuple[str, ...] | None, tuple] = {}
        self._lock = threading.Lock()
        self.model_summary = self._model_summary()
        # Snapshots built before deployments were ranked have no deployment table: None here,
        # and the endpoints that need it answer 503 saying how to rebuild. ESTIMATES (the
        # store's estimates table, reloaded on its own) joins its /v1/recommend answers.
        self.deployments = (DeploymentIndex(snapshot.tables["deployments"],
                                            snapshot.tables.get("levels"), self.profiles,
                                            self.hardware_info, estimates)
                            if "deployments" in snapshot.tables else None)

    # --- columns ---------------------------------------------------------------------------

    def _store(self, df: pd.DataFrame) -> None:
        kinds: dict[str, list[str]] = {"o": [], "i": [], "f": [], "b": []}
        for col in self.columns:
            dtype = df[col].dtype
            kind = ("b" if pd.api.types.is_bool_dtype(dtype) else
                    "i" if pd.api.types.is_integer_dtype(dtype) else
                    "f" if pd.api.types.is_float_dtype(dtype) else "o")
            kinds[kind].append(col)
        self.kinds = kinds
        self.F = df[kinds["f"]].to_numpy(float) if kinds["f"] else np.zeros((self.n, 0))
        ints = df[kinds["i"]]
        self.I = ints.fillna(0).to_numpy(np.int64) if kinds["i"] else np.zeros((self.n, 0), np.int64)
        self.I_null = ints.isna().to_numpy() if kinds["i"] else np.zeros((self.n, 0), bool)
        self.B = df[kinds["b"]].to_numpy(bool) if kinds["b"] else np.zeros((self.n, 0), bool)
        # Strings: one table of unique values for all string columns, codes per cell.
        codes, uniques, offset = [], [], 0
        for col in kinds["o"]:  # one iteration per column
            c, u = pd.factorize(df[col].astype(object), use_na_sentinel=True)
            c = np.where(c < 0, len(u), c) + offset
            codes.append(c.astype(np.int32))
            uniques.extend([*u.tolist(), None])
            offset += len(u) + 1
        self.U = np.array(uniques, dtype=object)
        self.C = np.column_stack(codes) if codes else np.zeros((self.n, 0), np.int32)
        # Contiguous copies of the columns queries filter and sort on.
        self.arrays: dict[str, np.ndarray] = {
            col: df[col].to_numpy(bool) if col in kinds["b"]
            else df[col].to_numpy(dtype=float, na_value=np.nan)
            for col in {*SORTABLE, *CRITERIA, "meets_slo", "pareto"} & set(self.columns)}

    def _field_plan(self, fields: Sequence[str] | None) -> tuple:
        plan = self._fields.get(fields if fields is None else tuple(fields))
        if plan is None:
            wanted = set(fields) if fields is not None else set(self.columns)
            plan = tuple((kind, [c for c in self.kinds[kind] if c in wanted],
                          slice(None) if wanted >= set(self.kinds[kind]) else
                          np.array([i for i, c in enumerate(self.kinds[kind]) if c in wanted], int))
                         for kind in ("o", "i", "f", "b"))
            with self._lock:
                self._fields[fields if fields is None else tuple(fields)] = plan
        return plan

    def records(self, rows: np.ndarray, fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Dicts for ROWS, keys grouped strings, integers, floats, booleans; missing strings and
        integers are None, missing floats NaN (the API's JSON encoder writes null). One gather
        per storage type, not one per column."""
        (_, o_cols, o_idx), (_, i_cols, i_idx), (_, f_cols, f_idx), (_, b_cols, b_idx) = \
            self._field_plan(fields)
        keys = o_cols + i_cols + f_cols + b_cols
        strings = self.U[self.C[rows][:, o_idx]].tolist()
        ints = self.I[rows][:, i_idx]
        null = self.I_null[rows][:, i_idx]
        if null.any():
            ints = ints.astype(object)
            ints[null] = None
        floats = self.F[rows][:, f_idx].tolist()
        bools = self.B[rows][:, b_idx].tolist()
        return [dict(zip(keys, o + i + f + b, strict=True))
                for o, i, f, b in zip(strings, ints.tolist(), floats, bools, strict=True)]

    # --- lookups ---------------------------------------------------------------------------

    def model_slice(self, model: str) -> tuple[int, int]:
        try:
            return self.model_slices[self.model_names.index(model)]
        except ValueError:
            raise NotFound(f"unknown model {model!r}; known models: "
                           f"{names_list(self.model_names)}", "model") from None

    def group(self, model: str, profile: str) -> Group:
        self.model_slice(model)
        self.check_profile(profile)
        group = self.groups.get((model, profile))
        if group is None:  # the model has no rows for that profile
            return Group(0, 0, 0)
        return group

    def check_profile(self, profile: str) -> None:
        if profile not in self.profiles:
            raise NotFound(f"unknown profile {profile!r}; known profiles: "
                           f"{names_list(sorted(self.profiles))}", "profile")

    def match(self, col: str, value: str, start: int, stop: int) -> np.ndarray:
        """Mask over rows [start, stop) where COL equals VALUE (404 listing names if none ever does)."""
        if col == "hardware":
            if value not in self.hardware_names:
                raise NotFound(f"unknown hardware {value!r}; known hardware: "
                               f"{names_list(self.hardware_names)}", "hardware")
            mask = self._code_mask("hardware", value, start, stop)
            if "hardware_type" in self._codes:
                mask |= self._code_mask("hardware_type", value, start, stop)
            return mask
        if value not in self._codes[col][1]:
            raise NotFound(f"unknown {col} {value!r}; known: {names_list(self._codes[col][1])}", col)
        return self._code_mask(col, value, start, stop)

    def _code_mask(self, col: str, value: str, start: int, stop: int) -> np.ndarray:
        codes, names = self._codes[col]
        try:
            return codes[start:stop] == names.index(value)
        except ValueError:
            return np.zeros(stop - start, bool)

    # --- queries ---------------------------------------------------------------------------

    def catalog(self, *, model: str | None = None, profile: str | None = None,
                hardware: str | None = None, engine: str | None = None,
                quantization: str | None = None, sort: str = "rank", limit: int = 50,
                cursor: str | None = None) -> dict[str, Any]:
        """Catalog rows matching the filters, sorted by SORT (`-col` for descending), one page."""
        descending = sort.startswith("-")
        key = sort[1:] if descending else sort
        if key not in SORTABLE:
            raise InvalidParameter(f"sort: {sort!r} is not one of {', '.join(SORTABLE)} "
                                   "(prefix - for descending)", "sort")
        # The narrowest contiguous scope: one (model, profile) group, one model, or everything.
        if model is not None and profile is not None:
            g = self.group(model, profile)
            start, stop, mask = g.start, g.stop, None
        else:
            start, stop = self.model_slice(model) if model is not None else (0, self.n)
            mask = None
            if profile is not None:
                self.check_profile(profile)
                mask = self.profile_of[start:stop] == _index(self.profile_names, profile)
        for col, value in (("hardware", hardware), ("engine", engine), ("quantization", quantization)):
            if value is not None:
                m = self.match(col, value, start, stop)
                mask = m if mask is None else mask & m
        query = {"model": model, "profile": profile, "hardware": hardware, "engine": engine,
                 "quantization": quantization, "sort": sort}
        offset = self._decode_cursor(cursor, query) if cursor else 0
        order = self._order(key, descending, start, stop)
        total = (stop - start) if mask is None else int(np.count_nonzero(mask))
        page = _page(order, mask, offset, limit) + start
        more = offset + limit < total
        return {"snapshot": self.snapshot_id, "total": total, "limit": limit,
                "next_cursor": self._encode_cursor(offset + limit, query) if more else None,
                "rows": self.records(page)}

    def _order(self, key: str, descending: bool, start: int, stop: int) -> np.ndarray:
        """Positions in [start, stop) (relative to start) sorted by KEY, NaN last, ties in rank
        order; computed once per (key, direction, scope) and cached."""
        cache_key = (key, descending, start, stop)
        order = self._orders.get(cache_key)
        if order is None:
            v = self.arrays[key][start:stop]
            v = np.where(np.isnan(v), np.inf, -v if descending else v)
            order = np.argsort(v, kind="stable").astype(np.int32)
            with self._lock:
                self._orders[cache_key] = order
        return order

    def _encode_cursor(self, offset: int, query: dict[str, Any]) -> str:
        raw = json.dumps({"s": self.snapshot_id, "o": offset, "q": _query_hash(query)})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _decode_cursor(self, cursor: str, query: dict[str, Any]) -> int:
        try:
            data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            snapshot, offset, qhash = data["s"], data["o"], data["q"]
            if not isinstance(offset, int) or offset < 0:
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise InvalidParameter("cursor: not a cursor this API issued; pass next_cursor "
                                   "from a previous page unchanged", "cursor") from None
        if snapshot != self.snapshot_id:
            raise StaleCursor(f"cursor: issued for catalog snapshot {snapshot}, now serving "
                              f"{self.snapshot_id}; start again without a cursor", "cursor")
        if qhash != _query_hash(query):
            raise InvalidParameter("cursor: issued for a different query; keep the other "
                                   "parameters the same while paging", "cursor")
        return offset

    def pareto(self, *, model: str, profile: str) -> dict[str, Any]:
        """The Pareto front of MODEL (throughput/GPU ↑, p99 TTFT ↓, p99 TPOT ↓, cost ↓),
        sorted by throughput per GPU, descending, with PROFILE's ranks."""
        g = self.group(model, profile)
        rows = np.flatnonzero(self.arrays["pareto"][g.start:g.stop]) + g.start
        rows = rows[np.argsort(-self.arrays["output_tokens_per_s_per_gpu"][rows], kind="stable")]
        return {"snapshot": self.snapshot_id, "model": model, "profile": profile,
                "criteria": {"output_tokens_per_s_per_gpu": "max", "ttft_p99_ms": "min",
                             "tpot_p99_ms": "min", "cost_per_mtok_on_demand": "min"},
                "count": int(len(rows)), "items": self.records(rows, RECOMMEND_FIELDS)}

    def _model_summary(self) -> list[dict[str, Any]]:
        out = []
        for code, (start, stop) in self.model_slices.items():  # one per model
            name = self.model_names[code]
            profiles = [p for p in self.profile_names if (name, p) in self.groups]
            per_profile = max(len(profiles), 1)
            ranked = sum(self.groups[(name, p)].ranked for p in profiles)
            out.append({"model": name, "configs": (stop - start) // per_profile,
                        "ranked_configs": ranked // per_profile, "profiles": profiles})
        return out


def _runs(codes: np.ndarray) -> dict[int, tuple[int, int]]:
    """{code: (start, stop)} for a sorted code array."""
    if not len(codes):
        return {}
    starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
    stops = np.r_[starts[1:], len(codes)]
    return dict(zip(codes[starts].tolist(), zip(starts.tolist(), stops.tolist(), strict=True),
                    strict=True))


def _page(order: np.ndarray, mask: np.ndarray | None, offset: int, limit: int) -> np.ndarray:
    """Positions offset..offset+limit of ORDER restricted to MASK, scanning ORDER in chunks only
    as far as the page needs."""
    if mask is None:
        return order[offset:offset + limit]
    need, found, count = offset + limit, [], 0
    step = max(4096, 8 * need)
    for s in range(0, len(order), step):  # one iteration per chunk; a first page needs one or two
        chunk = order[s:s + step]
        hits = chunk[mask[chunk]]
        found.append(hits)
        count += len(hits)
        if count >= need:
            break
    return np.concatenate(found)[offset:need] if found else order[:0]


def _index(names: list[str], value: str) -> int:
    return names.index(value) if value in names else -1


def _query_hash(query: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(query, sort_keys=True).encode()).hexdigest()[:12]


