"""Our Llama-family forward pass (Llama, Mistral, Qwen2, Qwen3) over flattened varlen tokens,
loading Hugging Face safetensors weights. Attention reads and writes the paged KV pool."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine import cpu_kernels
from engine.attention import AttentionMetadata, paged_attention
from engine.quant import Linear, make_linear, native_bf16_cpu, packable

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                 "Qwen3ForCausalLM")


@dataclass(slots=True)
class ModelSpec:
    """The shape facts the runner needs, read from config.json."""

    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    sliding_window: int | None  # every layer attends to the last this-many positions only
    context_cap: int | None  # longest context served (a window on some layers only)
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    eos_token_ids: list[int]


def load_spec(model_dir: Path) -> tuple[ModelSpec, object]:
    """Read and check the model's config; returns our spec and the transformers config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    arch = (config.architectures or ["?"])[0]
    if arch not in ARCHITECTURES:
        raise ValueError(f"{model_dir}: architecture {arch} is not served by the builtin engine "
                         f"(supported: {', '.join(ARCHITECTURES)})")
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    window = getattr(config, "sliding_window", None)
    if arch.startswith("Qwen") and not getattr(config, "use_sliding_window", False):
        window = None
    # A window on every layer (Mistral) is applied; one on some layers only (Qwen's
    # max_window_layers) is not: there the context is capped at the window, where both agree.
    layer_types = getattr(config, "layer_types", None) or []
    mixed = window is not None and any(t != "sliding_attention" for t in layer_types)
    eos = config.eos_token_id
    gen_path = model_dir / "generation_config.json"
    if gen_path.exists():
        eos = json.loads(gen_path.read_text()).get("eos_token_id", eos)
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    spec = ModelSpec(
        architecture=arch, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers, num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
        rms_norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        sliding_window=None if mixed else window, context_cap=window if mixed else None,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=arch == "Qwen2ForCausalLM" or bool(getattr(config, "attention_bias", False)),
        qk_norm=arch == "Qwen3ForCausalLM", eos_token_ids=eos_ids,
    )
    return spec, config


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(f))
    return weights


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in fp32 exactly as Hugging Face's Llama does."""
    out = cpu_kernels.rms_norm(x, weight, eps)  # one pass on CPU; None where it does not apply
    if out is not None:
        return out
    if x.dtype == torch.float32:  # one fused kernel; same formula
        return F.rms_norm(x, weight.shape, weight, eps)
    # HF's order: normalise in fp32, round to the model dtype, then scale by the weight.
    return weight * F.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on [T, heads, D] with cos/sin [T, 1, D] (HF's rotate_half form)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Layer:
    def __init__(self, w: dict[str, torch.Tensor], p: str, spec: ModelSpec, dtype: torch.dtype,
                 quantization: str | None, act_dtype: torch.dtype, device: torch.device):
        def t(name: str, to: torch.dtype = dtype) -> torch.Tensor:
            return w.pop(p + name).to(to)

        a = "self_attn."
        qkv = torch.cat([t(a + "q_proj.weight"), t(a + "k_proj.weight"), t(a + "v_proj.weight")])
        qkv_b = (torch.cat([t(a + "q_proj.bias"), t(a + "k_proj.bias"), t(a + "v_proj.bias")])
                 if spec.qkv_bias else None)
        self.qkv: Linear = make_linear(qkv, qkv_b, quantization)
        self.o: Linear = make_linear(t(a + "o_proj.weight"), None, quantization)
        self.q_norm = t(a + "q_norm.weight", act_dtype) if spec.qk_norm else None
        self.k_norm = t(a + "k_norm.weight", act_dtype) if spec.qk_norm else None
        gate, up = t("mlp.gate_proj.weight"), t("mlp.up_proj.weight")
        # Two GEMMs with the SiLU and the product fused in where the linear can (packed CPU
        # weights: 2x faster than one gate_up GEMM plus elementwise passes); one otherwise.
        self.split_mlp = quantization is None and packable(gate, device)
        if self.split_mlp:
            self.gate: Linear = make_linear(gate, None, None)
            self.up: Linear = make_linear(up, None, None)
        else:
            self.gate_up: Linear = make_linear(torch.cat([gate, up]), None, quantization)
        self.down: Linear = make_linear(t("mlp.down_proj.weight"), None, quantization)
        self.input_norm = t("input_layernorm.weight", act_dtype)
        self.post_norm = t("post_attention_layernorm.weight", act_dtype)
        self.q_size = spec.num_heads * spec.head_dim
        self.kv_size = spec.num_kv_heads * spec.head_dim
        self.inter = gate.shape[0]

    def to(self, device: torch.device) -> None:
        for name in ("q_norm", "k_norm", "input_norm", "post_norm"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        mlp = (self.gate, self.up) if self.split_mlp else (self.gate_up,)
        for lin in (self.qkv, self.o, *mlp, self.down):
            lin.to(device)


class CausalLM:
    """Weights plus a forward over a step's flattened tokens; returns last-token logits."""

    def __init__(self, model_dir: Path, dtype: torch.dtype, device: torch.device,
                 quantization: str | None = None):
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        self.spec, self.hf_config = load_spec(model_dir)
        spec = self.spec
        w = read_weights(model_dir)
        self.dtype, self.device = dtype, device
        # Weights and KV cache are stored in DTYPE. A CPU without bf16/fp16 math computes in
        # fp32 instead (8x faster on AVX2 than PyTorch's emulated bf16 kernels).
        self.act_dtype = (torch.float32 if device.type == "cpu" and dtype != torch.float32
                          and not native_bf16_cpu() else dtype)
        self.embed = w.pop("model.embed_tokens.weight").to(dtype)
        head = w.pop("lm_head.weight", None)
        if head is None or spec.tie_word_embeddings:
            head = self.embed
        # The LM head stays unquantized: it decides the greedy token.
        self.lm_head = make_linear(head.to(dtype), None, None)
        self.norm = w.pop("model.norm.weight").to(self.act_dtype)
        self.layers = [Layer(w, f"model.layers.{i}.", spec, dtype, quantization, self.act_dtype,
                             device) for i in range(spec.num_layers)]
        # cos/sin tables from transformers' own rotary module (covers every rope_type it knows).
        rope = LlamaRotaryEmbedding(self.hf_config)
        pos = torch.arange(spec.max_position_embeddings)[None]
        cos, sin = rope(torch.zeros(1, dtype=self.act_dtype), pos)
        self.cos, self.sin = cos[0, :, None, :], sin[0, :, None, :]
        self.to(device)

    def to(self, device: torch.device) -> None:
        self.embed, self.norm = self.embed.to(device), self.norm.to(device)
        self.cos, self.sin = self.cos.to(device), self.sin.to(device)
        self.lm_head.to(device)
        for layer in self.layers:
            layer.to(device)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta: AttentionMetadata,
                logits_indices: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        eps, d = spec.rms_norm_eps, spec.head_dim
        heads, kv_heads = spec.num_heads, spec.num_kv_heads
        n = input_ids.shape[0]
        h = F.embedding(input_ids, self.embed).to(self.act_dtype)
        cos, sin = self.cos[positions], self.sin[positions]
        for layer, (k_cache, v_cache) in zip(self.layers, kv_caches, strict=True):
            x = rms_norm(h, layer.input_norm, eps)
            qkv = layer.qkv(x)
            qk = qkv[:, :layer.q_size + layer.kv_size].view(n, heads + kv_heads, d)
            if layer.q_norm is not None:
                qk = torch.cat([rms_norm(qk[:, :heads], layer.q_norm, eps),
                                rms_norm(qk[:, heads:], layer.k_norm, eps)], dim=1)
            qk = rotate(qk, cos, sin)  # q and k heads in one call
            q, k = qk[:, :heads], qk[:, heads:]
            v = qkv[:, layer.q_size + layer.kv_size:].view(n, kv_heads, d)
            o = paged_attention(q, k, v, k_cache, v_cache, meta)
            h = layer.o.add(o.reshape(n, layer.q_size), h)
            x = rms_norm(h, layer.post_norm, eps)
            if layer.split_mlp:
                act = layer.up.mul(x, layer.gate.silu(x))
            else:
                gate_up = layer.gate_up(x)
                act = F.silu(gate_up[:, :layer.inter]) * gate_up[:, layer.inter:]
            h = layer.down.add(act, h)
        h = rms_norm(h[logits_indices], self.norm, eps)
        return self.lm_head(h).float()
