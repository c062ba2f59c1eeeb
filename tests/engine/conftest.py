"""Engine fixtures: prompts, Hugging Face references, and a live HTTP server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # engine_helpers, importable by the tests
from engine_helpers import (  # noqa: E402
    NEW_TOKENS,
    PROMPT_TEXTS,
    LiveServer,
    hf_greedy,
    make_engine,
)


@pytest.fixture(scope="session")
def prompts(tiny_model: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    return [tok(t).input_ids for t in PROMPT_TEXTS]


@pytest.fixture(scope="session")
def hf_reference(tiny_model: Path, prompts: list[list[int]]) -> list[list[int]]:
    return hf_greedy(tiny_model, prompts, NEW_TOKENS)


@pytest.fixture(scope="module")
def live(tiny_model: Path) -> Iterator[LiveServer]:
    with LiveServer(make_engine(tiny_model, max_model_len=256)) as server:
        yield server
