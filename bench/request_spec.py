"""The matrix spec of a benchmark request: a model plus overrides on a template spec.

A request comes from outside (the catalog API), so it is checked before anything is built: the
overrides against the matrix spec's schema, no field may name a file on the server, and the
matrix is capped. A rejection reason is read by the requester: it never shows a server path.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import yaml

from bench.matrix import Expansion, check_size, expand_file
from bench.spec import MatrixSpec, bad_number, check_hardware, shown, validate_spec
from servecat.errors import SpecError

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
# Most candidate configs one request may ask for: each deployment becomes a partition and a run.
MAX_REQUEST_CONFIGS = 20_000
# Overrides that would make the server read a file the requester names, or replace the model.
REFUSED_OVERRIDES = {
    "extends": "refused: a request cannot name spec files on the server",
    "hardware_table": "refused: a request cannot name files on the server (the server's "
                      "hardware table is used)",
    "models": "refused: the request's `model` is its only model; give its fields under `model`",
}
SHAPE_KEYS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
              "vocab_size")
_ARG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:~|[A-Za-z]:)?[/\\][^\s'\",;()]*")
MAX_REASON = 500


class RequestError(ValueError):
    """Why a benchmark request cannot be accepted, naming the field (`matrix_overrides.x.y`)."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def check_model(model: object) -> None:
    """MODEL is a non-blank Hugging Face id or local path that cannot pass for a command-line
    option or carry control characters onto an engine's command line."""
    if not isinstance(model, str) or not model.strip():
        raise RequestError("model", "must be a non-empty string (a Hugging Face id or a local path)")
    if model.strip().startswith("-"):
        raise RequestError("model", f"{shown(model)} must not start with '-'")
    if any(ord(c) < 32 or ord(c) == 127 for c in model):
        raise RequestError("model", "must not contain control characters")


def check_overrides(overrides: object) -> None:
    """OVERRIDES is a mapping naming no server file, with no huge or non-finite number."""
    if not isinstance(overrides, dict):
        raise RequestError("matrix_overrides", "must be a mapping of matrix spec fields")
    for key, why in REFUSED_OVERRIDES.items():
        if key in overrides:
            raise RequestError(f"matrix_overrides.{key}", why)
    model = overrides.get("model", {})
    if not isinstance(model, dict):
        raise RequestError("matrix_overrides.model", "must be a mapping of model fields "
                                                     "(e.g. parameters, layers)")
    if "id" in model:
        raise RequestError("matrix_overrides.model.id", "refused: the request's `model` is the "
                                                        "model; a request cannot name other paths")
    bad = bad_number(overrides)
    if bad:
        raise RequestError(f"matrix_overrides.{bad[0]}", bad[1])
    _check_engine_args(overrides.get("engines"))


def _check_engine_args(engines: object) -> None:
    """Engine args may one day reach an engine's command line: plain names, and no value that
    reads as a path or an option."""
    for i, engine in enumerate(engines if isinstance(engines, list) else []):
        args = engine.get("args") if isinstance(engine, dict) else None
        for key, values in (args.items() if isinstance(args, dict) else []):
            where = f"matrix_overrides.engines[{i}].args.{key}"
            if not _ARG_NAME.match(key):
                raise RequestError(where, "an engine arg name is lower-case letters, digits and _")
            for j, v in enumerate(values if isinstance(values, list) else []):
                if isinstance(v, str) and (v.startswith(("/", "~", "-", ".")) or "\\" in v
                                           or ".." in v):
                    raise RequestError(f"{where}[{j}]", "refused: a request cannot name paths "
                                                        "or options on the server")


def check_request(model: str, overrides: dict, template: Path = DEFAULT_TEMPLATE,
                  max_configs: int = MAX_REQUEST_CONFIGS) -> MatrixSpec:
    """The request's spec, valid against the schema and the server's hardware table and with at
    most MAX_CONFIGS candidate configs (counted, not built); else a RequestError."""
    from servecat.hardware import load_hardware

    check_model(model)
    check_overrides(overrides)
    try:
        spec = validate_spec(request_spec("check", model.strip(), overrides, template), "request")
        table_path = spec.hardware_table and str(Path(template).parent / spec.hardware_table)
        table = load_hardware(table_path)
        check_hardware(spec, table, "request")
        check_size(spec, table, "request", max_configs)
    except SpecError as exc:
        raise RequestError(_override_field(exc.path), exc.message) from None
    return spec


def _override_field(path: str) -> str:
    """A spec field as the override that set it: models[0].layers -> matrix_overrides.model.layers."""
    if path.startswith("models[0]"):
        path = "model" + path.removeprefix("models[0]")
    return f"matrix_overrides.{path}" if path else "matrix_overrides"


def model_problem(model: str) -> str | None:
    """Why MODEL cannot be benchmarked here, or None: a local path must be a folder whose
    config.json gives the model's shape. One message for every way that fails, so a reason
    never tells whether a server path exists."""
    try:
        if not (model.startswith((".", "/", "~")) or Path(model).exists()):
            return None  # a hub id: the spec must then state the model's shape (checked on expand)
        if _has_shape(Path(model) / "config.json"):
            return None
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        pass
    return (f"model {shown(model)} is neither a Hugging Face id nor a local model folder whose "
            f"config.json gives {', '.join(SHAPE_KEYS)}")


def _has_shape(config: Path) -> bool:
    try:
        cfg = json.loads(config.read_text())
        return all(isinstance(cfg[k], int) and cfg[k] > 0 for k in SHAPE_KEYS)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def public_reason(text: str) -> str:
    """TEXT as a reason the requester may read: absolute paths become <server path>, on one
    line of at most MAX_REASON characters."""
    text = _ABSOLUTE_PATH.sub("<server path>", " ".join(text.split()))
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


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
                   template: Path = DEFAULT_TEMPLATE,
                   max_configs: int = MAX_REQUEST_CONFIGS) -> tuple[Expansion | None, str | None]:
    """(expansion, None) for a valid request, else (None, the rejection reason)."""
    try:
        check_request(model, overrides, template, max_configs)
    except RequestError as exc:
        return None, public_reason(str(exc))
    problem = model_problem(model)
    if problem:
        return None, problem
    path = Path(folder) / f"{request_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(request_spec(request_id, model, overrides, template), sort_keys=False))
    try:
        return expand_file(path, max_configs=max_configs), None
    except SpecError as exc:
        where = f"{_override_field(exc.path)}: " if exc.path else ""
        return None, public_reason(where + exc.message)
