"""The matrix spec: a YAML file validated with pydantic, every error naming file and field."""

from __future__ import annotations

import json
import math
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servecat.engines import ENGINES, QUANTIZATIONS
from servecat.errors import SpecError, format_loc, from_validation_error

# Hostile input: an 800-byte YAML alias bomb expands to hundreds of millions of nodes, so a spec
# may hold at most MAX_YAML_NODES nodes counting every alias at its full size, nested at most
# MAX_YAML_DEPTH deep.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64
# Integers beyond 2**53 lose precision in JSON clients (beyond 2**63 they overflow int64 columns).
MAX_INT = 2**53
MAX_SHOWN = 200  # characters of an input value echoed back in an error message

Quantization = Literal["fp32", "bf16", "fp16", "int8", "int4"]
EngineName = Literal["builtin", "vllm", "runpod", "openai", "tgi", "lmdeploy", "sglang"]
assert set(Quantization.__args__) == set(QUANTIZATIONS) and set(EngineName.__args__) == set(ENGINES)

Scalar = int | float | str | bool
# A capacity search stops once each profile's capacity is bracketed within 10%.
DEFAULT_SEARCH_PRECISION = 0.1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    """A model: a Hugging Face id with its shape, or a local path whose config.json gives it."""

    id: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    parameters: float | None = Field(default=None, gt=0)
    layers: int | None = Field(default=None, gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    max_context: int | None = Field(default=None, gt=0)
    quantizations: list[Quantization] | None = Field(default=None, min_length=1)

    @property
    def short_name(self) -> str:
        return self.name or self.id.rstrip("/").split("/")[-1]


class HardwareChoice(_Strict):
    """A GPU type from the hardware table and the GPU counts to try (default: all allowed)."""

    name: str
    counts: list[int] | None = Field(default=None, min_length=1)


class EngineSpec(_Strict):
    """An engine and its grid of engine args (each arg a list of values to sweep)."""

    name: EngineName
    args: dict[str, list[Scalar]] = Field(default_factory=dict)

    @field_validator("args")
    @classmethod
    def _non_empty(cls, args: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        for key, values in args.items():
            if not values:
                raise ValueError(f"engine arg {key!r} has no values")
        for key in ("max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size"):
            for v in args.get(key, []):
                if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                    raise ValueError(f"{key} values must be positive integers, got {v!r}")
        return args


class Lengths(_Strict):
    """A token-length distribution: fixed, uniform [min, max], or normal clipped to [min, max]."""

    dist: Literal["fixed", "uniform", "normal"] = "fixed"
    tokens: int | None = Field(default=None, gt=0)
    min: int | None = Field(default=None, gt=0)
    max: int | None = Field(default=None, gt=0)
    std: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> Lengths:
        if self.dist == "fixed" and self.tokens is None:
            raise ValueError("a fixed length needs tokens (> 0)")
        if self.dist == "uniform" and (self.min is None or self.max is None):
            raise ValueError("a uniform length needs min and max")
        if self.dist == "normal" and (self.tokens is None or self.std <= 0):
            raise ValueError("a normal length needs tokens (the mean) and std > 0")
        lo, hi = self.bounds()
        if lo > hi:
            raise ValueError(f"min {lo} is above max {hi}")
        return self

    def bounds(self) -> tuple[int, int]:
        """(min, max) tokens this distribution can produce."""
        if self.dist == "fixed":
            return self.tokens, self.tokens
        lo = self.min if self.min is not None else 1
        hi = self.max if self.max is not None else int(self.tokens + 4 * self.std)
        return lo, hi

    def mean(self) -> int:
        lo, hi = self.bounds()
        return self.tokens if self.tokens is not None else (lo + hi) // 2


def _lengths(value: object) -> object:
    return {"dist": "fixed", "tokens": value} if isinstance(value, int) and not isinstance(value, bool) else value


class LengthProfile(_Strict):
    """Prompt and output length profile of a workload (e.g. chat, summarization)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    input_tokens: Lengths
    output_tokens: Lengths
    api: Literal["completions", "chat"] = "completions"
    shared_prefix_tokens: int = Field(default=0, ge=0)

    @field_validator("input_tokens", "output_tokens", mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise ValueError(f"must be > 0 tokens, got {value}")
        return _lengths(value)


class LoadSpec(_Strict):
    """Load levels: closed-loop concurrencies and/or open-loop rates (requests/s), or a capacity
    search: `search: rate` (or `concurrency`) between `min` and `max`, bisected at run time until
    each profile named in `slo` has its capacity bracketed within `precision` (default 10%)."""

    concurrency: list[int] = Field(default_factory=list)
    rate: list[float] = Field(default_factory=list)
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)
    search: Literal["concurrency", "rate"] | None = None
    min: float | None = Field(default=None, gt=0)
    max: float | None = Field(default=None, gt=0)
    slo: list[str] = Field(default_factory=list)
    precision: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _some_level(self) -> LoadSpec:
        if self.search is not None:
            return self._a_search()
        given = [k for k in ("min", "max", "precision") if getattr(self, k) is not None]
        given += ["slo"] if self.slo else []
        if given:
            raise ValueError(f"{', '.join(given)}: only for a capacity search (add `search: rate` "
                             f"or `search: concurrency`)")
        if not self.concurrency and not self.rate:
            raise ValueError("a load needs concurrency or rate values, or a capacity search "
                             "(search: rate or concurrency, with min, max and slo)")
        if any(c <= 0 for c in self.concurrency):
            raise ValueError("concurrency values must be > 0")
        if any(r <= 0 for r in self.rate):
            raise ValueError("rate values must be > 0")
        return self

    def _a_search(self) -> LoadSpec:
        kind = self.search
        if self.concurrency or self.rate:
            raise ValueError(f"search: {kind} takes min and max, not concurrency or rate lists "
                             f"(put fixed levels in a load of their own)")
        missing = [k for k in ("min", "max") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"search: {kind} needs {' and '.join(missing)} (the load range)")
        if kind == "concurrency":
            for k in ("min", "max"):
                if not float(getattr(self, k)).is_integer():
                    raise ValueError(f"search: concurrency needs an integer {k}, "
                                     f"got {getattr(self, k):g}")
        if self.min >= self.max:
            raise ValueError(f"search: {kind}: min {self.min:g} is not below max {self.max:g}")
        if not self.slo:
            raise ValueError(f"search: {kind} needs slo: the profiles whose capacity it "
                             f"brackets (e.g. [interactive, server])")
        for i, name in enumerate(self.slo):
            if self.slo.index(name) != i:
                raise ValueError(f"search: {kind}: slo names {name!r} twice")
        return self

    @property
    def search_precision(self) -> float:
        """The bracket a search stops at: fail / pass <= 1 + precision."""
        return DEFAULT_SEARCH_PRECISION if self.precision is None else self.precision


class WorkloadsSpec(_Strict):
    """Length profiles × load levels, each run for `requests` requests after warm-up."""

    lengths: list[LengthProfile] = Field(min_length=1)
    loads: list[LoadSpec] = Field(min_length=1)
    requests: int = Field(gt=0)
    duration_s: float | None = Field(default=None, gt=0)
    warmup_requests: int = Field(default=0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _closed_loops_fit_the_requests(self) -> WorkloadsSpec:
        # A closed loop of N requests never has more than N in flight: a level above N would
        # be measured as N under another name (a validation matrix once "passed" concurrency 16
        # with 8 requests a probe, a capacity it never measured).
        for i, load in enumerate(self.loads):
            top = load.max if load.search == "concurrency" else max(load.concurrency, default=0)
            if top and top > self.requests:
                raise ValueError(
                    f"loads[{i}]: concurrency {top:g} is above requests ({self.requests}): a "
                    f"closed loop of {self.requests} requests never has more in flight; raise "
                    f"requests to at least {top:g} or lower the concurrency")
        return self


ExcludeValue = Scalar | list[Scalar]
RULE_KEYS = ("model", "hardware", "gpu_count", "engine", "quantization", "tensor_parallel_size",
             "lengths", "load", "concurrency", "rate")


class ExcludeRule(_Strict):
    """Exclude every config matching all the given fields (a list matches any of its values)."""

    model: ExcludeValue | None = None
    hardware: ExcludeValue | None = None
    gpu_count: ExcludeValue | None = None
    engine: ExcludeValue | None = None
    quantization: ExcludeValue | None = None
    tensor_parallel_size: ExcludeValue | None = None
    lengths: ExcludeValue | None = None
    load: ExcludeValue | None = None
    concurrency: ExcludeValue | None = None
    rate: ExcludeValue | None = None
    reason: str = ""

    def conditions(self) -> dict[str, list[Scalar]]:
        out = {}
        for key in RULE_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value if isinstance(value, list) else [value]
        return out

    @model_validator(mode="after")
    def _not_empty(self) -> ExcludeRule:
        if not self.conditions():
            raise ValueError("an exclusion rule needs at least one field to match")
        return self


class MatrixSpec(_Strict):
    """The whole test matrix: models × hardware × engines × quantizations × workloads."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    hardware_table: str | None = None
    memory_utilization: float = Field(default=0.9, gt=0, le=1)
    models: list[ModelSpec] = Field(min_length=1)
    hardware: list[HardwareChoice] = Field(min_length=1)
    engines: list[EngineSpec] = Field(min_length=1)
    quantizations: list[Quantization] = Field(min_length=1)
    workloads: WorkloadsSpec
    exclude: list[ExcludeRule] = Field(default_factory=list)

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware_short_form(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """repr(VALUE) cut to LIMIT characters: what an error message may echo of an input."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _short_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # Python 3.11 takes no keyword arguments here
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, MAX_SHOWN, MAX_SHOWN, 40
    return r


_REPR = _short_repr()


class _SpecTooBig(yaml.YAMLError):
    """A YAML document over the node or depth budget (e.g. an alias bomb)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses recursive aliases, nesting deeper than MAX_YAML_DEPTH and documents
    that expand (aliases at their full size) to more than MAX_YAML_NODES nodes."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._open: list[str | None] = []  # anchors of the nodes being composed, outermost first

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self._open:
            raise _SpecTooBig(f"recursive alias *{event.anchor}")
        if len(self._open) >= MAX_YAML_DEPTH:
            raise _SpecTooBig(f"nested deeper than {MAX_YAML_DEPTH} levels")
        self._open.append(getattr(event, "anchor", None))
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.pop()

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_nodes(node) > MAX_YAML_NODES:
            raise _SpecTooBig(f"expands to more than {MAX_YAML_NODES:,} nodes (aliases counted "
                              f"at their full size)")
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of ROOT with every alias expanded, counted over the (acyclic) node graph."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        if ready:
            sizes[id(node)] = 1 + sum(sizes[id(k)] for k in _children(node))
        else:
            stack.append((node, True))
            stack += [(k, False) for k in _children(node) if id(k) not in sizes]
    return sizes[id(root)]


def load_spec_yaml(path: str | Path) -> object:
    """Parse the YAML file at PATH within the node and depth budgets; every problem is a
    SpecError naming the file (unreadable, not UTF-8, malformed, too big)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except _SpecTooBig as exc:
        raise SpecError(str(path), "", f"refused YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(str(path), "", f"malformed YAML: {where}{problem}") from None


def bad_number(raw: object) -> tuple[str, str] | None:
    """(field path, why) of the first integer beyond ±MAX_INT or non-finite float in RAW."""
    stack: list[tuple[tuple, object]] = [((), raw)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            stack += [((*loc, str(k)), v) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            stack += [((*loc, i), v) for i, v in reversed(list(enumerate(value)))]
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            return format_loc(loc), f"integer {shown(value)} is too large (at most 2**53)"
        elif isinstance(value, float) and not math.isfinite(value):
            return format_loc(loc), f"must be a finite number, got {value}"
    return None


class _ShortInputs:
    """A ValidationError whose first error echoes at most MAX_SHOWN characters of its input."""

    def __init__(self, exc: ValidationError):
        self.exc = exc

    def errors(self) -> list[dict[str, Any]]:
        err = dict(self.exc.errors(include_url=False)[0])
        if "input" in err:
            err["input"] = _Shown(err["input"])
        return [err]


class _Shown:
    def __init__(self, value: object):
        self.text = shown(value)

    def __repr__(self) -> str:
        return self.text


def validate_spec(raw: object, source: str) -> MatrixSpec:
    """RAW (parsed YAML or JSON) as a MatrixSpec; a SpecError names SOURCE and the field."""
    if not isinstance(raw, dict):
        raise SpecError(source, "", "a matrix spec must be a mapping at the top level")
    bad = bad_number(raw)
    if bad:
        raise SpecError(source, *bad)
    try:
        return MatrixSpec.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(source, _ShortInputs(exc)) from None


def check_hardware(spec: MatrixSpec, table: dict, source: str) -> None:
    """Every hardware choice of SPEC names a type in TABLE with GPU counts it offers."""
    for i, choice in enumerate(spec.hardware):
        if choice.name not in table:
            raise SpecError(source, f"hardware[{i}].name",
                            f"unknown hardware {shown(choice.name)}: choose from {', '.join(table)}")
        for count in choice.counts or []:
            if count not in table[choice.name].counts:
                allowed = ", ".join(map(str, table[choice.name].counts))
                raise SpecError(source, f"hardware[{i}].counts",
                                f"{count} GPUs is not offered for {choice.name} (allowed: {allowed})")


def _read_model_config(model: ModelSpec, base: Path, where: str, source: str) -> ModelSpec:
    """Fill a local model's shape from its config.json; an HF id must state it."""
    missing = [f for f in ("parameters", "layers", "kv_heads", "head_dim")
               if getattr(model, f) is None]
    if not missing:
        return model
    path = Path(model.id) if Path(model.id).is_absolute() else base / model.id
    config_file = path / "config.json"
    if not config_file.exists():
        raise SpecError(source, f"{where}.{missing[0]}",
                        f"required for {shown(model.id)}: it is not a local model directory "
                        f"with a config.json (looked in {path})")
    try:
        cfg = json.loads(config_file.read_text())
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        layers, inter, vocab = cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
        if not all(isinstance(v, int) and v > 0 for v in (hidden, heads, layers, inter, vocab)):
            raise ValueError("shape fields must be positive integers")
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise SpecError(source, where, f"cannot read shape from {config_file}: {exc}") from None
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or hidden // heads
    attn = hidden * head_dim * (2 * heads + 2 * kv_heads)
    per_layer = attn + 3 * hidden * inter + 2 * hidden
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    filled = {"parameters": float(layers * per_layer + embed + hidden), "layers": layers,
              "kv_heads": kv_heads, "head_dim": head_dim,
              "max_context": cfg.get("max_position_embeddings")}
    return model.model_copy(update={k: v for k, v in filled.items() if getattr(model, k) is None})


def _with_base(path: Path, raw: object, source: str, depth: int = 0) -> dict:
    """`extends: base.yaml` (relative to the spec): the base's top-level keys, overridden."""
    if not isinstance(raw, dict):
        raise SpecError(source, "", "a matrix spec must be a mapping at the top level")
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or depth > 4:
        raise SpecError(source, "extends", "must name one spec file (at most 5 levels deep)")
    base_path = path.parent / base_name
    if not base_path.exists():
        raise SpecError(source, "extends", f"{base_path} not found")
    return _with_base(base_path, load_spec_yaml(base_path), str(base_path), depth + 1) | raw


def _check_unique(names: list[str], source: str, where: str, what: str) -> None:
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise SpecError(source, where.format(i), f"duplicate {what} {shown(name)}")


def load_spec(path: str | Path) -> MatrixSpec:
    """Read and validate a matrix spec; every problem is a SpecError naming file and field."""
    from servecat.hardware import load_hardware

    path = Path(path)
    source = str(path)
    spec = validate_spec(_with_base(path, load_spec_yaml(path), source), source)
    table_path = spec.hardware_table
    if table_path and not Path(table_path).is_absolute():
        table_path = str(path.parent / table_path)
    check_hardware(spec, load_hardware(table_path), source)
    _check_unique([m.short_name for m in spec.models], source, "models[{}].name", "model name")
    base = Path.cwd()
    models = [_read_model_config(m, base, f"models[{i}]", source) for i, m in enumerate(spec.models)]
    _check_unique([lp.name for lp in spec.workloads.lengths], source,
                  "workloads.lengths[{}].name", "name")
    check_search_profiles(spec, source)
    return spec.model_copy(update={"models": models})


def check_search_profiles(spec: MatrixSpec, source: str, profiles_path: str | Path | None = None
                          ) -> None:
    """Every profile a capacity search names is in the profiles file the runs load."""
    if not any(load.search for load in spec.workloads.loads):
        return
    from servecat.profiles import DEFAULT_PROFILES, load_profiles

    path = profiles_path or DEFAULT_PROFILES
    known = [p.name for p in load_profiles(path, need_weights=False)]
    for i, load in enumerate(spec.workloads.loads):
        for j, name in enumerate(load.slo):
            if name not in known:
                raise SpecError(source, f"workloads.loads[{i}].slo[{j}]",
                                f"unknown profile {shown(name)} (profiles in {path}: "
                                f"{', '.join(known)})")
