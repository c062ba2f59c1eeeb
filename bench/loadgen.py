"""The load generator: runs one workload against an endpoint and measures every request.

Closed loop (`load=concurrency`): N workers, each sends its next request as soon as its last
one ends; a request is scheduled the moment a worker is free. Open loop (`load=rate`): a
dispatcher releases requests at their scheduled times; with `max_concurrency` they wait for a
free slot, and that wait is client delay, counted in TTFT and E2E (no coordinated omission).
Warm-up requests run first as a closed loop (at the workload's concurrency, else its
max_concurrency, else 16) on the same connections, and are not measured. Connections are
opened as requests need them and kept alive, so the pool grows to the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench import priority
from bench.arrivals import arrival_offsets
from bench.client import send
from bench.dataset import Prompt, conversation_prompts, synthetic_prompts
from bench.endpoint import Endpoint
from bench.errors import EndpointBroken
from bench.http import Pool, Target
from bench.metrics import summarize
from bench.profiles import Profile, as_profile, load_profiles
from bench.schema import REQUEST_SCHEMA, RequestRecord, summary_schema
from bench.tokens import Tokenizer
from bench.workload import Workload

# Early stop: more than ERROR_THRESHOLD of the first ERROR_WINDOW completed requests failed
# (of all of a phase's requests when it has fewer).
ERROR_WINDOW = 20
ERROR_THRESHOLD = 0.5
# Wake this long before a scheduled send and yield until it is due: asyncio timers fire up
# to a millisecond late, which would show as dispatch lag.
_SPIN_S = 0.0015


@dataclass
class WorkloadResult:
    """A workload's per-request table (REQUEST_SCHEMA) and its one-row summary."""

    requests: pa.Table
    summary: dict[str, object]

    def write_requests(self, path: str | Path) -> None:
        """Write the per-request table as Parquet (temp file + rename)."""
        _write_parquet(self.requests, Path(path))

    def write_summary(self, path: str | Path) -> None:
        """Write the summary as a one-row Parquet file with its schema."""
        names = [k.split("__", 1)[1] for k in self.summary if k.startswith("slo_attainment__")]
        table = pa.Table.from_pylist([self.summary], schema=summary_schema(names))
        _write_parquet(table, Path(path))


def run_workload(endpoint: Endpoint, workload: Workload, tokenizer: str | Path | Tokenizer,
                 profiles: list | None = None, progress: bool = False,
                 dataset: str | Path | None = None, error_window: int = ERROR_WINDOW,
                 error_threshold: float = ERROR_THRESHOLD, realtime: bool = False) -> WorkloadResult:
    """Run one workload to completion and return its measurements.

    Raises EndpointBroken (with `.result`, the requests finished so far) when more than
    `error_threshold` of the first `error_window` requests of the warm-up or of the measured
    phase fail (of all of them, in a phase with fewer).
    `realtime` runs the client at real-time priority where allowed (see bench.priority).
    """
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer(tokenizer)
    profs = [as_profile(p) for p in profiles] if profiles is not None else load_profiles()
    n = workload.warmup_requests + workload.requests
    prompts = (conversation_prompts(dataset, workload, tok, n) if dataset
               else synthetic_prompts(workload, tok, n))
    run = _Run(endpoint, workload, prompts, error_window, error_threshold, progress)
    with priority.realtime(realtime), no_gc_pauses():
        records = run_async(run.main())
    return _result(run, records, tok, profs)


def run_async(coro):
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _result(run: _Run, records: list[RequestRecord], tok: Tokenizer,
            profiles: list[Profile]) -> WorkloadResult:
    ok = [r for r in records if r.ok]
    for r, k in zip(ok, tok.count([r.text for r in ok]), strict=True):
        r.output_tokens_tokenizer = k
    records.sort(key=lambda r: r.request_index)
    table = pa.Table.from_pylist([r.row(run.t0) for r in records], schema=REQUEST_SCHEMA)
    summary = summarize(table, profiles, run.workload.target_rate, run.max_in_flight,
                        stop_reason=run.broken)
    result = WorkloadResult(table, summary)
    if run.broken:
        raise EndpointBroken(run.broken, result)
    return result


