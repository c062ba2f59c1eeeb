"""Linear layers: plain, int8 weight-only (per-channel), int4 weight-only (group-wise).

Both quantized kinds use PyTorch's own weight-only kernels (`_weight_int8pack_mm`,
`_weight_int4pack_mm[_for_cpu]`, the ones torchao builds on), so no extra library is needed.

On CPU, plain fp32/bf16 weights are reordered once into oneDNN's blocked layout and multiplied
with `mkldnn._linear_pointwise` (the kernel Inductor's CPU backend uses for frozen weights):
measured 1.9-2.9x faster than `F.linear` in fp32 on the small model's shapes (AVX-512, 2
threads; `servecat perf kernels`), and it fuses the MLP's SiLU, the gate*up product and the residual adds into the GEMM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine import cpu_kernels

INT4_GROUP_SIZE = 64
INT4_INNER_K_TILES = 8


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); on AVX2 it is ~8x slower."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def packable(weight: torch.Tensor, device: torch.device) -> bool:
    """Whether oneDNN can hold WEIGHT pre-packed on DEVICE (plain fp32, or bf16 on a CPU that
    multiplies bf16 natively)."""
    if device.type != "cpu" or not cpu_kernels.enabled():
        return False
    if weight.dtype == torch.bfloat16 and not native_bf16_cpu():
        return False
    return weight.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()


class Linear:
    """y = x @ W.T + b. On a CPU without native bf16 math, bf16 weights are multiplied in fp32
    (upcast per call: the weights stay bf16 in memory, the matmul runs at fp32 speed).

    `silu`, `mul` and `add` are the linear followed by an elementwise step; the packed CPU
    layer does that step inside the GEMM."""

    packed = False  # weight is in oneDNN's blocked layout (CPU only)
    upcast = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight.contiguous(), bias
        self.out = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return _linear(x, self.weight, self.bias, "none", [], "")
        if self.upcast:
            b = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), b).to(x.dtype)
        return F.linear(x, self.weight, self.bias)

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """silu(x @ W.T + b)."""
        if self.packed:
            return _linear(x, self.weight, self.bias, "swish", [], "")
        return F.silu(self(x))

    def mul(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """(x @ W.T + b) * other."""
        if self.packed:
            return _linear.binary(x, other, self.weight, self.bias, "mul")
        return self(x) * other

    def add(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """(x @ W.T + b) + other, e.g. a residual."""
        if self.packed:
            return _linear.binary(x, other, self.weight, self.bias, "add")
        return other + self(x)

    def to(self, device: torch.device) -> None:
        if self.packed:
            if device.type != "cpu":
                raise RuntimeError("a linear packed for CPU cannot move; build it again")
            return
        self.weight = self.weight.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        self.upcast = (device.type == "cpu" and self.weight.dtype in (torch.bfloat16, torch.float16)
                       and not native_bf16_cpu())
        if packable(self.weight, device):
            # Packed for any batch size (None); the plain copy is dropped to save memory.
            self.weight = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
            self.packed = True

    @property
    def out_features(self) -> int:
        return self.out


_linear = torch.ops.mkldnn._linear_pointwise if hasattr(torch.ops, "mkldnn") else None


class Int8Linear(Linear):
    """Symmetric per-output-channel int8 weights; activations stay in the model dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        w = weight.float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.weight = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.to(weight.dtype)
        self.bias, self.out = bias, weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # PyTorch's int8 kernel runs at ~2 GFLOP/s on AVX2 (and 1.6-23x slower than this
            # in fp32 on AVX-512), so the int8 weights are converted to an fp32 temporary for
            # the fp32 GEMM (they stay int8 in memory). The per-channel scale is applied to
            # the output, not the weights: x @ (q * s).T = (x @ q.T) * s, one weight-sized
            # temporary instead of two: 1.25-2.06x faster on the small model's shapes
            # (`servecat perf kernels`' int8 rows), and steadier (the old way's call varied
            # 0.84-4.2 ms run to run for one shape).
            y = F.linear(x.float(), self.weight.float()) * self.scale.float()
            return (y if self.bias is None else y + self.bias.float()).to(x.dtype)
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.weight, self.scale)
        y = y.view(*shape[:-1], -1)
        return y if self.bias is None else y + self.bias

    def to(self, device: torch.device) -> None:
        self.weight = self.weight.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        self.scale = self.scale.to(device)


class Int4Linear(Linear):
    """Asymmetric group-wise int4 weights in PyTorch's packed layout (tinygemm on CUDA)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        n, k = weight.shape
        g = INT4_GROUP_SIZE
        if k % g:
            raise ValueError(f"int4 needs in_features divisible by {g}, got {k}")
        wg = weight.float().view(n, k // g, g)
        lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
        scale = (hi - lo).clamp(min=1e-6) / 15
        self.q = ((wg - lo) / scale).round().clamp(0, 15).to(torch.int32).view(n, k)
        zero = lo + 8 * scale  # the kernels compute (q - 8) * scale + zero
        self.scales_and_zeros = torch.stack(
            [scale.view(n, -1), zero.view(n, -1)], dim=-1).transpose(0, 1).contiguous()
        self.dtype, self.bias, self.n = weight.dtype, bias, n
        self.weight = torch.empty(0)  # packed by to(): the layout depends on the device

    def _pack(self, device: torch.device) -> None:
        q = self.q.to(device)
        self.scales_and_zeros = self.scales_and_zeros.to(device=device, dtype=self.dtype)
        if device.type == "cpu":
            self.weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, INT4_INNER_K_TILES)
        else:
            packed = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
            self.weight = torch.ops.aten._convert_weight_to_int4pack(packed, INT4_INNER_K_TILES)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x.device.type == "cpu":
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x2, self.weight, INT4_GROUP_SIZE, self.scales_and_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm(
                x2, self.weight, INT4_GROUP_SIZE, self.scales_and_zeros)
        y = y.view(*shape[:-1], self.n)
        return y if self.bias is None else y + self.bias

    def to(self, device: torch.device) -> None:
        if self.q is None:
            raise RuntimeError("Int4Linear is packed for one device; build it again to move it")
        self._pack(device)
        self.q = None
        self.bias = None if self.bias is None else self.bias.to(device)

    @property
    def out_features(self) -> int:
        return self.n


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None,
                quantization: str | None) -> Linear:
    """A linear layer of the requested weight quantization (None: the weight's own dtype)."""
    if quantization is None:
        return Linear(weight, bias)
    if quantization == "int8":
        return Int8Linear(weight, bias)
    if quantization == "int4":
        return Int4Linear(weight, bias)
    raise ValueError(f"unknown weight quantization {quantization!r}: choose int8 or int4")
