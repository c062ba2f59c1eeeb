"""Next-token choice: greedy rows in one argmax; sampled rows with temperature, top-k, top-p
and a per-request generator so a seed reproduces its output."""

from __future__ import annotations

import torch

from engine.sequence import SamplingParams


def probabilities(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """The distribution a sampled row draws from, for one row of logits [V]: temperature, then
    top-k, then top-p, in the order of Hugging Face's logits warpers (and vLLM's)."""
    logits = logits.float().cpu() / p.temperature
    if 0 < p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = probs.cumsum(-1) - probs >= p.top_p
        drop[0] = False  # a top_p that rounds to 0 in float32 would otherwise drop every token
        logits[order[drop]] = float("-inf")
    return logits.softmax(-1)


def sample_one(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    """Sample from one row of logits [V]."""
    return int(torch.multinomial(probabilities(logits, p), 1, generator=gen).item())


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of logits [S, V]."""
    tokens = logits.argmax(dim=-1).tolist()
    for i, p in enumerate(params):
        if not p.greedy:
            tokens[i] = sample_one(logits[i], p, generators[i])
    return tokens