class _Run:
    """One workload's asyncio run: warm-up phase, then the measured phase."""

    def __init__(self, endpoint: Endpoint, workload: Workload, prompts: list[Prompt],
                 error_window: int, error_threshold: float, progress: bool):
        self.endpoint, self.workload = endpoint, workload
        self.url = endpoint.url(workload.api)
        self.headers = endpoint.request_headers()
        self.prompts = prompts
        self.target = Target.parse(self.url)
        self.bodies: dict[str, bytes] = {}  # request_id -> whole HTTP request, built before the run
        self.error_window, self.error_threshold = error_window, error_threshold
        self.progress = progress
        self.t0 = 0.0
        self.in_flight = self.max_in_flight = 0
        self.broken: str | None = None
        self._checked = self._failed = self._window = 0
        self._phase = "warm-up "  # named in the early-stop reason
        self._tasks: set[asyncio.Task] = set()
        self._bar: Callable[[], None] | None = None

    def _body(self, p: Prompt) -> bytes:
        body: dict[str, object] = {"model": self.endpoint.model, "max_tokens": p.max_tokens,
                                   "stream": True, "stream_options": {"include_usage": True}}
        if p.messages is not None:
            body["messages"] = list(p.messages)
        else:
            body["prompt"] = p.text
        body.update(self.endpoint.extra_body)
        return json.dumps(body).encode()

    def _request(self, p: Prompt, request_id: str) -> bytes:
        body = self._body(p)
        headers = self.headers | {"X-Request-Id": request_id}
        return self.target.request_head(self.target.path, headers, len(body)) + body

    async def main(self) -> list[RequestRecord]:
        w, e = self.workload, self.endpoint
        slots = w.concurrency if w.load == "concurrency" else w.max_concurrency
        self.pool = Pool(self.url, e.connect_timeout_s, e.read_timeout_s)
        try:
            warm = self._records(0, w.warmup_requests, "warmup-")
            self._window = min(self.error_window, len(warm))
            if warm:
                await self._closed_loop(warm, min(len(warm), slots or 16), None)
            if self.broken:
                return []
            measured = self._records(w.warmup_requests, w.requests, "")
            self._phase = ""
            self._start_bar(len(measured))
            self._checked = self._failed = 0
            self._window = min(self.error_window, len(measured))
            self.t0 = time.perf_counter()
            if w.load == "concurrency":
                done = await self._closed_loop(measured, w.concurrency, w.duration_s)
            else:
                done = await self._open_loop(measured)
            self._close_bar()
            return done
        finally:
            self.pool.close()

    def _records(self, start: int, n: int, prefix: str) -> list[RequestRecord]:
        out = []
        for i in range(n):
            p = self.prompts[start + i]
            out.append(RequestRecord(i, f"{prefix}{i}", p.input_tokens, p.max_tokens))
            self.bodies[out[-1].request_id] = self._request(p, out[-1].request_id)
        return out

    async def _one(self, rec: RequestRecord, slot: asyncio.Semaphore | None) -> None:
        if slot is not None:
            await slot.acquire()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await send(self.pool, self.bodies[rec.request_id], rec, self.endpoint.total_timeout_s)
        finally:
            self.in_flight -= 1
            if slot is not None:
                slot.release()
        self._completed(rec)

    def _completed(self, rec: RequestRecord) -> None:
        if self._bar:
            self._bar()
        if self._checked >= self._window or self.broken:
            return
        self._checked += 1
        self._failed += not rec.ok
        limit = self.error_threshold * self._window
        if self._failed > limit:
            self.broken = (f"endpoint {self.url} looks broken: {self._failed} of the first "
                           f"{self._checked} {self._phase}requests failed (last: "
                           f"{rec.error_type}: {rec.error_message})")
            for task in self._tasks:
                task.cancel()

    async def _closed_loop(self, records: list[RequestRecord], concurrency: int,
                           duration_s: float | None) -> list[RequestRecord]:
        """`concurrency` workers; each request is scheduled when a worker becomes free."""
        it = iter(records)
        done: list[RequestRecord] = []
        deadline = None if duration_s is None else time.perf_counter() + duration_s

        async def worker() -> None:
            for rec in it:
                now = time.perf_counter()
                if self.broken or (deadline is not None and now >= deadline):
                    return
                rec.scheduled = rec.dispatched = now
                await self._one(rec, None)
                done.append(rec)

        await self._gather([worker() for _ in range(concurrency)])
        return done

    async def _open_loop(self, records: list[RequestRecord]) -> list[RequestRecord]:
        """Release each request at its scheduled time; a max_concurrency cap queues the rest."""
        w = self.workload
        offsets = arrival_offsets(w.arrival, w.rate, len(records), w.burstiness, w.seed)
        slot = asyncio.Semaphore(w.max_concurrency) if w.max_concurrency else None
        done: list[RequestRecord] = []
        coros = []

        async def tracked(rec: RequestRecord) -> None:
            await self._one(rec, slot)
            done.append(rec)

        for rec, offset in zip(records, offsets, strict=True):
            if self.broken or (w.duration_s is not None and offset >= w.duration_s):
                break
            rec.scheduled = self.t0 + float(offset)
            await _sleep_until(rec.scheduled)
            rec.dispatched = time.perf_counter()
            task = asyncio.ensure_future(tracked(rec))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            coros.append(task)
        await asyncio.gather(*coros, return_exceptions=True)
        return done

    async def _gather(self, coros: list) -> None:
        tasks = [asyncio.ensure_future(c) for c in coros]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)

    def _start_bar(self, total: int) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        self._tqdm = tqdm(total=total, unit="req", mininterval=0.5, leave=False)
        self._bar = lambda: self._tqdm.update(1)

    def _close_bar(self) -> None:
        if self._bar:
            self._tqdm.close()
            self._bar = None


async def _sleep_until(t: float) -> None:
    """Sleep until perf_counter() >= t: an asyncio timer for most of the wait, then short OS
    sleeps between turns of the loop (a pure busy-wait would burn the CPU, and at real-time
    priority the kernel then throttles the whole process for tens of milliseconds)."""
    remaining = t - time.perf_counter()
    if remaining > _SPIN_S:
        await asyncio.sleep(remaining - _SPIN_S)
    while (remaining := t - time.perf_counter()) > 0:
        if remaining > 0.0002:
            time.sleep(0.0001)  # I/O waits at most this long; its bytes are stamped by now
        await asyncio.sleep(0)


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """No cyclic GC during the run: a full collection stalls the loop for milliseconds, and
    that stall would be measured as server latency. Objects made before are frozen first."""
    was = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was:
            gc.enable()


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
