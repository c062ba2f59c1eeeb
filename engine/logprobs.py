"""Log-probabilities of chosen tokens and the top-N alternatives, for requests that ask.

Computed from the raw model distribution: log-softmax of the logits the sampler starts from,
before temperature, top-k and top-p (vLLM's default `logprobs_mode="raw_logprobs"`). So a
request's logprobs describe the model, not its sampling settings, and two deployments of one
model can be compared whatever settings their requests used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The most top alternatives one position may ask for (vLLM's default `max_logprobs`; OpenAI's
# chat `top_logprobs` allows the same 20).
MAX_LOGPROBS = 20


@dataclass(slots=True)
class TokenLogprob:
    """One position: the token there, its logprob, and the top-N (token id, logprob), best first."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


def token_logprobs(logits: torch.Tensor, token_ids: list[int],
                   top_n: list[int]) -> list[TokenLogprob]:
    """Row i of LOGITS [R, V]: the logprob of TOKEN_IDS[i] and its TOP_N[i] most likely tokens."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(1, torch.tensor(token_ids, device=logp.device)[:, None])[:, 0].tolist()
    k = max(top_n, default=0)
    top_vals, top_ids = (logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long()))
    vals, ids = top_vals.tolist(), top_ids.tolist()
    return [TokenLogprob(t, lp, list(zip(ids[i][:n], vals[i][:n], strict=True)))
            for i, (t, lp, n) in enumerate(zip(token_ids, chosen, top_n, strict=True))]
