"""The step loop: schedule, run one forward, append tokens, detokenize, stop, free."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.block_manager import BlockManager
from engine.config import DTYPE_ALIASES, DTYPES, WEIGHT_QUANTIZATIONS, EngineConfig
from engine.detokenize import detokenize, fast_decode, visible
from engine.logprobs import TokenLogprob
from engine.metrics import EngineMetrics
from engine.model import CausalLM
from engine.model_runner import ModelRunner
from engine.scheduler import Scheduler
from engine.sequence import SamplingParams, Sequence, SequenceStatus
from servecat.engines import supported, unsupported_reason


class RequestError(ValueError):
    """A request the engine refuses (too long, bad sampling settings); the server answers 400."""


class QueueFullError(RuntimeError):
    """Too many requests already waiting; the server answers 429."""


@dataclass(slots=True)
class StepOutput:
    seq: Sequence
    token_id: int | None  # None: finished without a new token (abort)
    text: str  # new text that can be shown (held back while it may start a stop string)
    finished: bool
    logprob: TokenLogprob | None = None  # the new token's, when the request asked


def check_request(prompt_ids: list[int], params: SamplingParams, max_model_len: int,
                  vocab_size: int) -> None:
    """Raise RequestError for what no step could serve: too long, bad ids or settings."""
    if not prompt_ids:
        raise RequestError("the prompt is empty")
    if len(prompt_ids) >= max_model_len:
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, "
            f"your prompt has {len(prompt_ids)} tokens; it must be shorter to leave room "
            f"for at least one generated token.")
    if any(not 0 <= t < vocab_size for t in prompt_ids):
        raise RequestError(f"prompt token ids must be in [0, {vocab_size})")
    problem = params.problem()
    if problem:
        raise RequestError(problem)


def resolve(config: EngineConfig) -> tuple[torch.device, str, str | None]:
    """Device, activation dtype word and weight quantization; refuses what the table refuses."""
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if config.device == "auto" else config.device))
    platform = "cpu" if device.type == "cpu" else "cuda"
    quant = config.quantization if config.quantization not in (None, "", "none") else None
    dtype = config.dtype
    if quant in DTYPES:  # a matrix word like bf16 passed as quantization
        dtype, quant = quant, None
    dtype = DTYPE_ALIASES.get(dtype, dtype) if dtype != "auto" else (
        "fp32" if platform == "cpu" else "bf16")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {config.dtype!r} is not one of auto, {', '.join(DTYPES)}")
    if quant is not None and quant not in WEIGHT_QUANTIZATIONS:
        raise ValueError(f"quantization {quant!r} is not one of {', '.join(WEIGHT_QUANTIZATIONS)}")
    hardware = "cpu" if platform == "cpu" else "gpu"
    for word in (dtype, quant):
        if word is not None and not supported("builtin", hardware, word):
            raise ValueError(unsupported_reason("builtin", hardware, word))
    return device, dtype, quant


class LLMEngine:
    def __init__(self, config: EngineConfig):
        from transformers import AutoTokenizer

        self.config = config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device, self.dtype_name, self.quantization = resolve(config)
        dtype = getattr(torch, DTYPES[self.dtype_name])
        model_dir = Path(config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = CausalLM(model_dir, dtype, self.device, self.quantization)
        spec = self.model.spec
        self.runner = ModelRunner(self.model, config.block_size, config.kv_cache_memory,
                                  config.kv_cache_fraction)
        pool_tokens = self.runner.num_blocks * config.block_size
        limits = [spec.max_position_embeddings, pool_tokens]
        if config.max_model_len:
            limits.append(config.max_model_len)
        if spec.context_cap:
            limits.append(spec.context_cap)
        self.max_model_len = min(limits)
        self.block_manager = BlockManager(self.runner.num_blocks, config.block_size,
                                          config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs,
                                   config.max_num_batched_tokens)
        self.eos_token_ids = set(spec.eos_token_ids)
        self.metrics = EngineMetrics(str(config.model))
        self.requests: dict[str, Sequence] = {}
        self._decode = fast_decode(self.tokenizer)
        # Off when an engine core serves it: the server's front detokenizes (engine/core.py).
        self.detokenize = True

    # --- requests -------------------------------------------------------------------------
    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise RequestError for what no step could serve: too long, bad ids or settings.

        The one check of a request's own fault; the async front calls it on the caller's
        thread so a bad request is refused there and never reaches the step loop.
        """
        check_request(prompt_ids, params, self.max_model_len, self.model.spec.vocab_size)

    def add_request(self, request_id: str, prompt_ids: list[int],
                    params: SamplingParams) -> Sequence:
        """Queue a request; it joins the batch at the next step."""
        self.validate(prompt_ids, params)
        if request_id in self.requests:
            raise RequestError(f"request id {request_id!r} is already in use")
        if len(self.scheduler.waiting) >= self.config.max_waiting:
            raise QueueFullError(f"{len(self.scheduler.waiting)} requests are already waiting "
                                 f"(limit {self.config.max_waiting}); retry later")
        seq = Sequence(list(prompt_ids), params, request_id=request_id)
        self.requests[request_id] = seq
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: str) -> Sequence | None:
        """Cancel a request now: it leaves the batch and its blocks return to the pool."""
        seq = self.requests.pop(request_id, None)
        if seq is not None and not seq.is_finished:
            self.scheduler.finish(seq, "abort")
            self._record_finish(seq)
        return seq

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # --- the step -------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        """Schedule, run one forward over all scheduled tokens, and process new tokens."""
        batch = self.scheduler.schedule()
        if not batch:
            self._update_gauges()
            return []
        result = self.runner.run(batch)
        now = time.monotonic()
        for seq, n in batch:
            seq.num_cached_tokens += n
            self.block_manager.register_full_blocks(seq)
        for seq, lp in result.prompt_logprobs:
            seq.prompt_logprobs.append(lp)
        logprobs = result.logprobs or [None] * len(result.sampled)
        outputs = [self._append(seq, tok, lp, now) for seq, tok, lp
                   in zip(result.sampled, result.tokens, logprobs, strict=True)]
        self._update_gauges()
        return outputs

    def _append(self, seq: Sequence, token: int, logprob: TokenLogprob | None,
                now: float) -> StepOutput:
        seq.token_ids.append(token)
        if logprob is not None:
            seq.logprobs.append(logprob)
        m = self.metrics
        if seq.first_token_time is None:
            seq.first_token_time = now
            m.observe("time_to_first_token_seconds", now - seq.arrival_time)
            m.observe("request_queue_time_seconds", (seq.scheduled_time or now) - seq.arrival_time)
            m.add("prompt_tokens", seq.num_prompt_tokens)
        else:
            m.observe("inter_token_latency_seconds", now - (seq.last_token_time or now))
        seq.last_token_time = now
        m.add("generation_tokens")
        p = seq.params
        reason = None
        if not p.ignore_eos and token in self.eos_token_ids or token in p.stop_token_ids:
            reason = "stop"
        elif seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
            reason = "length"
        if self.detokenize and self._detokenize(seq, final=reason is not None):
            reason = "stop"  # a stop string (special tokens such as EOS decode to nothing)
        if reason is not None:
            self.scheduler.finish(seq, reason)
            self.requests.pop(seq.request_id, None)
            self._record_finish(seq)
        return StepOutput(seq, token, self.visible_text(seq), reason is not None, logprob)

    def _detokenize(self, seq: Sequence, final: bool = False) -> bool:
        """Extend seq.text with the new token; True if a stop string ended the output.

        FINAL (the request's last token): flush text held back for an incomplete UTF-8
        sequence, so a request that ends on one still returns all of its text.
        """
        return detokenize(self._decode, seq, seq.output_ids, seq.params.stop, final)

    def visible_text(self, seq: Sequence) -> str:
        """Output text safe to show: while running, hold back what could begin a stop string."""
        return visible(seq.text, seq.params.stop, seq.is_finished)

    def _record_finish(self, seq: Sequence) -> None:
        m = self.metrics
        with m.lock:
            m.success[seq.finish_reason or "abort"] = m.success.get(seq.finish_reason, 0) + 1
        if seq.finish_reason != "abort":
            now = time.monotonic()
            m.observe("e2e_request_latency_seconds", now - seq.arrival_time)
            if seq.num_output_tokens > 1 and seq.first_token_time is not None:
                m.observe("time_per_output_token_seconds",
                          (now - seq.first_token_time) / (seq.num_output_tokens - 1))

    def _update_gauges(self) -> None:
        m, bm, s = self.metrics, self.block_manager, self.scheduler
        with m.lock:
            m.running, m.waiting, m.kv_usage = len(s.running), len(s.waiting), bm.usage()
            m.counters["num_preemptions"] = s.num_preemptions
            m.counters["prefix_cache_queries"] = bm.prefix_queries
            m.counters["prefix_cache_hits"] = bm.prefix_hits

    # --- offline use ----------------------------------------------------------------------
    def generate(self, prompts: list[list[int]],
                 params: SamplingParams | list[SamplingParams]) -> list[Sequence]:
        """Run PROMPTS to completion together (tests and benchmarks)."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        base = f"gen-{time.monotonic_ns()}-"
        seqs = [self.add_request(base + str(i), p, sp)
                for i, (p, sp) in enumerate(zip(prompts, plist, strict=True))]
        while self.has_work():
            self.step()
        return seqs


__all__ = ["EngineConfig", "LLMEngine", "QueueFullError", "RequestError", "SamplingParams",
           "SequenceStatus", "StepOutput"]
