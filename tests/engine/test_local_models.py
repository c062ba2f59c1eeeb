"""Local test models: seeded, byte-identical, and loadable like any checkpoint."""

from __future__ import annotations

import hashlib
import json

from click.testing import CliRunner

from cli.main import main


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic(tmp_path, tiny_model):
    result = CliRunner().invoke(main, ["models", "build", "tiny", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "tokenizer.json", "config.json", "generation_config.json"):
        assert digest(tmp_path / "t" / name) == digest(tiny_model / name), name


def test_loads_through_from_pretrained(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    cfg = model.config
    assert cfg.model_type == "llama"
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    params = sum(p.numel() for p in model.parameters())
    assert 4e6 < params < 6e6
    ids = tok("def main(argv):\n    return os.path.join(argv[0], 'x')", return_tensors="pt")
    assert tok.decode(ids.input_ids[0]) == "def main(argv):\n    return os.path.join(argv[0], 'x')"
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.input_ids.shape[1] + 5
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                   add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert json.loads((tiny_model / "generation_config.json").read_text())["eos_token_id"] == \
        tok.eos_token_id
    assert torch.isfinite(model(ids.input_ids).logits).all()


def test_unknown_model_name_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["models", "build", "huge", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "'huge' is not one of" in result.output
