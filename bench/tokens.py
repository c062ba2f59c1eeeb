"""The model's tokenizer: exact-length prompts before a run, output token counts after it.

A `tokenizer.json` is loaded with the light `tokenizers` library; anything else (an HF id, a
slow tokenizer) goes through `transformers.AutoTokenizer`.
"""

from __future__ import annotations

from pathlib import Path


class Tokenizer:
    """encode/decode without special tokens, over either backend."""

    def __init__(self, source: str | Path):
        self.source = str(source)
        path = Path(source)
        file = path / "tokenizer.json" if path.is_dir() else path
        if file.name == "tokenizer.json" and file.exists():
            from tokenizers import Tokenizer as FastTokenizer

            self._fast = FastTokenizer.from_file(str(file))
            self._hf = None
        else:
            from transformers import AutoTokenizer

            self._fast = None
            self._hf = AutoTokenizer.from_pretrained(str(source))

    @property
    def vocab_size(self) -> int:
        return self._fast.get_vocab_size() if self._fast else len(self._hf)

    def encode(self, text: str) -> list[int]:
        if self._fast:
            return self._fast.encode(text, add_special_tokens=False).ids
        return self._hf.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._fast:
            return [e.ids for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        return [self._hf.encode(t, add_special_tokens=False) for t in texts]

    def count(self, texts: list[str]) -> list[int]:
        """Token counts of many texts."""
        return [len(ids) for ids in self.encode_batch(texts)] if texts else []

    def decode(self, ids: list[int]) -> str:
        if self._fast:
            return self._fast.decode(ids, skip_special_tokens=False)
        return self._hf.decode(ids, skip_special_tokens=False)

    def decode_batch(self, ids: list[list[int]]) -> list[str]:
        if self._fast:
            return self._fast.decode_batch(ids, skip_special_tokens=False)
        return [self.decode(i) for i in ids]
