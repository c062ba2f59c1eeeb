"""Greedy output equals Hugging Face `generate`, token for token, in fp32."""

from __future__ import annotations

import json

import pytest
from engine_helpers import NEW_TOKENS, hf_greedy, make_engine

from engine.sequence import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)


def outputs(engine, prompts):
    return [s.output_ids for s in engine.generate(prompts, GREEDY)]


@pytest.fixture(scope="module", params=["kernels", "torch"], autouse=True)
def kernel_mode(request):
    """Every case twice: with our CPU kernels (C decode attention, packed oneDNN linears) and
    with the plain PyTorch paths a machine without a C compiler (or CUDA) uses."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SERVECAT_ENGINE_KERNELS", "auto" if request.param == "kernels" else "torch")
        yield request.param


@pytest.fixture(scope="module")
def engine(tiny_model, kernel_mode):
    from engine import cpu_kernels

    engine = make_engine(tiny_model)
    # Without a C compiler both modes run the PyTorch path.
    assert engine.runner.paged_kernel == (kernel_mode == "kernels" and cpu_kernels.available())
    return engine


def test_single_requests(engine, prompts, hf_reference):
    for p, ref in zip(prompts[:4], hf_reference[:4], strict=True):
        assert outputs(engine, [p]) == [ref]
    assert engine.block_manager.is_whole()


def test_sixteen_at_once(engine, prompts, hf_reference):
    assert outputs(engine, prompts) == hf_reference
    assert engine.block_manager.is_whole()


def test_prefix_cache_hits(tiny_model, prompts, hf_reference):
    engine = make_engine(tiny_model)
    shared = prompts[0] * 3  # long common prefix: several full blocks
    variants = [shared + p for p in prompts[:6]]
    ref = hf_greedy(tiny_model, variants, NEW_TOKENS)
    assert outputs(engine, variants[:1]) == ref[:1]
    hits = engine.block_manager.prefix_hits
    assert outputs(engine, variants) == ref
    assert engine.block_manager.prefix_hits > hits + 5 * 16
    assert engine.block_manager.is_whole()


def test_chunked_prefill(tiny_model, prompts, hf_reference):
    engine = make_engine(tiny_model, max_num_batched_tokens=24)
    assert outputs(engine, prompts) == hf_reference
    assert engine.block_manager.is_whole()


def test_forced_preemption(tiny_model, prompts, hf_reference):
    # Room for about 3 sequences of ~45 tokens: the batch of 16 must preempt and recompute.
    engine = make_engine(tiny_model, kv_cache_memory=12 * 16 * 2 * 4 * 2 * 32 * 4,
                         enable_prefix_caching=False)
    assert engine.runner.num_blocks == 12
    assert outputs(engine, prompts) == hf_reference
    assert engine.scheduler.num_preemptions > 0
    assert engine.block_manager.is_whole()


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "mistral", "mistral-window"])
def test_other_architectures(arch, tmp_path, tiny_model, prompts):
    """Random Qwen2 / Qwen3 / Mistral checkpoints load from a local path and match HF;
    mistral-window has a sliding window shorter than prompt + output, so prefill, chunked
    prefill and decodes all attend to the last 8 positions only."""
    import shutil

    import torch
    from transformers import (
        AutoModelForCausalLM,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    base = json.loads((tiny_model / "config.json").read_text())
    common = dict(vocab_size=base["vocab_size"], hidden_size=128, intermediate_size=256,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, eos_token_id=base["eos_token_id"],
                  bos_token_id=base["bos_token_id"])
    config = {"qwen2": lambda: Qwen2Config(**common),  # q/k/v biases
              "qwen3": lambda: Qwen3Config(**common, head_dim=48),  # q/k norms, own head_dim
              "mistral": lambda: MistralConfig(**common, sliding_window=None),
              "mistral-window": lambda: MistralConfig(**common, sliding_window=8)}[arch]()
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config).eval()
    if arch == "qwen2":  # random init leaves biases at zero; make them matter
        for layer in model.model.layers:
            torch.nn.init.normal_(layer.self_attn.q_proj.bias, std=0.5)
            torch.nn.init.normal_(layer.self_attn.k_proj.bias, std=0.5)
    model.save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / f, tmp_path / f)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    ref = hf_greedy(tmp_path, prompts[:4], 12)
    engine = make_engine(tmp_path)
    assert [s.output_ids for s in engine.generate(prompts[:4], params)] == ref
    if arch == "mistral-window":
        assert max(len(p) for p in prompts[:4]) + 12 > 2 * 8
        assert engine.max_model_len == 512  # the window does not cap the context
        chunked = make_engine(tmp_path, max_num_batched_tokens=8)
        assert [s.output_ids for s in chunked.generate(prompts[:4], params)] == ref
