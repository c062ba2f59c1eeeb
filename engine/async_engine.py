"""The engine on its own thread, fed by the server's event loop.

Requests are checked on the caller's thread (so a bad or surplus request is refused at once),
queued, and joined to the batch at the next step; tokens go back through per-request asyncio
queues. Aborts (client disconnects) are applied before the next step, which frees the blocks.

One request can only ever fail itself: an error while admitting it fails that request, an error
in a step fails the requests of that step, and if the loop itself ever stops, every waiting
request is answered, `alive` turns false (the server's /health says 503) and stop() returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass

from engine.llm_engine import LLMEngine, QueueFullError, RequestError
from engine.logprobs import TokenLogprob
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
    """The step loop is not running: no request can be served (the server answers 503)."""


class AsyncEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.pending: list[tuple[str, list[int], SamplingParams]] = []
        self.aborts: list[str] = []
        self.queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self.stopped = False
        self.dead: str | None = None  # why the loop stopped, once it has
        self.thread = threading.Thread(target=self._loop, name="servecat-engine", daemon=True)

    @property
    def alive(self) -> bool:
        return self.dead is None and self.thread.is_alive()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()
        self.thread.join(timeout=10)
        self._fail_all("the server is shutting down", 503)

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Refuse now what the engine would refuse (RequestError, QueueFullError, EngineDead)."""
        if self.dead is not None or self.stopped:
            raise EngineDead(self.dead or "the server is shutting down")
        e = self.engine
        e.validate(prompt_ids, params)
        total = len(prompt_ids) + params.max_tokens
        if total > e.max_model_len:
            raise RequestError(
                f"This model's maximum context length is {e.max_model_len} tokens. However, you "
                f"requested {total} tokens ({len(prompt_ids)} in the prompt, "
                f"{params.max_tokens} in the completion). Please reduce the length.")
        waiting = len(e.scheduler.waiting) + len(self.pending)
        if waiting >= e.config.max_waiting:
            raise QueueFullError(f"{waiting} requests are already waiting "
                                 f"(limit {e.config.max_waiting}); retry later")

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> tuple[str, asyncio.Queue]:
        """Queue a request; returns its id and the queue its TokenEvents arrive on."""
        self.check(prompt_ids, params)
        request_id = uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        with self.lock:
            self.queues[request_id] = (asyncio.get_running_loop(), queue)
            self.pending.append((request_id, prompt_ids, params))
        self.wake.set()
        return request_id, queue

    def abort(self, request_id: str) -> None:
        with self.lock:
            if self.queues.pop(request_id, None) is not None:
                self.aborts.append(request_id)
        self.wake.set()

    def _emit(self, request_id: str, event: TokenEvent) -> None:
        target = self.queues.get(request_id)
        if target is None:
            return
        if event.finished:
            self.queues.pop(request_id, None)
        loop, queue = target
        # A closed event loop means nobody is listening for this request any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, event)

    def _fail(self, request_id: str, message: str, status: int, prompt_len: int = 0) -> None:
        self._emit(request_id, TokenEvent("", prompt_len, 0, True, None, message, status))

    def _fail_all(self, message: str, status: int) -> None:
        with self.lock:
            ids = list(self.queues)
            self.pending.clear()
        for request_id in ids:
            self._fail(request_id, message, status)

    def _drain(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
            aborts, self.aborts = self.aborts, []
        for request_id in aborts:
            self.engine.abort(request_id)
        for request_id, prompt_ids, params in pending:
            if request_id in aborts:
                continue
            try:
                self.engine.add_request(request_id, prompt_ids, params)
            except RequestError as exc:
                self._fail(request_id, str(exc), 400, len(prompt_ids))
            except QueueFullError as exc:
                self._fail(request_id, str(exc), 429, len(prompt_ids))
            except Exception as exc:  # this request's problem, not the loop's
                log.exception("request %s could not be admitted", request_id)
                self.engine.requests.pop(request_id, None)
                self._fail(request_id, f"engine error admitting the request: {exc}", 500)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:  # keep serving: fail what was running, not the server
            log.exception("engine step failed")
            for request_id in list(self.engine.requests):
                self.engine.abort(request_id)
                self._fail(request_id, f"engine error: {exc}", 500)
            return
        with self.lock:
            for out in outputs:
                seq = out.seq
                first = seq.num_output_tokens == 1 and seq.params.prompt_logprobs is not None
                self._emit(seq.request_id, TokenEvent(
                    out.text, seq.num_prompt_tokens, seq.num_output_tokens, out.finished,
                    seq.finish_reason, logprob=out.logprob,
                    prompt_logprobs=seq.prompt_logprobs if first else None))

    def _loop(self) -> None:
        try:
            while not self.stopped:
                self._drain()
                if not self.engine.has_work():
                    self.wake.wait(timeout=1.0)
                    self.wake.clear()
                    continue
                self._step()
        except BaseException as exc:  # a bug in the loop itself: say so everywhere, stop clean
            log.exception("engine loop stopped")
            self.dead = f"the engine stopped: {type(exc).__name__}: {exc}"
            self._fail_all(self.dead, 503)
