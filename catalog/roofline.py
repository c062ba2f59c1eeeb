"""A physical estimate of a deployment × length profile × profile that nobody measured: the
roofline of its hardware, its weights and KV cache at its quantization, and its engine args.

Per step, a decode of n sequences reads the weights plus their KV cache from memory and does
2 x parameters FLOPs per sequence: whichever is slower at the stated efficiencies of the
hardware's memory bandwidth and bf16 peak. A prompt of I tokens is prefilled in
ceil(I / max_num_batched_tokens) chunks, each a step that reads the weights and does 2 x
parameters x chunk FLOPs. The memory left beside the weights holds the KV cache: the
concurrency it holds (and max_num_seqs) bounds the batch.

Under a Poisson rate λ of requests with I input and O output tokens (the length profile's
means), the batch is n = λ · O · TPOT (Little's law), the prefills take a share ρ = λ · prefill
of the engine's time, a request's TPOT is the decode step plus the prefill stalls of the
requests that arrive while it decodes (a Poisson count, read at its median for p50 and at its
99th percentile for p99), and its TTFT is its own prefill plus an M/M/1 wait behind the others'.
The capacity under a profile is the highest λ whose p99 TTFT and TPOT meet its SLO
(servecat.slo's rule on estimated p99s) with a batch the engine and the memory hold. A row whose
load is a closed loop (`load: concurrency`, as a concurrency search measures it) is estimated as
one: c clients, a batch of min(c, slots), throughput X = c / (TTFT + O x TPOT), and its capacity
is X at the most clients (up to the search's top) that meet the SLO.

Pure numpy, vectorised over rows: thousands of configs in well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from servecat.engines import KV_BYTES, WEIGHT_BYTES
from servecat.hardware import Hardware
from servecat.profiles import Profile
from servecat.slo import Slo

# Standard normal quantiles used for the Poisson quantiles (Cornish-Fisher, below).
Z50, Z99 = 0.0, 2.326348
# Bisection steps over log λ: 2^-60 of 12 decades, far finer than any measurement.
STEPS = 60
# What an estimate reports per row (the metric columns calibration.py corrects).
METRICS = ("capacity_rps", "output_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
           "tpot_p99_ms")
NEEDED = ("deployment", "model", "parameters", "layers", "kv_heads", "head_dim", "hardware",
          "gpu_count", "quantization", "max_num_seqs", "max_num_batched_tokens", "lengths",
          "input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class Assumptions:
    """The efficiencies the roofline runs at and the memory it may fill: stated beside every
    estimate, since the figures scale with them."""

    bandwidth_efficiency: float = 0.6  # share of memory bandwidth a decode step reaches
    compute_efficiency: float = 0.4    # share of the bf16 peak a prefill chunk reaches
    memory_utilization: float = 0.9    # share of memory the engine may fill (weights + KV)
    # The framework's own time (catalog/physical.py fits both to measurements): per engine
    # step (scheduling, the launch of every layer) and per sequence in a step (sampling,
    # detokenization, streaming). The bare roofline has none.
    step_overhead_ms: float = 0.0
    sequence_overhead_ms: float = 0.0
    # ... and per request beside the engine (HTTP, tokenization, the stream's framing): on the
    # request's path once, and a throughput limit of its own (the front runs apart).
    request_overhead_ms: float = 0.0
    # How a closed loop's clients are served: `mixed` (catalog/mixed_steps.py: the engine's
    # scheduler, every step the running decodes plus what the token budget leaves of prompts;
    # held out on the validation fixture, capacity 9.4% and p50 TPOT 12.7%) or `queue`
    # (at_clients: a closed queue's bounds, prefills and decode steps apart; 10.1% and 16.8%).
    closed_loop: str = "mixed"

    def describe(self) -> str:
        overhead = ("no framework overhead" if not (self.step_overhead_ms
                                                    or self.sequence_overhead_ms
                                                    or self.request_overhead_ms) else
                    f"framework overhead {self.step_overhead_ms:.2g} ms a step + "
                    f"{self.sequence_overhead_ms:.2g} ms a sequence in it + "
                    f"{self.request_overhead_ms:.2g} ms a request")
        return (f"roofline: decode reads weights (at the quantization's bytes) + the batch's KV "
                f"cache at {self.bandwidth_efficiency:.0%} of memory bandwidth, or does 2 x "
                f"params FLOPs per sequence at {self.compute_efficiency:.0%} of bf16 peak, "
                f"whichever is slower; prefill in max_num_batched_tokens chunks, each reading "
                f"the weights or doing 2 x params x tokens FLOPs; KV cache in "
                f"{self.memory_utilization:.0%} of memory minus weights; Poisson arrivals, "
                f"batch by Little's law, TTFT wait M/M/1 (a closed loop of c clients: "
                + ("throughput min(c / cycle, 1 / engine time)" if self.closed_loop == "queue"
                   else "steps that mix the decodes with prompt chunks under the token budget")
                + f"); {overhead}")

    def to_dict(self) -> dict:
        return asdict(self) | {"text": self.describe()}


def poisson_quantile(mean: np.ndarray, z: float) -> np.ndarray:
    """The Poisson quantile at normal quantile Z (Cornish-Fisher; exact enough for a stall
    count, and 0 for a mean of 0)."""
    q = mean + z * np.sqrt(mean) + (z * z - 1.0) / 6.0
    return np.where(mean > 0, np.maximum(np.round(q), 0.0), 0.0)


@dataclass(frozen=True, slots=True)
class Physics:
    """Per row: the quantities every load level shares (seconds, bytes, FLOP/s)."""

    weights: np.ndarray        # bytes
    kv_token: np.ndarray       # bytes of KV cache per token
    bandwidth: np.ndarray      # bytes/s reached
    flops: np.ndarray          # FLOP/s reached
    params: np.ndarray
    inp: np.ndarray
    out: np.ndarray
    chunks: np.ndarray         # prefill steps per prompt
    prefill_s: np.ndarray      # one prompt's prefill
    kv_concurrency: np.ndarray  # sequences the KV memory holds at I + O tokens
    slots: np.ndarray          # the batch the engine runs: min(max_num_seqs, kv_concurrency)
    step_s: np.ndarray | float = 0.0      # framework time per step
    sequence_s: np.ndarray | float = 0.0  # framework time per sequence in a decode step
    request_s: np.ndarray | float = 0.0   # front-end time per request, beside the engine
    budget: np.ndarray | float = np.inf   # tokens a step may hold (max_num_batched_tokens)
    closed_loop: str = "mixed"            # Assumptions.closed_loop

    def decode_s(self, n: np.ndarray) -> np.ndarray:
        """One decode step of N sequences, each halfway through its output."""
        return self.step_time(np.maximum(n, 1.0))

    def step_time(self, n: np.ndarray, k: np.ndarray | float = 0.0) -> np.ndarray:
        """One engine step holding N decoding sequences and K prompt tokens (the engine's
        scheduler mixes them under one token budget): it reads the weights and the decodes' KV
        cache once and does 2 x params FLOPs a token, whichever is slower, plus the framework's
        time per step and per decoding sequence."""
        read = (self.weights + n * (self.inp + self.out / 2.0) * self.kv_token) / self.bandwidth
        return (np.maximum(read, 2.0 * self.params * (n + k) / self.flops)
                + self.step_s + self.sequence_s * n)


@dataclass(frozen=True, slots=True)
class Rows:
    """Per row: what the roofline reads of its config and hardware, the assumptions aside
    (read once, so that a fit's hundreds of evaluations do not parse the frame each time)."""

    mem: np.ndarray            # bytes of GPU memory
    bw: np.ndarray             # bytes/s of the hardware's memory, all GPUs
    peak: np.ndarray           # bf16 FLOP/s at peak, all GPUs
    params: np.ndarray
    weights: np.ndarray        # bytes at the row's quantization
    kv_token: np.ndarray
    inp: np.ndarray
    out: np.ndarray
    chunk: np.ndarray          # prompt tokens per prefill step
    slots_limit: np.ndarray    # min(max_num_seqs, max_concurrency); inf where unbounded
    budget: np.ndarray         # tokens a step may hold (max_num_batched_tokens); inf if unset


def read_rows(rows: pd.DataFrame, hardware: Mapping[str, Hardware]) -> Rows:
    """ROWS (configs: NEEDED columns) as the roofline's arrays."""
    missing = [c for c in NEEDED if c not in rows]
    if missing:
        raise ValueError(f"estimate: configs lack column(s) {', '.join(missing)}")
    unknown = sorted(set(rows["hardware"].astype(str)) - set(hardware))
    if unknown:
        raise ValueError(f"estimate: hardware {', '.join(unknown)} not in the hardware table")
    quant = rows["quantization"].astype(str)
    bad = sorted(set(quant) - set(WEIGHT_BYTES))
    if bad:
        raise ValueError(f"estimate: unknown quantization {', '.join(bad)}")
    hw = rows["hardware"].astype(str)
    gpus = _num(rows, "gpu_count", 1.0)
    mem = hw.map({n: h.memory_gb for n, h in hardware.items()}).to_numpy(float) * 1e9 * gpus
    bw = hw.map({n: h.memory_bandwidth_gbps for n, h in hardware.items()}).to_numpy(float)
    peak = hw.map({n: h.peak_bf16_tflops for n, h in hardware.items()}).to_numpy(float)
    params = _num(rows, "parameters", np.nan)
    weights = params * quant.map(WEIGHT_BYTES).to_numpy(float)
    kv_token = (2.0 * _num(rows, "layers", np.nan) * _num(rows, "kv_heads", np.nan)
                * _num(rows, "head_dim", np.nan) * quant.map(KV_BYTES).to_numpy(float))
    inp = np.maximum(_num(rows, "input_tokens", 1.0), 1.0)
    out = np.maximum(_num(rows, "output_tokens", 1.0), 1.0)
    budget = _num(rows, "max_num_batched_tokens", np.nan)
    chunk = np.where(np.isfinite(budget), np.minimum(budget, inp), inp)
    seqs = _num(rows, "max_num_seqs", np.inf)
    cap = _num(rows, "max_concurrency", np.inf)
    return Rows(mem, bw * 1e9 * gpus, peak * 1e12 * gpus, params, weights, kv_token, inp, out,
                chunk, np.minimum(seqs, cap),  # _num gives inf where either is unset
                np.where(np.isfinite(budget), budget, np.inf))


def physics(rows: pd.DataFrame | Rows, hardware: Mapping[str, Hardware], a: Assumptions
            ) -> Physics:
    """The roofline quantities of ROWS (configs: NEEDED columns, or read_rows of them)."""
    r = rows if isinstance(rows, Rows) else read_rows(rows, hardware)
    bandwidth = r.bw * a.bandwidth_efficiency
    flops = r.peak * a.compute_efficiency
    chunks = np.ceil(r.inp / r.chunk)
    step_s = np.asarray(a.step_overhead_ms, float) / 1e3
    prefill = chunks * (np.maximum(r.weights / bandwidth, 2.0 * r.params * r.chunk / flops)
                        + step_s)
    kv_conc = np.floor(np.maximum(r.mem * a.memory_utilization - r.weights, 0.0)
                       / (r.kv_token * (r.inp + r.out)))
    slots = np.minimum(r.slots_limit, kv_conc)
    return Physics(r.weights, r.kv_token, bandwidth, flops, r.params, r.inp, r.out, chunks,
                   prefill, kv_conc, slots, step_s,
                   np.asarray(a.sequence_overhead_ms, float) / 1e3,
                   np.asarray(a.request_overhead_ms, float) / 1e3, r.budget, a.closed_loop)


@dataclass(frozen=True, slots=True)
class Level:
    """The estimated figures of every row at its own rate (requests/s)."""

    rate: np.ndarray
    batch: np.ndarray
    stable: np.ndarray  # prefill share < 1 and the batch fits the engine's slots
    ttft_p50_s: np.ndarray
    ttft_p99_s: np.ndarray
    tpot_p50_s: np.ndarray
    tpot_p99_s: np.ndarray


def at_rate(ph: Physics, rate: np.ndarray, iterations: int = 40) -> Level:
    """The estimated latencies of every row at RATE: the batch from Little's law by fixed point."""
    rate = np.asarray(rate, float)
    rho = rate * ph.prefill_s
    free = np.clip(1.0 - rho, 1e-9, None)
    batch = np.maximum(rate * ph.out * ph.decode_s(np.ones_like(rate)), 0.0)
    for _ in range(iterations):  # n = λ·O·TPOT(n): a contraction below saturation
        batch = np.minimum(rate * ph.out * ph.decode_s(batch) / free, ph.slots * 4.0 + 4.0)
    step = ph.decode_s(batch)
    # Prompts that arrive while a request decodes stall it for their prefill chunks.
    arrivals = rate * ph.out * step / free
    stall = ph.prefill_s / ph.out
    tpot50 = step + poisson_quantile(arrivals, Z50) * stall
    tpot99 = step + poisson_quantile(arrivals, Z99) * stall
    # Its own prefill (chunks interleaved with the decode steps) plus an M/M/1 wait.
    own = ph.chunks * np.maximum(ph.prefill_s / ph.chunks, step) + step / 2.0
    own = own + ph.request_s
    ttft50, ttft99 = own + _wait(ph.prefill_s, rho, 0.5), own + _wait(ph.prefill_s, rho, 0.99)
    stable = (rho < 1.0) & (batch <= ph.slots) & (rate * ph.request_s < 1.0)
    return Level(rate, batch, stable, ttft50, ttft99, tpot50, tpot99)


def _wait(service_s: np.ndarray, rho: np.ndarray, p: float) -> np.ndarray:
    """The P-quantile of an M/M/1 queue's wait: P(W > t) = ρ e^(-(1-ρ) t / s), 0 below 1 - ρ."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = service_s * np.log(np.maximum(rho, 1e-12) / (1.0 - p)) / np.clip(1.0 - rho, 1e-9, None)
    return np.where(rho > 1.0 - p, t, 0.0)


def capacity(ph: Physics, slo: Slo) -> tuple[np.ndarray, Level]:
    """The highest rate per row whose estimated p99s meet SLO on a batch the engine holds (0
    where even the lightest load misses it), and the level there."""
    n = len(ph.params)
    lo, hi = np.full(n, -6.0), np.log10(np.maximum(1.0 / ph.prefill_s, 1e-6))

    def ok(log_rate: np.ndarray) -> np.ndarray:
        lv = at_rate(ph, 10.0 ** log_rate)
        return (lv.stable & (lv.ttft_p99_s * 1e3 <= slo.ttft_p99_ms)
                & (lv.tpot_p99_s * 1e3 <= slo.tpot_p99_ms))

    held_lo = ok(lo)
    for _ in range(STEPS):
        mid = (lo + hi) / 2.0
        good = ok(mid)
        lo, hi = np.where(good, mid, lo), np.where(good, hi, mid)
    rate = np.where(held_lo, 10.0 ** lo, 0.0)
    return rate, at_rate(ph, np.where(held_lo, rate, 10.0 ** -6))


def at_clients(ph: Physics, clients: np.ndarray) -> Level:
    """The estimated figures of every row under a closed loop of CLIENTS (a client sends its
    next request when its last ends), by the asymptotic bounds of a closed queue: throughput
    X = min(clients / cycle, 1 / demand), the cycle a request's own prefill and O decode steps
    of a batch of min(clients, slots), the demand its engine time (its prefill and its share of
    the steps). Clients beyond what the engine serves wait for their first token. That is
    PH's closed_loop `queue`; `mixed`, the default, is catalog/mixed_steps.py's."""
    if ph.closed_loop == "mixed":
        from catalog import mixed_steps  # it builds on this module's Physics and Level
        return mixed_steps.at_clients(ph, clients)
    if ph.closed_loop != "queue":
        raise ValueError(f"closed loop {ph.closed_loop!r}: choose queue or mixed")
    clients = np.maximum(np.asarray(clients, float), 1.0)
    batch = np.minimum(clients, ph.slots)
    step = ph.decode_s(batch)
    own = ph.chunks * np.maximum(ph.prefill_s / ph.chunks, step) + step / 2.0 + ph.request_s
    cycle = own + ph.out * step
    demand = np.maximum(ph.prefill_s + ph.out * step / batch, ph.request_s)
    rate = np.minimum(clients / cycle, 1.0 / demand)
    rho = np.clip(rate * ph.prefill_s, 0.0, 0.95)
    tpot = step / (1.0 - rho)  # decode steps wait while prompts are prefilled
    ttft = np.maximum(clients / rate - ph.out * tpot, own)
    stall = ph.prefill_s / ph.out
    arrivals = rate * ph.out * tpot
    others = clients - 1.0  # a client's own prompts never stall it: only the others' do

    def count(mean: np.ndarray, z: float) -> np.ndarray:
        return np.minimum(poisson_quantile(mean, z), others)

    ahead = count(rate * ttft, Z99) * ph.prefill_s  # prompts that land first
    return Level(rate, batch, np.ones(len(rate), bool), ttft, ttft + ahead,
                 step + count(arrivals, Z50) * stall, step + count(arrivals, Z99) * stall)


def capacity_closed(ph: Physics, slo: Slo, max_clients: np.ndarray,
                    low: np.ndarray | None = None, precision: np.ndarray | None = None
                    ) -> tuple[np.ndarray, Level]:
    """The throughput at the most clients (up to MAX_CLIENTS, as a closed-loop search) whose
    estimated p99s meet SLO (0 where one client misses it), and the level there. Rows with a
    search's LOW and PRECISION report the level that search would (searched_clients): like for
    like with a measured capacity, which is the last concurrency it saw pass, not the boundary."""
    def ok(c: np.ndarray) -> np.ndarray:
        lv = at_clients(ph, c)
        return (lv.ttft_p99_s * 1e3 <= slo.ttft_p99_ms) & (lv.tpot_p99_s * 1e3 <= slo.tpot_p99_ms)

    n = len(ph.params)
    grid = (np.isfinite(low) & np.isfinite(precision) if low is not None and precision is not None
            else np.zeros(n, bool))
    lo, hi = np.zeros(n), np.log2(np.maximum(max_clients, 1.0))
    held_lo = ok(2.0 ** lo)
    clients = np.ones(n)
    if not grid.all():  # the boundary itself, where no search's grid says where it stops
        top = ok(2.0 ** hi)
        for _ in range(STEPS):
            mid = (lo + hi) / 2.0
            good = ok(2.0 ** mid)
            lo, hi = np.where(good, mid, lo), np.where(good, hi, mid)
        clients = np.where(top, 2.0 ** np.log2(np.maximum(max_clients, 1.0)), 2.0 ** lo)
    if grid.any():
        seen = searched_clients(ok, np.where(grid, low, 1.0), max_clients,
                                np.where(grid, precision, 0.25))
        held_lo = np.where(grid, np.isfinite(seen), held_lo)
        clients = np.where(grid & np.isfinite(seen), seen, clients)
    op = at_clients(ph, clients)
    return np.where(held_lo, op.rate, 0.0), op


def searched_clients(ok, low: np.ndarray, high: np.ndarray, precision: np.ndarray
                     ) -> np.ndarray:
    """Per row, the last concurrency a closed-loop search (bench.search.double_then_bisect as
    bench.capacity_search.Search runs it: doubling from LOW, reaching HIGH, then bisecting by
    whole halves until fail <= pass x (1 + PRECISION) or they are adjacent) sees pass, where OK
    says which concurrencies pass; NaN where LOW fails. Vectorised: every row steps at once."""
    low, high = np.floor(low), np.floor(high)
    good, bad = np.full(len(low), np.nan), np.full(len(low), np.nan)
    x, climbing = low.copy(), np.ones(len(low), bool)
    for _ in range(64):  # the climb: at most log2(high / low) + 2 probes
        climbing &= x <= high
        if not climbing.any():
            break
        passed = ok(x)
        bad = np.where(climbing & ~passed, x, bad)
        good = np.where(climbing & passed, x, good)
        nxt = np.where((good < high) & (high < 2 * x), high, 2 * x)
        climbing &= passed
        x = np.where(climbing, nxt, x)
    for _ in range(64):  # the bisection, where both ends were seen
        open_ = np.isfinite(good) & np.isfinite(bad)
        mid = np.floor((np.nan_to_num(good) + np.nan_to_num(bad)) / 2.0)
        open_ &= ~((bad <= good * (1 + precision)) | (bad - good <= 1))
        open_ &= (good < mid) & (mid < bad)
        if not open_.any():
            break
        passed = ok(np.where(open_, mid, 1.0))
        good = np.where(open_ & passed, mid, good)
        bad = np.where(open_ & ~passed, mid, bad)
    return good


def limiting(ph: Physics, rate: np.ndarray, slo: Slo) -> np.ndarray:
    """What stops each row just above its capacity: the SLO it misses first, or saturation."""
    above = at_rate(ph, np.maximum(rate, 1e-6) * 1.02)
    return np.select(
        [~(above.batch <= ph.slots) & (ph.slots >= ph.kv_concurrency),
         ~(above.batch <= ph.slots), ~(ph.prefill_s * above.rate < 1.0),
         above.tpot_p99_s * 1e3 > slo.tpot_p99_ms, above.ttft_p99_s * 1e3 > slo.ttft_p99_ms],
        ["kv cache memory", "max_num_seqs", "prefill compute", "tpot_p99", "ttft_p99"],
        "none")


def _closed_limit(op: Level, slo: Slo) -> np.ndarray:
    """What stops a closed loop's clients: the SLO its operating point sits on, else none did
    up to the search's most clients."""
    return np.select([op.tpot_p99_s * 1e3 >= 0.98 * slo.tpot_p99_ms,
                      op.ttft_p99_s * 1e3 >= 0.98 * slo.ttft_p99_ms],
                     ["tpot_p99", "ttft_p99"], "most clients searched")


def estimate(rows: pd.DataFrame, hardware: Mapping[str, Hardware], profiles: Sequence[Profile],
             a: Assumptions | None = None) -> pd.DataFrame:
    """One row per ROWS row × profile: the roofline's capacity and operating point, its batch,
    KV concurrency and what limits it, each metric in METRICS (ms, req/s, tokens/s)."""
    a = a or Assumptions()
    rows = rows.reset_index(drop=True)
    ph = physics(rows, hardware, a)
    idle = at_rate(ph, np.full(len(rows), 1e-6))
    closed = (rows["load"].astype(str).to_numpy() == "concurrency" if "load" in rows
              else np.zeros(len(rows), bool))
    # A closed loop's clients: its search's top, else its own concurrency, else the slots.
    max_clients = np.where(np.isfinite(_num(rows, "search_max", np.nan)),
                           _num(rows, "search_max", np.nan), _num(rows, "concurrency", np.nan))
    max_clients = np.where(np.isfinite(max_clients), max_clients,
                           np.where(np.isfinite(ph.slots), ph.slots, 256.0))
    price = rows["hardware"].astype(str).map(
        {n: h.on_demand_usd_per_hour for n, h in hardware.items()}).to_numpy(float)
    gpus = _num(rows, "gpu_count", 1.0)
    keep = [c for c in (*NEEDED, "engine", "hardware_key", "tensor_parallel_size")
            if c in rows]
    frames = []
    for profile in profiles:
        slo = Slo.of(profile)
        rate, op = capacity(ph, slo)
        if closed.any():  # rows measured by a closed loop are estimated as one
            c_rate, c_op = capacity_closed(ph, slo, max_clients, _num(rows, "search_min", np.nan),
                                           _num(rows, "search_precision", np.nan))
            rate = np.where(closed, c_rate, rate)
            op = Level(*(np.where(closed, getattr(c_op, f), getattr(op, f))
                         for f in Level.__slots__))
        tps = rate * ph.out
        with np.errstate(divide="ignore", invalid="ignore"):
            cost = np.where(tps > 0, price * gpus / (tps * 3600.0) * 1e6, np.nan)
        none = rate <= 0
        frame = rows[keep].copy()
        frame["profile"] = profile.name
        frame["capacity_rps"] = rate
        frame["capacity_concurrency"] = np.where(none, 0.0, op.batch)
        frame["capacity_status"] = np.where(none, "none", "estimated")
        frame["capacity_limiting"] = np.where(
            none, "slo at the lightest load",
            np.where(closed, _closed_limit(op, slo), limiting(ph, rate, slo)))
        frame["output_tokens_per_s"] = tps
        frame["output_tokens_per_s_per_gpu"] = tps / gpus
        for name, values in (("ttft_p50_ms", op.ttft_p50_s), ("ttft_p99_ms", op.ttft_p99_s),
                             ("tpot_p50_ms", op.tpot_p50_s), ("tpot_p99_ms", op.tpot_p99_s)):
            frame[name] = np.where(none, np.nan, values * 1e3)
        frame["cost_per_mtok_on_demand"] = cost
        frame["idle_ttft_ms"], frame["idle_tpot_ms"] = idle.ttft_p50_s * 1e3, idle.tpot_p50_s * 1e3
        frame["weights_gb_at_quant"] = ph.weights / 1e9
        frame["kv_concurrency"] = ph.kv_concurrency
        frame["prefill_ms"] = ph.prefill_s * 1e3
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=keep)
    # Per-row assumptions (catalog/physical.py's fits) are described by whoever fitted them.
    out.attrs["assumptions"] = (a.to_dict() if all(np.ndim(v) == 0 for v in asdict(a).values())
                                else {"text": "roofline with per-row fitted physics"})
    return out


def _num(frame: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), default)
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)
    return np.where(np.isnan(values), default, values)
