"""The workloads of `servecat perf engine` (bench.workload.Workload objects) and the engine
limits every system runs under.

A: every request at once (closed loop at concurrency = requests): throughput.
B: Poisson arrivals at a given rate (open loop): latency under load, TTFT from the scheduled
   arrival.
c1: one request at a time: the per-token latency of a lone request.
prefix: like A, every prompt starting with the same shared prefix: what prefix caching buys.
Each workload has its own seed, so no workload's prompts are cached by another's; every system
gets the same prompts for the same workload.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.workload import Workload

WORKLOADS = ("A", "B", "c1", "prefix")
_SEED_STEP = {"A": 0, "B": 10, "c1": 20, "prefix": 30}


@dataclass(frozen=True, slots=True)
class PerfSizes:
    """Request counts and length ranges (inclusive, in tokens) of one run."""

    requests: int = 64
    c1_requests: int = 16
    prompt: tuple[int, int] = (32, 512)
    output: tuple[int, int] = (16, 256)
    prefix_tokens: int = 256
    warmup: int = 4  # warm-up requests per workload, at most one round of its concurrency
    seed: int = 0

    @property
    def max_input(self) -> int:
        return self.prefix_tokens + self.prompt[1]


# --quick: small enough for a test on the tiny model.
QUICK = PerfSizes(requests=6, c1_requests=3, prompt=(8, 40), output=(4, 12), prefix_tokens=32,
                  warmup=1)


def perf_workload(name: str, sizes: PerfSizes, rate: float | None = None) -> Workload:
    """Workload NAME (one of WORKLOADS); B needs its arrival RATE in requests/s."""
    lo, hi = sizes.prompt
    base = Workload(
        lengths=f"perf-{name}", input_dist="uniform", input_tokens=(lo + hi) // 2,
        input_min=lo, input_max=hi, output_dist="uniform",
        output_tokens=sum(sizes.output) // 2, output_min=sizes.output[0],
        output_max=sizes.output[1], load="concurrency", concurrency=sizes.requests,
        requests=sizes.requests, warmup_requests=sizes.warmup, seed=sizes.seed + _SEED_STEP[name])
    if name == "A":
        return base
    if name == "B":
        if rate is None:
            raise ValueError("workload B needs an arrival rate")
        return replace(base, load="rate", concurrency=None, rate=rate, arrival="poisson")
    if name == "c1":
        return replace(base, concurrency=1, requests=sizes.c1_requests,
                       warmup_requests=min(sizes.warmup, 1))
    if name == "prefix":
        p = sizes.prefix_tokens  # the prefix comes on top of each prompt's own tokens
        return replace(base, input_tokens=base.input_tokens + p, input_min=lo + p,
                       input_max=hi + p, shared_prefix_tokens=p)
    raise ValueError(f"unknown workload {name!r}: choose from {', '.join(WORKLOADS)}")


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """The limits every system runs under: batch size, step token budget, KV pool, threads."""

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    kv_cache_gib: int = 2  # whole GiB: vLLM's VLLM_CPU_KVCACHE_SPACE takes an integer
    threads: int = 1

    @property
    def cpu_bind(self) -> str:
        """The cores as vLLM's VLLM_CPU_OMP_THREADS_BIND names them."""
        return "0" if self.threads == 1 else f"0-{self.threads - 1}"
