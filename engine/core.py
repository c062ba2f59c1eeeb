"""The engine core: the step loop over one LLMEngine, fed commands, sending one batch per step.

It knows no transport: `receive(timeout)` hands it the commands that came in, `send(batch)`
takes a StepBatch. engine/core_process.py runs it in a child process of its own (what
`servecat serve` does, so HTTP, tokenization and detokenization never share its GIL);
ThreadCore runs it on a thread of the server (tests look inside the engine it serves).

The core does no text: a step's batch carries, per request, the new token id, the finish
reason and logprobs, and the server's front detokenizes, checks stop strings (aborting the
request here when one matches) and streams.

One request can only ever fail itself: an error while admitting it fails that request, an error
in a step fails the requests of that step, and if the loop itself ever stops, a last batch says
so (`dead`) and every waiting request is answered by the front.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import NamedTuple

from engine.llm_engine import LLMEngine, QueueFullError, RequestError
from engine.logprobs import TokenLogprob

log = logging.getLogger("servecat.engine")

# Commands, plain tuples (cheap to pickle): ("add", id, prompt_ids, params), ("abort", id),
# ("stop",).
Command = tuple


class CoreOutput(NamedTuple):
    """One request's news from one step: a new token, or an error that ended it."""

    request_id: str
    token_id: int | None  # None: an error ended the request
    finish_reason: str | None  # stop | length, when the core finished the request
    num_prompt_tokens: int
    logprob: TokenLogprob | None = None
    # On the first token of a request that asked (the prompt's logprobs, then never again).
    prompt_logprobs: list[TokenLogprob | None] | None = None
    queue_time: float | None = None  # on the first token: admitted to first scheduled, seconds
    error: str | None = None
    status: int = 200  # the HTTP status an error maps to


class CoreStats(NamedTuple):
    """The engine's gauges and counters after a step (the front's /metrics shows them)."""

    running: int
    waiting: int
    kv_usage: float
    num_preemptions: int
    prefix_cache_queries: int
    prefix_cache_hits: int


class StepBatch(NamedTuple):
    outputs: list[CoreOutput]
    stats: CoreStats | None = None
    dead: str | None = None  # the loop stopped: why (no batch follows)


class EngineFacts(NamedTuple):
    """What the front needs of a loaded engine, sent once by the core when it is ready."""

    model: str
    max_model_len: int
    vocab_size: int
    max_waiting: int
    device: str
    dtype: str
    quantization: str | None
    num_blocks: int
    block_size: int


def facts_of(engine: LLMEngine) -> EngineFacts:
    c = engine.config
    return EngineFacts(str(c.model), engine.max_model_len, engine.model.spec.vocab_size,
                       c.max_waiting, str(engine.device), engine.dtype_name,
                       engine.quantization, engine.runner.num_blocks, c.block_size)


