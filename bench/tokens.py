"""The model's tokenizer: exact-length prompts before a run, output token counts after it.

A `tokenizer.json` is loaded with the light `tokenizers` library; anything else (an HF id, a
slow tokenizer) goes through `transformers.AutoTokenizer`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from bench.errors import WorkloadError


class TokenizerError(WorkloadError):
    """A tokenizer that cannot be loaded: says which source and why, in one line."""


class Tokenizer:
    """encode/decode without special tokens, over either backend."""

    def __init__(self, source: str | Path):
        self.source = str(source)
        path = Path(source)
        file = path / "tokenizer.json" if path.is_dir() else path
        if file.name == "tokenizer.json" and file.exists():
            from tokenizers import Tokenizer as FastTokenizer

            try:
                self._fast = FastTokenizer.from_file(str(file))
            except Exception as exc:  # the library's error is one long line of Rust
                raise TokenizerError(f"tokenizer {self.source!r}: {file} is not a valid "
                                     f"tokenizer.json ({_one_line(exc)})") from None
            self._hf = None
        else:
            self._fast = None
            self._hf = _auto_tokenizer(self.source, path)

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


def _looks_like_path(source: str) -> bool:
    """A name that can only be a file system path (a Hub id is `name` or `org/name`)."""
    return source.startswith(("/", "./", "../", "~", ".")) or source.count("/") > 1


def _auto_tokenizer(source: str, path: Path):
    """transformers.AutoTokenizer for SOURCE, or a TokenizerError saying why in one line (its
    own errors run to ~100 lines of traceback and Hub retries)."""
    if _looks_like_path(source) and not path.expanduser().exists():
        raise TokenizerError(f"tokenizer {source!r}: no such file or folder")
    from transformers import AutoTokenizer

    local = path.expanduser().exists()
    try:
        with _quiet_hub():
            return AutoTokenizer.from_pretrained(str(path.expanduser()) if local else source)
    except Exception as exc:  # OSError, ValueError, ... whatever the backend raises
        where = ("no tokenizer could be loaded from it" if local else
                 "not a local file or folder, and not loadable from the Hugging Face Hub")
        raise TokenizerError(f"tokenizer {source!r}: {where} ({_one_line(exc)})") from None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """No Hub retry warnings on stderr while loading: a failure becomes one TokenizerError."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """EXC as `Type: message` on one line of at most LIMIT characters."""
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(": ")
    return text if len(text) <= limit else text[:limit - 1] + "…"
