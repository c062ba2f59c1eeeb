"""One `servecat perf engine` run for one dtype: the servers, then the in-process rows.

Order: the served builtin engine first (its workload A sets B's rate: 0.9 x the requests/s it
served, unless --rate), then builtin without prefix caching (prefix workload only), then vLLM;
then the in-process builtin core (the ceiling) and the HF baselines, after every server has
stopped, so no row shares the cores with another system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from bench.errors import EndpointBroken
from bench.perf_rows import PerfRow
from bench.perf_workloads import EngineLimits, PerfSizes, perf_workload
from bench.tokens import Tokenizer
from bench.workload import Workload
from cli.commands import perf_engine_served as served
from cli.commands.perf_engine_ceiling import (
    ceiling_engine,
    ceiling_row,
    offsets_of,
    workload_requests,
)
from cli.commands.perf_engine_hf import hf_rows
from targets.target import TargetError

B_LOAD = 0.9  # B's rate as a share of the served builtin engine's capacity on A


@dataclass
class Options:
    """What the command line chose, beyond sizes and limits."""

    workloads: tuple[str, ...]
    skip: frozenset[str]
    rate: float | None
    hf_sequential: int
    log_dir: Path


@dataclass
class DtypeRun:
    """The rows of one dtype, the workloads as run, and the systems that could not run."""

    model_dir: Path
    dtype: str
    sizes: PerfSizes
    limits: EngineLimits
    opts: Options
    tok: Tokenizer
    show: Callable[[PerfRow], None]
    say: Callable[[str], None]
    rows: list[PerfRow] = field(default_factory=list)
    workloads: dict[str, dict] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    rate: float | None = None

    def run(self) -> DtypeRun:
        self.rate = self.opts.rate
        for server in self.servers():
            self.serve(server)
        if "ceiling" not in self.opts.skip:
            self.ceiling()
        if {"hf-sequential", "hf-static", "hf-cb"} - self.opts.skip:
            self.hf()
        return self

    def add(self, row: PerfRow) -> PerfRow:
        self.rows.append(row)
        self.show(row)
        return row

    def workload(self, name: str) -> Workload | None:
        """Workload NAME as this dtype runs it; None for B while its rate is unknown."""
        if name == "B" and self.rate is None:
            return None
        w = perf_workload(name, self.sizes, self.rate)
        self.workloads[name] = asdict(w)
        return w

    def servers(self) -> list[served.Server]:
        """The systems to serve, the reference (served builtin) first."""
        args = (self.model_dir, self.dtype, self.limits, self.sizes)
        builtin, vllm = partial(served.builtin_server, *args), partial(served.vllm_server, *args)
        names = self.opts.workloads
        out = [served.Server(served.SERVED, "builtin", "builtin", names, builtin, True)]
        if "no-prefix-caching" not in self.opts.skip and "prefix" in names:
            no_cache = partial(builtin, prefix_caching=False)
            out.append(served.Server(served.SERVED_NO_CACHE, "builtin-no-prefix-caching",
                                     "builtin", ("prefix",), no_cache))
        if "vllm" not in self.opts.skip:
            out.append(served.Server(served.VLLM, "vllm", "vllm", names, vllm))
        return out

    def serve(self, server: served.Server) -> None:
        """Start SERVER, run its workloads, stop it; a peer that fails is noted, not fatal."""
        log = self.opts.log_dir / f"{server.key}-{self.dtype}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)  # targets append; one run per log
        try:
            with server.make(log) as target:
                for name in server.workloads:
                    w = self.workload(name)
                    if w is None:
                        self.say(f"  {name} skipped: no rate (run A first or give --rate)")
                        continue
                    row = self.add(served.measure(target, server, name, w, self.tok, self.dtype))
                    if server.reference and name == "A" and self.rate is None and row.seconds:
                        self.rate = round(B_LOAD * row.requests / row.seconds, 3)
        except (TargetError, EndpointBroken) as exc:
            if server.reference:
                raise
            why = str(exc).strip().splitlines()[0]
            self.skipped.append({"system": server.system, "dtype": self.dtype, "why": why,
                                 "log": str(log)})
            self.say(f"  {server.system} skipped: {why} (log {log})")

    def ceiling(self) -> None:
        import gc

        engine = ceiling_engine(self.model_dir, self.dtype, self.limits)
        for name in self.opts.workloads:
            w = self.workload(name)
            if w is not None:
                self.add(ceiling_row(engine, name, w, self.tok, self.dtype))
        del engine
        gc.collect()

    def hf(self) -> None:
        from transformers import AutoTokenizer

        hf_tok = AutoTokenizer.from_pretrained(self.model_dir)
        reqs, b_offsets, b_rate = {}, None, None
        for name in ("A", "B", "c1"):
            w = self.workload(name) if name in self.opts.workloads else None
            if w is not None:
                reqs[name] = workload_requests(w, self.tok, lambda t: hf_tok(t).input_ids)[1]
                if name == "B":
                    b_offsets, b_rate = offsets_of(w, len(reqs[name])), w.rate
        hf_rows(self.model_dir, self.dtype, reqs, b_offsets, b_rate, set(self.opts.skip),
                self.opts.hf_sequential, self.limits.max_num_batched_tokens, self.add, self.say)
