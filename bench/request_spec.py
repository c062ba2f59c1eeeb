"""The matrix spec of a benchmark request: a model plus overrides on a template spec."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from bench.matrix import Expansion, expand_file
from servecat.errors import SpecError

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def model_problem(model: str) -> str | None:
    """Why MODEL cannot be benchmarked here, or None: a local path must hold a readable config."""
    path = Path(model)
    looks_local = model.startswith((".", "/", "~")) or path.exists()
    if not looks_local:
        return None  # a hub id: the spec must then state the model's shape (checked on expand)
    if not path.is_dir():
        return f"model path {model} does not exist"
    config = path / "config.json"
    if not config.exists():
        return f"model path {model} has no config.json"
    try:
        import json

        cfg = json.loads(config.read_text())
        for key in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
            cfg[key]
    except (ValueError, KeyError) as exc:
        return f"{config} is not a readable model config ({exc})"
    return None


def request_spec(request_id: str, model: str, overrides: dict, template: Path = DEFAULT_TEMPLATE) -> dict:
    """TEMPLATE with MODEL as its only model; top-level OVERRIDES replace template keys, and
    `overrides["model"]` (a mapping) adds fields to the model entry (e.g. its shape)."""
    spec = yaml.safe_load(Path(template).read_text())
    overrides = copy.deepcopy(overrides)
    entry = {"id": model, "name": re.sub(r"[^A-Za-z0-9._-]+", "-", model.rstrip("/").split("/")[-1])}
    entry |= overrides.pop("model", None) or {}
    spec |= overrides
    spec["models"] = [entry]
    spec["name"] = re.sub(r"[^a-z0-9_-]+", "-", f"request-{request_id}".lower())
    return spec


def expand_request(request_id: str, model: str, overrides: dict, folder: Path,
                   template: Path = DEFAULT_TEMPLATE) -> tuple[Expansion | None, str | None]:
    """(expansion, None) for a valid request, else (None, the rejection reason)."""
    problem = model_problem(model)
    if problem:
        return None, problem
    if not isinstance(overrides, dict) or ("model" in overrides and not isinstance(overrides["model"], dict)):
        return None, "matrix_overrides must be a mapping (and its `model` a mapping)"
    path = Path(folder) / f"{request_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(request_spec(request_id, model, overrides, template), sort_keys=False))
    try:
        return expand_file(path), None
    except SpecError as exc:
        return None, str(exc)
