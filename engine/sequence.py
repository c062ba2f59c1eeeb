"""One request's state: token ids, computed-token count, block table, sampling settings."""

from __future__ import annotations

import enum
import itertools
import math
import time
from dataclasses import dataclass, field

import torch

from engine.logprobs import MAX_LOGPROBS, TokenLogprob

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts
TOKEN_ID_MAX = 2**31
SAMPLING_EPS = 1e-5


@dataclass(slots=True)
class SamplingParams:
    """How to pick tokens and when to stop; temperature 0 means greedy."""

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    # Top alternatives to report per generated token (0: the chosen token's logprob only);
    # None: no logprobs, and the step computes none.
    logprobs: int | None = None
    # The same for every prompt token (completions `echo`); None: the prompt is not scored.
    prompt_logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        # Below vLLM's epsilon a temperature divides logits into inf: it means greedy.
        return self.temperature < SAMPLING_EPS or self.top_k == 1

    def problem(self) -> str | None:
        """What makes these settings unservable, or None (checked before a request is queued)."""
        if not SEED_MIN <= (self.seed if self.seed is not None else 0) <= SEED_MAX:
            return f"seed must be in [{SEED_MIN}, {SEED_MAX}]"  # torch.Generator's range
        if not (self.temperature >= 0.0 and math.isfinite(self.temperature)):
            return "temperature must be a finite number >= 0"
        if not 0.0 < self.top_p <= 1.0:
            return "top_p must be in (0, 1]"
        if self.top_k < 0:
            return "top_k must be >= 0 (0: off)"
        if self.max_tokens < 1:
            return "max_tokens must be at least 1"
        if any(not 0 <= t < TOKEN_ID_MAX for t in self.stop_token_ids):
            return f"stop_token_ids must be in [0, {TOKEN_ID_MAX})"
        for name in ("logprobs", "prompt_logprobs"):
            n = getattr(self, name)
            if n is not None and not 0 <= n <= MAX_LOGPROBS:
                return f"{name} must be in [0, {MAX_LOGPROBS}]"
        return None


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


_ids = itertools.count()


@dataclass(slots=True, eq=False)
class Sequence:
    """A request inside the engine; `num_cached_tokens` tokens have their KV in the pool."""

    token_ids: list[int]
    params: SamplingParams
    request_id: str = ""
    seq_id: int = field(default_factory=lambda: next(_ids))
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_hashed_blocks: int = 0  # leading full blocks already registered for prefix reuse
    num_prefix_hit_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None  # stop | length | abort
    generator: torch.Generator | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    scheduled_time: float | None = None  # first time the scheduler gave it a step
    first_token_time: float | None = None
    last_token_time: float | None = None
    text: str = ""  # detokenized output so far (truncated at a stop string)
    prefix_offset: int = 0  # incremental detokenizer state, indexes into output ids
    read_offset: int = 0
    num_preemptions: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per output token, if asked
    # One per prompt token once its prefill is done; the first token has none (nothing
    # precedes it), as in vLLM. Empty unless params.prompt_logprobs is set.
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)
        if self.params.prompt_logprobs is not None:
            self.prompt_logprobs.append(None)
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def block(self, i: int, block_size: int) -> list[int]:
        return self.token_ids[i * block_size:(i + 1) * block_size]
