"""Prompts: synthetic prompts of exact token lengths, shared prefixes, JSONL conversations.

Synthetic prompts are built from "word" tokens (a space and letters) that the tokenizer maps
back to themselves, so a prompt of N such tokens re-encodes to exactly N tokens; the count is
still measured, never assumed. Every prompt is unique unless the workload shares a prefix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import WorkloadError
from bench.tokens import Tokenizer
from bench.workload import Workload


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request's prompt: text (completions) or messages (chat), its size and max_tokens."""

    text: str
    messages: tuple[dict[str, str], ...] | None
    input_tokens: int
    max_tokens: int


def sample_lengths(dist: str, mean: int, lo: int | None, hi: int | None, std: float,
                   n: int, rng: np.random.Generator) -> np.ndarray:
    """n integer lengths >= 1: fixed, uniform in [lo, hi], or normal(mean, std) within bounds."""
    if dist == "fixed":
        out = np.full(n, mean)
    elif dist == "uniform":
        out = rng.integers(lo, hi + 1, size=n)
    else:
        out = np.rint(rng.normal(mean, std, size=n))
        out = np.clip(out, lo if lo is not None else 1, hi if hi is not None else None)
    return np.maximum(out, 1).astype(np.int64)


def word_tokens(tok: Tokenizer, limit: int = 20000) -> np.ndarray:
    """Token ids that decode to ' letters' and re-encode to themselves."""
    ids = list(range(min(tok.vocab_size, limit)))
    texts = tok.decode_batch([[i] for i in ids])
    cands = [(i, t) for i, t in zip(ids, texts, strict=True)
             if len(t) >= 2 and t[0] == " " and t[1:].isascii() and t[1:].isalpha()]
    back = tok.encode_batch([t for _, t in cands])
    good = [i for (i, _), b in zip(cands, back, strict=True) if b == [i]]
    if len(good) < 16:
        raise WorkloadError(f"tokenizer {tok.source}: only {len(good)} word tokens; cannot build prompts")
    return np.array(good, dtype=np.int64)


class PromptFactory:
    """Builds exact-length unique prompts from one seeded generator."""

    def __init__(self, tok: Tokenizer, seed: int, shared_prefix_tokens: int = 0):
        self.tok = tok
        self.rng = np.random.default_rng(seed)
        self.words = word_tokens(tok)
        self.prefix = self.rng.choice(self.words, size=shared_prefix_tokens).tolist()
        self.seen: set[str] = set()

    def make(self, n_tokens: int) -> tuple[str, int]:
        """A prompt of n_tokens tokens (the shared prefix first), unique within this factory."""
        n_unique = max(n_tokens - len(self.prefix), 1 if not self.prefix else 0)
        for _ in range(8):
            ids = self.prefix + self.rng.choice(self.words, size=n_unique).tolist()
            text = self.tok.decode(ids)
            if text not in self.seen or n_unique == 0:
                break
        self.seen.add(text)
        return text, len(ids)


def prompt_seed(w: Workload) -> int:
    """The seed of a workload's prompt tokens: its seed and its load level. The load levels of
    one deployment (a capacity search's probes, a sweep's levels) run on one server, which
    keeps the prompts it saw in its prefix cache: were the next level's prompts the same, their
    prefill would be nearly free (measured: 9,056 of 9,586 prompt tokens hit the cache from the
    second probe on) and the capacity would be that of a cache, not of the deployment. The
    lengths stay those of the seed alone, so levels differ in their load, not their sizes."""
    level = f"{w.seed}|{w.load}|{w.concurrency if w.load == 'concurrency' else w.rate!r}"
    return int.from_bytes(hashlib.blake2b(level.encode(), digest_size=8).digest(), "little")


def synthetic_prompts(workload: Workload, tok: Tokenizer, n: int) -> list[Prompt]:
    """n prompts with lengths drawn from the workload's input and output distributions, the
    same for every load level of a seed, their tokens new at each level (prompt_seed)."""
    rng = np.random.default_rng(workload.seed)
    w = workload
    ins = sample_lengths(w.input_dist, w.input_tokens, w.input_min, w.input_max, w.input_std, n, rng)
    outs = output_lengths(w, n, rng)
    factory = PromptFactory(tok, prompt_seed(w), w.shared_prefix_tokens)
    texts = [factory.make(int(k))[0] for k in ins]
    counts = tok.count(texts)  # measured, not assumed
    return [Prompt(t, _as_chat(t) if w.api == "chat" else None, c, int(o))
            for t, c, o in zip(texts, counts, outs, strict=True)]


def output_lengths(w: Workload, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    rng = rng or np.random.default_rng(w.seed)
    return sample_lengths(w.output_dist, w.output_tokens, w.output_min, w.output_max,
                          w.output_std, n, rng)


def conversation_prompts(path: str | Path, workload: Workload, tok: Tokenizer, n: int) -> list[Prompt]:
    """n prompts cycling through a JSONL file of `{"messages": [...], "output_tokens"?: N}`."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            msgs = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WorkloadError(f"{path}:{lineno}: expected {{\"messages\": [{{role, content}}]}} ({exc})") from None
        rows.append((msgs, row.get("output_tokens")))
    if not rows:
        raise WorkloadError(f"{path}: no conversations")
    outs = output_lengths(workload, n)
    prompts = []
    for i in range(n):
        msgs, out = rows[i % len(rows)]
        text = "\n".join(f"{m['role']}: {m['content']}" for m in msgs)
        if i >= len(rows):  # keep prompts unique when the file is cycled
            text, msgs = f"[{i}] {text}", ({"role": "system", "content": f"[{i}]"}, *msgs)
        prompts.append((text, msgs if workload.api == "chat" else None, int(out or outs[i])))
    counts = tok.count([t for t, _, _ in prompts])
    return [Prompt(t, m, c, o) for (t, m, o), c in zip(prompts, counts, strict=True)]


def _as_chat(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)
