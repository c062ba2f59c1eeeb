"""Our C decode attention against the plain PyTorch path, read from the same paged pool."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from engine.attention import DecodeGroup, decode_attention

needs_kernels = pytest.mark.skipif(not cpu_kernels.available(),
                                reason="no C compiler here: the engine uses PyTorch attention")


def reference(q, k_cache, v_cache, tables, lens, block_size, scale, window=None):
    """decode_attention (the PyTorch path), one sequence at a time, no padding."""
    out = []
    for i, (table, n) in enumerate(zip(tables, lens, strict=True)):
        used = table[:-(-n // block_size)]
        ids = torch.tensor(used)
        length = len(used) * block_size
        mask = torch.zeros(1, 1, 1, length)
        mask[..., n:] = float("-inf")
        if window is not None:
            mask[..., :max(0, n - window)] = float("-inf")
        g = DecodeGroup(i, i + 1, ids, length, mask)
        out.append(decode_attention(q[i:i + 1].float(), k_cache.float(), v_cache.float(), g,
                                    scale))
    return torch.cat(out)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("head_dim", "heads", "kv_heads"),
                         [(64, 12, 4), (128, 8, 8), (64, 32, 4), (32, 8, 2), (80, 6, 3)])
def test_matches_pytorch(dtype, head_dim, heads, kv_heads):
    # (64, 3) and (128, 1) and (64, 8) take the compiled fixed-shape path; 32 and 80 the generic.
    gen = torch.Generator().manual_seed(head_dim * heads)
    block_size, num_blocks = 16, 64
    shape = (kv_heads, num_blocks, block_size, head_dim)
    k_cache = torch.randn(shape, generator=gen).to(dtype)
    v_cache = torch.randn(shape, generator=gen).to(dtype)
    lens = [1, 15, 16, 17, 100, 333]
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables, width = [], max(-(-n // block_size) for n in lens)
    for n in lens:  # blocks scattered over the pool, padded with block 0 like the runner does
        used, order = order[:-(-n // block_size)], order[-(-n // block_size):]
        tables.append(used + [0] * (width - len(used)))
    q = torch.randn(len(lens), heads, head_dim, generator=gen).to(dtype)
    scale = head_dim ** -0.5
    got = cpu_kernels.paged_decode_attention(
        q, k_cache, v_cache, torch.tensor(tables, dtype=torch.int32),
        torch.tensor(lens, dtype=torch.int32), scale)
    want = reference(q, k_cache, v_cache, tables, lens, block_size, scale)
    assert got.dtype == dtype and got.shape == q.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


@needs_kernels
@pytest.mark.parametrize("head_dim", [64, 32])
@pytest.mark.parametrize("window", [1, 16, 20, 100])
def test_sliding_window(head_dim, window):
    gen = torch.Generator().manual_seed(window)
    block_size, num_blocks, heads, kv_heads = 16, 40, 4, 2
    k_cache = torch.randn(kv_heads, num_blocks, block_size, head_dim, generator=gen)
    v_cache = torch.randn(kv_heads, num_blocks, block_size, head_dim, generator=gen)
    lens = [1, 16, 21, 150]
    tables = [list(range(i * 10, i * 10 + 10)) for i in range(len(lens))]
    q = torch.randn(len(lens), heads, head_dim, generator=gen)
    got = cpu_kernels.paged_decode_attention(
        q, k_cache, v_cache, torch.tensor(tables, dtype=torch.int32),
        torch.tensor(lens, dtype=torch.int32), 0.125, window)
    want = reference(q, k_cache, v_cache, tables, lens, block_size, 0.125, window)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_peaked_and_flat_softmax(dtype):
    # Scores 100x apart (exp underflows to its clamp) and all equal: the vector softmax's
    # extremes, on 16-key tiles and their tails.
    gen = torch.Generator().manual_seed(7)
    block_size, num_blocks, heads, kv_heads, d = 16, 48, 6, 2, 64
    k_cache = torch.randn(kv_heads, num_blocks, block_size, d, generator=gen).to(dtype)
    v_cache = torch.randn(kv_heads, num_blocks, block_size, d, generator=gen).to(dtype)
    lens = [32, 47, 200]
    tables = [list(range(i * 16, i * 16 + 16)) for i in range(len(lens))]
    for q in (torch.randn(len(lens), heads, d, generator=gen) * 40,
              torch.zeros(len(lens), heads, d)):
        q = q.to(dtype)
        got = cpu_kernels.paged_decode_attention(
            q, k_cache, v_cache, torch.tensor(tables, dtype=torch.int32),
            torch.tensor(lens, dtype=torch.int32), d ** -0.5)
        want = reference(q, k_cache, v_cache, tables, lens, block_size, d ** -0.5)
        # Scores of ~300 carry ~3e-5 of fp32 rounding into the exponent: 1e-4, not 1e-5.
        tol = 1e-4 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


@needs_kernels
def test_refuses_bad_inputs():
    pool = torch.zeros(1, 2, 16, 64)
    q = torch.zeros(1, 1, 64)
    with pytest.raises(ValueError, match="int32"):
        cpu_kernels.paged_decode_attention(q, pool, pool, torch.zeros(1, 1, dtype=torch.int64),
                                           torch.ones(1, dtype=torch.int32), 1.0)
    with pytest.raises(ValueError, match="fp32 or bf16"):
        cpu_kernels.paged_decode_attention(q, pool.half(), pool.half(),
                                           torch.zeros(1, 1, dtype=torch.int32),
                                           torch.ones(1, dtype=torch.int32), 1.0)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("SERVECAT_ENGINE_KERNELS", "torch")
    assert not cpu_kernels.available()


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SERVECAT_KERNEL_CACHE", str(tmp_path))
    assert cpu_kernels._build("false") is None  # a "compiler" that always fails
    assert "not built" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_falls_back(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SERVECAT_KERNEL_CACHE", str(blocker / "kernels"))  # under a file
    assert cpu_kernels._build("cc") is None
    assert "not built" in caplog.text
