"""The server's side of the engine core: admission, text, metrics, and per-request queues.

Requests are checked here, on the caller's thread (so a bad or surplus request is refused at
once), then sent to the core (engine/core.py: a child process under `servecat serve`, or a
thread). Each step the core sends one batch of (request, new token, finish reason); here it is
detokenized, stop strings are checked (a match aborts the request in the core), the metrics
are counted from each request's arrival at the HTTP server, and the events go to the event
loop in one call per batch. Aborts (client disconnects) reach the core before its next step.

If the core ever stops (its loop failed, or its process died), every waiting request is
answered, `alive` turns false (the server's /health says 503) and stop() returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from engine.core import CoreOutput, EngineFacts, StepBatch
from engine.detokenize import detokenize, fast_decode, visible
from engine.llm_engine import QueueFullError, RequestError, check_request
from engine.logprobs import TokenLogprob
from engine.metrics import EngineMetrics
from engine.sequence import SamplingParams

log = logging.getLogger("servecat.engine")


@dataclass(slots=True)
class TokenEvent:
    """One step's news for one request (text is the whole visible text so far)."""

    text: str
    num_prompt_tokens: int
    num_output_tokens: int
    finished: bool
    finish_reason: str | None
    error: str | None = None
    status: int = 200  # the HTTP status an error maps to
    logprob: TokenLogprob | None = None  # this step's token, when the request asked
    # The prompt's, on the first token's event of a request that asked (then never changed).
    prompt_logprobs: list[TokenLogprob | None] | None = None


class EngineDead(RuntimeError):
    """The core is not running: no request can be served (the server answers 503)."""


