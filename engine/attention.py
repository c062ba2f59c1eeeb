"""Paged attention over the block pool.

The pool of one layer is [kv_heads, num_blocks, block_size, head_dim] (sized by KV heads).
A step's tokens are flattened: decodes first, then prefill chunks (one SDPA call each).
Decodes on CPU use our C kernel, which reads the blocks in place (`engine/cpu_kernels.py`;
`servecat perf kernels`: 64 sequences of 128-400 tokens, 1.3-4.3x faster than gathering them,
even with no padding to mask); elsewhere, or without a C compiler, they are attended in
plain PyTorch: batched matmuls over their gathered blocks, grouped by length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.cpu_kernels import paged_decode_attention


@dataclass(slots=True)
class PrefillChunk:
    start: int  # first row in the step's flattened tokens
    end: int
    num_cached: int  # tokens of this sequence already in the pool before this chunk
    block_ids: torch.Tensor  # the blocks holding num_cached + (end - start) tokens
    mask: torch.Tensor | None  # None: plain causal, no cached prefix, no window to apply


@dataclass(slots=True)
class DecodeGroup:
    """Decodes of similar context length, padded to the group's longest."""

    start: int
    end: int
    block_ids: torch.Tensor  # [B * max_blocks], padded with block 0
    max_len: int  # max_blocks * block_size
    mask: torch.Tensor | None  # [1, B, 1, max_len] additive, None if no padding


@dataclass(slots=True)
class PagedDecodes:
    """All of a step's decodes (rows 0..num-1) for the C kernel: blocks read in place."""

    num: int
    block_tables: torch.Tensor  # [num, max_blocks] int32, padded with block 0
    ctx_lens: torch.Tensor  # [num] int32: tokens each decode attends to, itself included


@dataclass(slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] pool slot (block * block_size + offset) of each new token
    decodes: list[DecodeGroup] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)
    scale: float = 1.0
    paged_decodes: PagedDecodes | None = None  # set instead of `decodes` on CPU with kernels
    window: int | None = None  # sliding window (Mistral): keys within the last WINDOW positions


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    kvh, nb, bs, d = k_cache.shape
    k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)  # no-op unless computing above cache dtype
    k_cache.view(kvh, nb * bs, d).index_copy_(1, slot_mapping, k.transpose(0, 1))
    v_cache.view(kvh, nb * bs, d).index_copy_(1, slot_mapping, v.transpose(0, 1))


def gather(cache: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """[kv_heads, len(block_ids) * block_size, head_dim] copy of the named blocks."""
    kvh, _, bs, d = cache.shape
    return cache.index_select(1, block_ids).view(kvh, -1, d)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     g: DecodeGroup, scale: float) -> torch.Tensor:
    """q [B, heads, D] -> [B, heads, D]; grouped-query heads share their KV head."""
    b, h, d = q.shape
    kvh = k_cache.shape[0]
    k = gather(k_cache, g.block_ids).view(kvh, b, g.max_len, d).to(q.dtype)
    v = gather(v_cache, g.block_ids).view(kvh, b, g.max_len, d).to(q.dtype)
    qg = q.view(b, kvh, h // kvh, d).transpose(0, 1)  # [kvh, B, group, D]
    s = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # [kvh, B, group, L]
    if g.mask is not None:
        s += g.mask
    p = torch.softmax(s, dim=-1).to(q.dtype)
    return torch.matmul(p, v).transpose(0, 1).reshape(b, h, d)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      k_cache: torch.Tensor, v_cache: torch.Tensor, c: PrefillChunk,
                      scale: float) -> torch.Tensor:
    """One sequence's chunk: q [n, heads, D] against its cached prefix plus itself."""
    n = q.shape[0]
    if c.num_cached == 0:
        keys, values = k.transpose(0, 1), v.transpose(0, 1)
        if k_cache.dtype != q.dtype:
            # Attend to K/V as the pool holds them (computing above the cache dtype: bf16 on a
            # CPU without bf16 math), as a later chunk or a prefix-cache hit will: the same
            # prompt then gives the same logits however it was split or cached.
            keys, values = keys.to(k_cache.dtype).to(q.dtype), values.to(v_cache.dtype).to(q.dtype)
    else:
        ctx = c.num_cached + n
        keys = gather(k_cache, c.block_ids)[:, :ctx].to(q.dtype)
        values = gather(v_cache, c.block_ids)[:, :ctx].to(q.dtype)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], keys[None], values[None], attn_mask=c.mask,
        is_causal=c.mask is None, scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
    """Write this step's K/V into the pool, then attend every token to its sequence's context."""
    write_kv(k, v, k_cache, v_cache, meta.slot_mapping)
    if meta.paged_decodes is not None:
        pd = meta.paged_decodes
        dec = paged_decode_attention(q[:pd.num], k_cache, v_cache, pd.block_tables, pd.ctx_lens,
                                     meta.scale, meta.window)
        if not meta.prefills:
            return dec
    elif not meta.prefills and len(meta.decodes) == 1:
        return decode_attention(q, k_cache, v_cache, meta.decodes[0], meta.scale)
    out = torch.empty_like(q)
    if meta.paged_decodes is not None:
        out[:meta.paged_decodes.num] = dec
    for g in meta.decodes:
        out[g.start:g.end] = decode_attention(q[g.start:g.end], k_cache, v_cache, g, meta.scale)
    for c in meta.prefills:
        out[c.start:c.end] = prefill_attention(q[c.start:c.end], k[c.start:c.end],
                                               v[c.start:c.end], k_cache, v_cache, c, meta.scale)
    return out
