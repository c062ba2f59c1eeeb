"""Session-wide fixtures: one local test model built per test session, isolated homes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` random-weight Llama (GQA) with its tokenizer, built once per session."""
    from engine.local_models import build_model

    return build_model("tiny", tmp_path_factory.mktemp("models") / "tiny")
