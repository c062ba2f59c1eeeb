"""The engine on its own thread, fed by the server's event loop.

Requests are checked on the caller's thread (so a bad or surplus request is refused at once),
queued, and joined to the batch at the next step; tokens go back through per-request asyncio
queues. Aborts (client disconnects) are applied before the next step, which frees the blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass

from engine.llm_engine import LLMEngine, QueueFullError, RequestError
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


class AsyncEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.pending: list[tuple[str, list[int], SamplingParams]] = []
        self.aborts: list[str] = []
        self.queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="servecat-engine", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()
        self.thread.join(timeout=10)

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Refuse now what the engine would refuse (RequestError, QueueFullError)."""
        e = self.engine
        if not prompt_ids:
            raise RequestError("the prompt is empty")
        total = len(prompt_ids) + params.max_tokens
        if len(prompt_ids) >= e.max_model_len or total > e.max_model_len:
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
        loop.call_soon_threadsafe(queue.put_nowait, event)

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
            except (RequestError, QueueFullError) as exc:
                self._emit(request_id, TokenEvent("", len(prompt_ids), 0, True, None, str(exc)))

    def _loop(self) -> None:
        while not self.stopped:
            self._drain()
            if not self.engine.has_work():
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # keep serving: fail what was running, not the server
                log.exception("engine step failed")
                for request_id in list(self.engine.requests):
                    self.engine.abort(request_id)
                    self._emit(request_id, TokenEvent("", 0, 0, True, None, f"engine error: {exc}"))
                continue
            with self.lock:
                for out in outputs:
                    seq = out.seq
                    self._emit(seq.request_id, TokenEvent(
                        out.text, seq.num_prompt_tokens, seq.num_output_tokens, out.finished,
                        seq.finish_reason))