@dataclass(slots=True, eq=False)
class _Request:
    """A request the core is serving, as the front sees it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    params: SamplingParams
    arrival: float  # when the HTTP server got it (monotonic): TTFT and e2e count from here
    output_ids: list[int] = field(default_factory=list)
    text: str = ""  # detokenizer state (engine/detokenize.py)
    prefix_offset: int = 0
    read_offset: int = 0
    first_token_time: float | None = None
    last_token_time: float | None = None
    waiting: bool = True  # counted in AsyncEngine.unstarted


class AsyncEngine:
    """Over a core transport (engine.core.ThreadCore or engine.core_process.ProcessCore)."""

    def __init__(self, core, metrics: EngineMetrics):
        self.core = core
        self.facts: EngineFacts = core.facts
        self.metrics = metrics
        self.decode = fast_decode(core.tokenizer)
        self.requests: dict[str, _Request] = {}
        self.unstarted = 0  # sent to the core, no token yet: at most this many wait there
        self.lock = threading.Lock()  # unstarted changes on the loop's and the core's threads
        self.stopped = False
        self.dead: str | None = None  # why the core stopped, once it has

    @property
    def alive(self) -> bool:
        return self.dead is None and self.core.alive

    def start(self) -> None:
        self.core.start(self.on_batch)

    def stop(self) -> None:
        self.stopped = True
        self.core.stop()
        self._fail_all("the server is shutting down", 503)

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Refuse now what the engine would refuse (RequestError, QueueFullError, EngineDead)."""
        if self.dead is not None or self.stopped:
            raise EngineDead(self.dead or "the server is shutting down")
        f = self.facts
        check_request(prompt_ids, params, f.max_model_len, f.vocab_size)
        total = len(prompt_ids) + params.max_tokens
        if total > f.max_model_len:
            raise RequestError(
                f"This model's maximum context length is {f.max_model_len} tokens. However, you "
                f"requested {total} tokens ({len(prompt_ids)} in the prompt, "
                f"{params.max_tokens} in the completion). Please reduce the length.")
        if self.unstarted >= f.max_waiting:
            raise QueueFullError(f"{self.unstarted} requests are already waiting "
                                 f"(limit {f.max_waiting}); retry later")

    def submit(self, prompt_ids: list[int], params: SamplingParams,
               arrival: float | None = None) -> tuple[str, asyncio.Queue]:
        """Queue a request that reached the server at ARRIVAL (monotonic); returns its id and
        the queue its TokenEvents arrive on."""
        self.check(prompt_ids, params)
        request_id = uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        with self.lock:
            self.unstarted += 1
        self.requests[request_id] = _Request(asyncio.get_running_loop(), queue, params,
                                             arrival if arrival is not None else time.monotonic())
        try:
            self.core.send(("add", request_id, prompt_ids, params))
        except OSError as exc:  # the core's pipe is gone: it died
            self._forget(request_id)
            raise EngineDead(self.dead or f"the engine core is not running: {exc}") from exc
        return request_id, queue

    def abort(self, request_id: str) -> None:
        if self._forget(request_id) is not None:
            self.metrics.count_finish("abort")
            with contextlib.suppress(OSError):
                self.core.send(("abort", request_id))

    def _forget(self, request_id: str) -> _Request | None:
        req = self.requests.pop(request_id, None)
        if req is not None:
            self._started(req)
        return req

    def _started(self, req: _Request) -> None:
        with self.lock:
            if req.waiting:
                req.waiting = False
                self.unstarted -= 1

    # --- the core's batches, on the transport's thread ------------------------------------
    def on_batch(self, batch: StepBatch) -> None:
        if batch.dead is not None:
            self.dead = batch.dead
            self._fail_all(batch.dead, 503)
            return
        if batch.stats is not None:
            self.metrics.set_core(batch.stats)
        now = time.monotonic()
        delivered: dict[asyncio.AbstractEventLoop, list] = {}
        for out in batch.outputs:
            req = self.requests.get(out.request_id)
            if req is None:  # aborted, or stopped by a stop string a step ago
                continue
            event = self._error(out) if out.error else self._token(req, out, now)
            if event.finished:
                self._forget(out.request_id)
            delivered.setdefault(req.loop, []).append((req.queue, event))
        for loop, items in delivered.items():
            # A closed event loop means nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, items)

    def _error(self, out: CoreOutput) -> TokenEvent:
        return TokenEvent("", out.num_prompt_tokens, 0, True, None, out.error, out.status)

    def _token(self, req: _Request, out: CoreOutput, now: float) -> TokenEvent:
        m = self.metrics
        req.output_ids.append(out.token_id)
        if req.first_token_time is None:
            req.first_token_time = now
            self._started(req)
            m.first_token(now - req.arrival, out.queue_time, out.num_prompt_tokens)
        else:
            m.next_token(now - (req.last_token_time or now))
        req.last_token_time = now
        reason = out.finish_reason
        stops = req.params.stop
        if detokenize(self.decode, req, req.output_ids, stops, final=reason is not None):
            if reason is None:  # the core goes on until told: tell it
                with contextlib.suppress(OSError):
                    self.core.send(("abort", out.request_id))
            reason = "stop"
        if reason is not None:
            n = len(req.output_ids)
            m.finished(reason, now - req.arrival,
                       (now - req.first_token_time) / (n - 1) if n > 1 else None)
        return TokenEvent(visible(req.text, stops, reason is not None), out.num_prompt_tokens,
                          len(req.output_ids), reason is not None, reason,
                          logprob=out.logprob, prompt_logprobs=out.prompt_logprobs)

    def _fail_all(self, message: str, status: int) -> None:
        requests, self.requests = self.requests, {}
        for req in requests.values():
            self._started(req)
        delivered: dict[asyncio.AbstractEventLoop, list] = {}
        for req in requests.values():
            delivered.setdefault(req.loop, []).append(
                (req.queue, TokenEvent("", 0, 0, True, None, message, status)))
        for loop, items in delivered.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[asyncio.Queue, TokenEvent]]) -> None:
    for queue, event in items:
        queue.put_nowait(event)