class EngineCore:
    def __init__(self, engine: LLMEngine, send: Callable[[StepBatch], None]):
        self.engine = engine
        engine.detokenize = False  # the front does text (and stop strings)
        self.send = send
        self.last_stats: CoreStats | None = None

    def run(self, receive: Callable[[float], list[Command]]) -> None:
        """Apply commands and step until a stop command; a loop failure sends `dead`."""
        try:
            while True:
                busy = self.engine.has_work()
                if not self.apply(receive(0.0 if busy else 1.0)):
                    return
                if self.engine.has_work():
                    self.step()
                elif busy:
                    self.send_stats([])  # went idle (all aborted): the gauges say so
        except BaseException as exc:  # a bug in the loop itself: say so, stop clean
            if isinstance(exc, EOFError):  # the front went away: nobody to tell
                return
            log.exception("engine loop stopped")
            self.send(StepBatch([], dead=f"the engine stopped: {type(exc).__name__}: {exc}"))

    def apply(self, commands: list[Command]) -> bool:
        """Admit and abort; False on a stop command."""
        failed: list[CoreOutput] = []
        for cmd in commands:
            if cmd[0] == "stop":
                return False
            if cmd[0] == "abort":
                self.engine.abort(cmd[1])
                continue
            _, request_id, prompt_ids, params = cmd
            try:
                self.engine.add_request(request_id, prompt_ids, params)
                continue
            except RequestError as exc:
                message, status = str(exc), 400
            except QueueFullError as exc:
                message, status = str(exc), 429
            except Exception as exc:  # this request's problem, not the loop's
                log.exception("request %s could not be admitted", request_id)
                self.engine.requests.pop(request_id, None)
                message, status = f"engine error admitting the request: {exc}", 500
            failed.append(CoreOutput(request_id, None, None, len(prompt_ids), error=message,
                                     status=status))
        if failed:
            self.send(StepBatch(failed))
        return True

    def step(self) -> None:
        engine = self.engine
        try:
            outs = engine.step()
        except Exception as exc:  # keep serving: fail what was running, not the core
            log.exception("engine step failed")
            failed = []
            for request_id in list(engine.requests):
                seq = engine.abort(request_id)
                failed.append(CoreOutput(request_id, None, None, seq.num_prompt_tokens if seq
                                         else 0, error=f"engine error: {exc}", status=500))
            self.send_stats(failed)
            return
        outputs = []
        for out in outs:
            seq = out.seq
            first = seq.num_output_tokens == 1
            outputs.append(CoreOutput(
                seq.request_id, out.token_id, seq.finish_reason if out.finished else None,
                seq.num_prompt_tokens, out.logprob,
                seq.prompt_logprobs if first and seq.params.prompt_logprobs is not None
                else None,
                (seq.scheduled_time or seq.arrival_time) - seq.arrival_time if first else None))
        self.send_stats(outputs)

    def send_stats(self, outputs: list[CoreOutput]) -> None:
        """OUTPUTS, with the gauges (read here: an abort changes them without a step)."""
        s, bm = self.engine.scheduler, self.engine.block_manager
        stats = CoreStats(len(s.running), len(s.waiting), bm.usage(), s.num_preemptions,
                          bm.prefix_queries, bm.prefix_hits)
        if outputs or stats != self.last_stats:
            self.last_stats = stats
            self.send(StepBatch(outputs, stats))


class ThreadCore:
    """The core on a thread of this process: over an engine the caller built (and may inspect),
    or over the engine MAKE builds on the core's own thread. Why the second: stepping an engine
    from another thread than the one that built it cost 2x per token on a 2-core EPYC (small,
    fp32, c=1: TPOT p50 11.2 vs 5.5 ms), so `servecat serve --engine-core thread` builds there."""

    def __init__(self, engine: LLMEngine | None = None,
                 make: Callable[[], LLMEngine] | None = None):
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.inbox: list[Command] = []
        self.thread: threading.Thread | None = None
        self._go = threading.Event()  # start() (or stop()) lets a MAKE thread step
        self._on_batch: Callable[[StepBatch], None] | None = None
        if make is not None:
            engine = self._build_on_own_thread(make)
        if engine is None:
            raise ValueError("ThreadCore needs an engine or a way to make one")
        self.engine = engine
        self.facts = facts_of(engine)
        self.tokenizer = engine.tokenizer

    def _build_on_own_thread(self, make: Callable[[], LLMEngine]) -> LLMEngine:
        built: list = []
        ready = threading.Event()

        def run() -> None:
            try:
                built.append(make())
            except BaseException as exc:  # raised again by the constructor, on its thread
                built.append(exc)
                return
            finally:
                ready.set()
            self._go.wait()
            if self._on_batch is not None:  # None: stopped before it started
                EngineCore(built[0], self._on_batch).run(self._receive)

        self.thread = threading.Thread(target=run, name="servecat-engine", daemon=True)
        self.thread.start()
        ready.wait()
        if isinstance(built[0], BaseException):
            self.thread.join()
            raise built[0]
        return built[0]

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, on_batch: Callable[[StepBatch], None]) -> None:
        if self.thread is not None:  # the engine's own thread, waiting for this
            self._on_batch = on_batch
            self._go.set()
            return
        core = EngineCore(self.engine, on_batch)
        self.thread = threading.Thread(target=core.run, args=(self._receive,),
                                       name="servecat-engine", daemon=True)
        self.thread.start()

    def send(self, command: Command) -> None:
        with self.lock:
            self.inbox.append(command)
        self.wake.set()

    def _receive(self, timeout: float) -> list[Command]:
        if timeout and not self.inbox:
            self.wake.wait(timeout)
        self.wake.clear()
        with self.lock:
            commands, self.inbox = self.inbox, []
        return commands

    def stop(self, timeout: float = 10.0) -> None:
        self.send(("stop",))
        self._go.set()  # a MAKE thread never started returns
        if self.thread is not None:
            self.thread.join(timeout)
