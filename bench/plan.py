"""What measuring a matrix costs: GPU-hours, dollars on-demand and spot, and wall time on a
fleet. Measured workload durations come from the store's summary rows (`wall_s`, warm-up
included); every other workload is estimated with a stated roofline (`Assumptions`).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from bench.capacity_search import search_probes
from bench.matrix import DEFAULT_OPEN_LOOP_CONCURRENCY, GiB
from servecat.engines import KV_BYTES, WEIGHT_BYTES
from servecat.fleet import REMOTE_ENGINES, Fleet
from servecat.hardware import Hardware


@dataclass(frozen=True, slots=True)
class Assumptions:
    """The estimate of an unmeasured workload: a roofline over the hardware table.

    A decode step reads the weights plus the batch's KV cache at BANDWIDTH_EFFICIENCY of the
    GPUs' memory bandwidth, or does 2 x parameters FLOPs per sequence at COMPUTE_EFFICIENCY of
    their bf16 peak, whichever is slower; a prompt costs 2 x parameters x tokens FLOPs. An
    open-loop workload lasts at least requests / rate. A server starts in START_S plus its
    weights read at LOAD_GB_PER_S.
    """

    bandwidth_efficiency: float = 0.6
    compute_efficiency: float = 0.4
    start_s: float = 60.0
    load_gb_per_s: float = 1.0

    def describe(self) -> str:
        return (f"unmeasured workloads: roofline at {self.bandwidth_efficiency:.0%} of memory "
                f"bandwidth (decode) and {self.compute_efficiency:.0%} of bf16 peak (prefill), "
                f"open-loop at least requests/rate; server start {self.start_s:.0f} s + weights "
                f"at {self.load_gb_per_s:g} GB/s; sweeps that stop at saturation cost less")


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """One pool of the fleet (a GPU type) or one provider quota, and what the matrix costs it."""

    pool: str
    slots: int  # the fleet's GPUs of the type (machines for cpu), or the quota's runs
    deployments: int
    configs: int
    measured: int  # configs whose duration comes from the store
    gpu_hours: float
    usd_on_demand: float
    usd_spot: float
    usd_fleet: float  # at the fleet's capacity for the type (spot or on-demand)
    wall_h: float | None  # None: the pool cannot run some of its deployments
    why: str = ""


@dataclass
class MatrixPlan:
    matrix: str
    fleet: str
    assumptions: Assumptions
    pools: list[PoolPlan] = field(default_factory=list)

    @property
    def total(self) -> PoolPlan:
        """Sums over the pools; the wall time of those that can run (they run side by side)."""
        walls = [p.wall_h for p in self.pools if p.wall_h is not None]
        stuck = [p.pool for p in self.pools if p.wall_h is None]
        return PoolPlan("total", sum(p.slots for p in self.pools),
                        *(sum(getattr(p, f) for p in self.pools)
                          for f in ("deployments", "configs", "measured", "gpu_hours",
                                    "usd_on_demand", "usd_spot", "usd_fleet")),
                        max(walls, default=0.0),
                        f"not counted: {', '.join(stuck)} cannot run on this fleet" if stuck else "")

    def to_dict(self) -> dict:
        return {"matrix": self.matrix, "fleet": self.fleet,
                "assumptions": asdict(self.assumptions) | {"text": self.assumptions.describe()},
                "pools": [asdict(p) for p in self.pools], "total": asdict(self.total)}


def estimate_workload_s(configs: pd.DataFrame, table: Mapping[str, Hardware],
                        a: Assumptions) -> np.ndarray:
    """Seconds each config's workload takes (warm-up included), by the roofline of A."""
    hw = configs["hardware"].astype(str)
    gpus = configs["gpu_count"].to_numpy(float)
    bandwidth = hw.map({n: h.memory_bandwidth_gbps for n, h in table.items()}).to_numpy(float)
    peak = hw.map({n: h.peak_bf16_tflops for n, h in table.items()}).to_numpy(float)
    bytes_per_s = bandwidth * 1e9 * gpus * a.bandwidth_efficiency
    flops = peak * 1e12 * gpus * a.compute_efficiency
    quant = configs["quantization"].astype(str)
    params = configs["parameters"].to_numpy(float)
    weights = params * quant.map(WEIGHT_BYTES).to_numpy(float)
    kv_token = (2 * configs["layers"].to_numpy(float) * configs["kv_heads"].to_numpy(float)
                * configs["head_dim"].to_numpy(float) * quant.map(KV_BYTES).to_numpy(float))
    closed = configs["load"].astype(str).to_numpy() == "concurrency"
    # A capacity search's probes are chosen at run time: cost it as its most probes, each a
    # level at the geometric middle of its range.
    middle = (np.sqrt(configs["search_min"].astype(float) * configs["search_max"].astype(float))
              if "search_min" in configs else pd.Series(np.nan, index=configs.index))
    clients = np.where(closed, configs["concurrency"].astype(float).fillna(middle).fillna(1)
                       .to_numpy(float),
                       configs["max_concurrency"].astype(float)
                       .fillna(DEFAULT_OPEN_LOOP_CONCURRENCY).to_numpy(float))
    batch = np.minimum(clients, configs["max_num_seqs"].astype(float).fillna(np.inf).to_numpy(float))
    inp, out = (configs[c].to_numpy(float) for c in ("input_tokens", "output_tokens"))
    step = np.maximum((weights + batch * (inp + out / 2) * kv_token) / bytes_per_s,
                      2 * params * batch / flops)
    n = (configs["requests"] + configs["warmup_requests"]).to_numpy(float)
    busy = n * 2 * params * inp / flops + n * out * step / batch
    rate = configs["rate"].astype(float).fillna(middle).to_numpy(float)
    seconds = np.where(closed, busy, np.maximum(busy, n / np.where(closed, 1.0, rate)))
    limit = configs["duration_s"].astype(float).to_numpy(float)
    seconds = np.where(np.isnan(limit), seconds, np.minimum(seconds, limit))
    return seconds * search_probes(configs)  # a duration limit holds per probe


