"""`servecat perf kernels`: the engine's CPU kernels against the PyTorch paths they replace,
on the small model's shapes: packed oneDNN linears vs `F.linear`, int8 weight-only linears
(scale on the output) vs dequantizing the weights first, the C decode attention vs gathering
the blocks and multiplying in PyTorch (its best case: equal lengths, no mask), and the
one-pass RMSNorm vs Hugging Face's formula in PyTorch."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import click

LINEAR_SHAPES = [(1280, 768), (4096, 768), (768, 2048)]  # (out, in): qkv, gate_up, down


def best_ms(fn, repeat: int = 30) -> float:
    """Median of REPEAT timed calls after 3 warm-up calls, in ms."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1e3


def linear_rows(dtype, tokens: list[int], repeat: int = 30) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from engine.quant import Linear

    rows = []
    for m in tokens:
        for n, k in LINEAR_SHAPES:
            x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
            packed = Linear(w.clone(), None)
            packed.to(torch.device("cpu"))
            flops = 2 * m * n * k
            plain = best_ms(partial(F.linear, x, w), repeat)
            ours = best_ms(partial(packed, x), repeat) if packed.packed else None
            rows.append({"kernel": f"linear {m}x{k} @ {k}x{n}", "pytorch_ms": round(plain, 3),
                         "ours_ms": None if ours is None else round(ours, 3),
                         "pytorch_gflops": round(flops / plain / 1e6, 1),
                         "ours_gflops": None if ours is None else round(flops / ours / 1e6, 1)})
    return rows


def int8_rows(tokens: list[int], repeat: int = 30) -> list[dict]:
    """Int8 weight-only linears over fp32 activations (the CPU's int8): ours scales the
    output; the plain way dequantizes the weights (q * s) and then multiplies."""
    import torch
    import torch.nn.functional as F

    from engine.quant import Int8Linear

    def dequantize_first(x, layer):
        return F.linear(x, layer.weight.float() * layer.scale.float()[:, None])

    rows = []
    for m in tokens:
        for n, k in LINEAR_SHAPES:
            x, layer = torch.randn(m, k), Int8Linear(torch.randn(n, k), None)
            plain = best_ms(partial(dequantize_first, x, layer), repeat)
            ours = best_ms(partial(layer, x), repeat)
            rows.append({"kernel": f"int8 linear {m}x{k} @ {k}x{n}",
                         "pytorch_ms": round(plain, 3), "ours_ms": round(ours, 3)})
    return rows


def attention_rows(dtype, contexts: list[int], seqs: int = 64, repeat: int = 30) -> list[dict]:
    import torch

    from engine import cpu_kernels
    from engine.attention import DecodeGroup, decode_attention

    heads, kv_heads, d, bs = 12, 4, 64, 16
    rows = []
    for ctx in contexts:
        nbl = -(-ctx // bs)
        nb = seqs * nbl + 8
        k = torch.randn(kv_heads, nb, bs, d).to(dtype)
        v = torch.randn(kv_heads, nb, bs, d).to(dtype)
        tables = torch.randperm(nb)[:seqs * nbl].view(seqs, nbl).to(torch.int32).contiguous()
        lens = torch.full((seqs,), ctx, dtype=torch.int32)
        q = torch.randn(seqs, heads, d).to(dtype)
        group = DecodeGroup(0, seqs, tables.long().view(-1), nbl * bs, None)
        plain = best_ms(partial(decode_attention, q, k, v, group, d ** -0.5), repeat)
        ours = (best_ms(partial(cpu_kernels.paged_decode_attention, q, k, v, tables, lens,
                                d ** -0.5), repeat) if cpu_kernels.available() else None)
        rows.append({"kernel": f"decode attention {seqs} seqs x {ctx} tokens",
                     "pytorch_ms": round(plain, 3),
                     "ours_ms": None if ours is None else round(ours, 3)})
    return rows


def rms_norm_rows(dtype, tokens: list[int], width: int = 768, repeat: int = 30) -> list[dict]:
    import torch

    from engine import cpu_kernels

    def hf(x, w, eps=1e-6):  # LlamaRMSNorm.forward, as transformers writes it
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    rows = []
    for m in tokens:
        x, w = torch.randn(m, width).to(dtype), torch.rand(width).to(dtype)
        plain = best_ms(partial(hf, x, w), repeat)
        ours = (best_ms(partial(cpu_kernels.rms_norm, x, w, 1e-6), repeat)
                if cpu_kernels.available() else None)
        rows.append({"kernel": f"rms_norm {m}x{width}", "pytorch_ms": round(plain, 3),
                     "ours_ms": None if ours is None else round(ours, 3)})
    return rows


@click.command("kernels")
@click.option("--dtype", "dtypes", default="fp32,bf16", show_default=True)
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch CPU threads [default: all cores].")
@click.option("--repeat", default=30, show_default=True, type=click.IntRange(min=1),
              help="Timed calls per kernel and shape (after 3 warm-up calls); the median is "
                   "reported.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False))
def perf_kernels(dtypes: str, threads: int | None, repeat: int, json_out: str | None) -> None:
    """Packed linears, int8 linears (fp32 only), the C decode attention and RMSNorm vs the
    PyTorch paths, small-model shapes."""
    import os

    import torch

    from engine import cpu_kernels

    torch.set_num_threads(threads or os.cpu_count() or 1)
    names = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    for word in [d.strip() for d in dtypes.split(",") if d.strip()]:
        if word not in names:
            raise click.BadParameter(f"{word!r} is not one of fp32, bf16", param_hint="--dtype")
        torch.manual_seed(0)
        for row in (linear_rows(names[word], [64, 512, 2048], repeat)
                    + (int8_rows([1, 16], repeat) if word == "fp32" else [])
                    + attention_rows(names[word], [128, 400], repeat=repeat)
                    + rms_norm_rows(names[word], [2048], repeat=repeat)):
            ratio = (round(row["pytorch_ms"] / row["ours_ms"], 2) if row["ours_ms"] else None)
            rows.append({"dtype": word, **row, "speedup": ratio})
    click.echo("| dtype | kernel | PyTorch ms | ours ms | speed-up |")
    click.echo("|---|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r['dtype']} | {r['kernel']} | {r['pytorch_ms']} | {r['ours_ms']} | "
                   f"{r['speedup']} |")
    if json_out:
        Path(json_out).write_text(json.dumps({
            "threads": torch.get_num_threads(), "repeat": repeat, "engine_kernels": cpu_kernels.available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "rows": rows},
            indent=2) + "\n")
