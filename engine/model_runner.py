"""Tensors in, tokens out: the KV pool, one step's flattened inputs, the forward, sampling."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from engine import cpu_kernels
from engine.attention import AttentionMetadata, DecodeGroup, PagedDecodes, PrefillChunk
from engine.logprobs import TokenLogprob, token_logprobs
from engine.model import CausalLM
from engine.sampler import sample
from engine.sequence import Sequence

# Split a step's decodes into at most this many groups of similar length (less padding).
MAX_DECODE_GROUPS = 4
# KV pool dtypes the C decode kernel reads.
CPU_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def free_memory(device: torch.device) -> int:
    """Bytes free for the KV pool on DEVICE."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"]
    except (OSError, KeyError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class ModelRunner:
    def __init__(self, model: CausalLM, block_size: int, kv_cache_memory: int | None,
                 kv_cache_fraction: float):
        self.model = model
        spec = model.spec
        self.block_size = block_size
        self.device = model.device
        elem = torch.tensor([], dtype=model.dtype).element_size()
        self.block_bytes = 2 * spec.num_layers * spec.num_kv_heads * block_size * spec.head_dim * elem
        budget = kv_cache_memory or int(free_memory(self.device) * kv_cache_fraction)
        self.num_blocks = budget // self.block_bytes
        if self.num_blocks < 1:
            raise ValueError(f"KV cache budget of {budget} bytes holds no block "
                             f"(one block is {self.block_bytes} bytes)")
        shape = (spec.num_kv_heads, self.num_blocks, block_size, spec.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=model.dtype, device=self.device),
                           torch.zeros(shape, dtype=model.dtype, device=self.device))
                          for _ in range(spec.num_layers)]
        self.scale = spec.head_dim ** -0.5
        self.window = spec.sliding_window
        self.paged_kernel = (self.device.type == "cpu" and model.dtype in CPU_KERNEL_DTYPES
                             and cpu_kernels.available())

    def _tensor(self, data: list[int]) -> torch.Tensor:
        return torch.tensor(data, dtype=torch.long, device=self.device)

    def _decode_groups(self, ctx_lens: list[int], tables: list[list[int]]) -> list[DecodeGroup]:
        """Decodes are sorted by length; cut them where padding to the longest would waste most."""
        bs = self.block_size
        nblocks = [len(t) for t in tables]
        cuts = [0, len(tables)]
        for _ in range(MAX_DECODE_GROUPS - 1):
            best, best_gain = None, 0
            for a, b in zip(cuts, cuts[1:], strict=False):
                for c in range(a + 1, b):
                    # rows a..c-1 pad to nblocks[c-1] instead of nblocks[b-1]
                    gain = (c - a) * (nblocks[b - 1] - nblocks[c - 1])
                    if gain > best_gain:
                        best, best_gain = c, gain
            # Another group costs a few kernel launches; only worth it above ~1/4 of the blocks.
            if best is None or best_gain * 4 < sum(nblocks):
                break
            cuts = sorted([*cuts, best])
        groups = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            width = nblocks[b - 1]
            ids = [blk for t in tables[a:b] for blk in t + [0] * (width - len(t))]
            max_len = width * bs
            lens = ctx_lens[a:b]
            mask = None
            outside = self.window is not None and any(n > self.window for n in lens)
            if outside or any(n != max_len for n in lens):
                pos = torch.arange(max_len, device=self.device)
                n = self._tensor(lens)[:, None]
                pad = pos[None, :] >= n
                if self.window is not None:  # keys older than the window
                    pad |= pos[None, :] < n - self.window
                mask = torch.zeros(pad.shape, dtype=torch.float32, device=self.device)
                mask.masked_fill_(pad, float("-inf"))
                mask = mask[None, :, None, :]
            groups.append(DecodeGroup(a, b, self._tensor(ids), max_len, mask))
        return groups

    def prepare(self, batch: list[tuple[Sequence, int]]):
        """Flatten the step: decodes first (sorted by context length), then prefill chunks."""
        bs = self.block_size
        decodes = sorted((x for x in batch if x[1] == 1), key=lambda x: x[0].num_cached_tokens)
        prefills = [x for x in batch if x[1] > 1]
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        sampled: list[Sequence] = []
        logits_rows: list[int] = []
        scored: list[tuple[Sequence, int, int]] = []  # (seq, row, token) of prompt positions
        for seq, n in decodes + prefills:
            start = seq.num_cached_tokens
            if seq.params.prompt_logprobs is not None:
                scored += _prompt_rows(seq, start, n, len(ids))
            ids.extend(seq.token_ids[start:start + n])
            pos.extend(range(start, start + n))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            if start + n == len(seq):
                sampled.append(seq)
                logits_rows.append(len(ids) - 1)
        meta = AttentionMetadata(self._tensor(slots), scale=self.scale, window=self.window)
        if decodes:
            lens = [s.num_cached_tokens + 1 for s, _ in decodes]
            tables = [s.block_table[:s.num_cached_tokens // bs + 1] for s, _ in decodes]
            if self.paged_kernel:
                width = max(len(t) for t in tables)
                meta.paged_decodes = PagedDecodes(
                    len(decodes),
                    torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
                    torch.tensor(lens, dtype=torch.int32))
            else:
                meta.decodes = self._decode_groups(lens, tables)
        row = len(decodes)
        for seq, n in prefills:
            c = seq.num_cached_tokens
            ctx = c + n
            mask = None
            if c or (self.window is not None and ctx > self.window):
                q_pos = torch.arange(c, ctx, device=self.device)[:, None]
                k_pos = torch.arange(ctx, device=self.device)[None, :]
                mask = k_pos <= q_pos
                if self.window is not None:
                    mask &= k_pos > q_pos - self.window
            blocks = self._tensor(seq.block_table[:-(-ctx // bs)])
            meta.prefills.append(PrefillChunk(row, row + n, c, blocks, mask))
            row += n
        return ids, pos, meta, sampled, logits_rows, scored

    @torch.inference_mode()
    def run(self, batch: list[tuple[Sequence, int]]) -> StepResult:
        """One forward; the sequences that got a new token, those tokens, and logprobs where
        asked (none computed otherwise: the step costs what it did without them)."""
        ids, pos, meta, sampled, rows, scored = self.prepare(batch)
        k = len(sampled)
        logits = self.model.forward(self._tensor(ids), self._tensor(pos), self.kv_caches, meta,
                                    self._tensor(rows + [row for _, row, _ in scored]))
        tokens = (sample(logits[:k], [s.params for s in sampled], [s.generator for s in sampled])
                  if k else [])
        result = StepResult(sampled, tokens)
        asked = [i for i, s in enumerate(sampled) if s.params.logprobs is not None]
        if not asked and not scored:
            return result
        lps = token_logprobs(
            logits[asked + list(range(k, k + len(scored)))],
            [tokens[i] for i in asked] + [token for _, _, token in scored],
            [sampled[i].params.logprobs for i in asked]
            + [s.params.prompt_logprobs for s, _, _ in scored])
        result.logprobs = [None] * k
        for i, lp in zip(asked, lps, strict=False):
            result.logprobs[i] = lp
        result.prompt_logprobs = [(s, lp) for (s, _, _), lp in
                                  zip(scored, lps[len(asked):], strict=True)]
        return result


@dataclass(slots=True)
class StepResult:
    """What one forward produced: a token per sampled sequence, and the logprobs asked for."""

    sampled: list[Sequence]
    tokens: list[int]
    logprobs: list[TokenLogprob | None] | None = None  # aligned with `sampled`; None: none asked
    prompt_logprobs: list[tuple[Sequence, TokenLogprob]] = field(default_factory=list)


def _prompt_rows(seq: Sequence, start: int, n: int, base: int) -> list[tuple[Sequence, int, int]]:
    """(seq, row, token) for the prompt tokens this chunk's logits score, not scored before.

    The logits at position p score the token at p + 1. After a preemption the prompt is
    computed again, but its scores are already kept, so nothing is scored twice.
    """
    lo = max(start, len(seq.prompt_logprobs) - 1)
    hi = min(start + n, seq.num_prompt_tokens - 1)
    return [(seq, base + p - start, seq.token_ids[p + 1]) for p in range(lo, hi)]