def deployment_hours(configs: pd.DataFrame, measured: pd.DataFrame,
                     table: Mapping[str, Hardware], a: Assumptions) -> pd.DataFrame:
    """Per deployment: hours (start + every workload), configs, measured configs, GPUs."""
    seconds = estimate_workload_s(configs, table, a)
    known = (measured.dropna(subset=["wall_s"]).groupby("config_id")["wall_s"].max()
             if len(measured) else pd.Series(dtype=float))
    got = configs["config_id"].astype(str).map(known).to_numpy(float)
    is_measured = ~np.isnan(got)
    frame = pd.DataFrame({"deployment": configs["deployment"].astype(str),
                          "seconds": np.where(is_measured, got, seconds),
                          "measured": is_measured})
    per = frame.groupby("deployment", sort=False).agg(
        seconds=("seconds", "sum"), configs=("seconds", "size"), measured=("measured", "sum"))
    first = configs.drop_duplicates("deployment").set_index("deployment")
    per = per.join(first[["hardware", "gpu_count", "engine", "weights_gb"]].astype(
        {"hardware": str, "engine": str}))
    start = a.start_s + per["weights_gb"].to_numpy(float) * GiB / 1e9 / a.load_gb_per_s
    if len(measured) and "target_cold_start_s" in measured:  # what the target reported
        cold = per.index.map(measured.groupby("deployment")["target_cold_start_s"].max())
        start = np.where(np.isnan(cold.to_numpy(float)), start, cold.to_numpy(float))
    per["hours"] = (per["seconds"].to_numpy(float) + start) / 3600
    return per


def makespan_h(hours: np.ndarray, gpus_each: np.ndarray, slots: int) -> float | None:
    """Wall hours to run jobs of HOURS, each on GPUS_EACH of SLOTS GPUs, longest first.

    Each job starts when its GPUs are free (list scheduling); None if one needs more than SLOTS.
    """
    if len(hours) == 0:
        return 0.0
    if slots <= 0 or gpus_each.max() > slots:
        return None
    free = [0.0] * slots  # when each GPU is next free, ascending
    for i in np.argsort(-hours, kind="stable"):
        k = int(gpus_each[i])
        end = free[k - 1] + float(hours[i])
        del free[:k]
        for _ in range(k):
            bisect.insort(free, end)
    return max(free)


def plan(name: str, configs: pd.DataFrame, measured: pd.DataFrame,
         table: Mapping[str, Hardware], fleet: Fleet, a: Assumptions | None = None) -> MatrixPlan:
    """The cost and wall time of measuring CONFIGS on FLEET (MEASURED: summary rows)."""
    a = a or Assumptions()
    per = deployment_hours(configs, measured, table, a)
    remote = per["engine"].isin(REMOTE_ENGINES).to_numpy()
    per["pool"] = np.where(remote, per["engine"], per["hardware"])
    price = {n: (h.on_demand_usd_per_hour, h.spot_usd_per_hour) for n, h in table.items()}
    per["gpu_hours"] = per["hours"] * per["gpu_count"]
    per["usd_on_demand"] = per["gpu_hours"] * per["hardware"].map(lambda h: price[h][0])
    per["usd_spot"] = per["gpu_hours"] * per["hardware"].map(lambda h: price[h][1])
    out = MatrixPlan(name, fleet.name, a)
    for pool, rows in per.groupby("pool", sort=False):
        is_remote = pool in REMOTE_ENGINES
        slots = fleet.quotas.get(pool, 0) if is_remote else fleet.gpus(pool)
        need = np.ones(len(rows)) if is_remote else rows["gpu_count"].to_numpy(float)
        wall = makespan_h(rows["hours"].to_numpy(float), need, slots)
        why = "" if wall is not None else (
            f"the fleet has no {'quota' if is_remote else 'GPUs'} for {pool}" if slots <= 0
            else f"a deployment needs {int(need.max())} GPUs, the fleet has {slots}")
        spot = not is_remote and fleet.capacity(str(pool)) == "spot"
        paid = rows["usd_spot" if spot else "usd_on_demand"].sum()
        out.pools.append(PoolPlan(
            str(pool), int(slots), len(rows), int(rows["configs"].sum()),
            int(rows["measured"].sum()), float(rows["gpu_hours"].sum()),
            float(rows["usd_on_demand"].sum()), float(rows["usd_spot"].sum()), float(paid),
            wall, why))
    return out
