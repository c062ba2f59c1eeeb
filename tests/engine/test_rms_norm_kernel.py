"""Our one-pass RMSNorm (engine/csrc/rms_norm.c) against Hugging Face's Llama formula."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from engine.model import rms_norm

needs_kernels = pytest.mark.skipif(not cpu_kernels.available(),
                                   reason="no C compiler here: the engine uses PyTorch's norm")


def hf_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm.forward, as transformers writes it."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [768, 64, 37])
def test_matches_hugging_face(dtype, width):
    gen = torch.Generator().manual_seed(width)
    x = (torch.randn(257, width, generator=gen) * 5).to(dtype)
    w = (torch.rand(width, generator=gen) + 0.5).to(dtype)
    got = cpu_kernels.rms_norm(x, w, 1e-6)
    want = hf_rms_norm(x, w, 1e-6)
    assert got is not None and got.dtype == dtype and got.shape == x.shape
    if dtype == torch.float32:  # the sum's order differs: a few ulps
        torch.testing.assert_close(got, want, atol=0, rtol=2e-6)
    else:  # the same roundings: off by one bf16 step at most, and very rarely
        step = (want.float().abs() * 2 ** -7).clamp(min=1e-30)
        assert ((got.float() - want.float()).abs() <= step).all()
        assert (got != want).float().mean() < 1e-3


@needs_kernels
def test_only_contiguous_rows_of_the_weights_dtype():
    x = torch.randn(4, 2, 64)
    w = torch.ones(64)
    assert cpu_kernels.rms_norm(x[:, :1], w, 1e-6) is None  # rows with gaps between them
    assert cpu_kernels.rms_norm(x, w.bfloat16(), 1e-6) is None
    assert cpu_kernels.rms_norm(x.half(), w.half(), 1e-6) is None
    # ... where rms_norm computes it with PyTorch instead, to the same result.
    torch.testing.assert_close(rms_norm(x[:, :1], w, 1e-6), hf_rms_norm(x[:, :1], w, 1e-6))


def test_without_kernels_the_same(monkeypatch):
    x, w = torch.randn(9, 64), torch.rand(64) + 0.5
    with_kernels = rms_norm(x, w, 1e-5)
    monkeypatch.setattr(cpu_kernels, "library", lambda: None)
    assert cpu_kernels.rms_norm(x, w, 1e-5) is None
    torch.testing.assert_close(rms_norm(x, w, 1e-5), with_kernels, atol=0, rtol=2e-6)
