"""`servecat loadgen`'s flags, checked where they are parsed: a bad value is one line naming
the flag (exit 2), never a traceback from the layer below."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from cli.commands.checks import MAX_SEED, check_writable

if TYPE_CHECKING:
    from bench.endpoint import Endpoint
    from bench.profiles import Profile
    from bench.tokens import Tokenizer
    from bench.workload import Workload



class FinitePositive(click.ParamType):
    """A float > 0 that is not inf or NaN (click.FloatRange lets NaN through)."""

    name = "number"

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(number) and number > 0):
            self.fail(f"must be a finite number > 0, got {value!r}", param, ctx)
        return number


def _url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    u = urlsplit(value)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL with a host "
                                 "(e.g. http://127.0.0.1:8000/v1)", ctx, param)
    try:
        u.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from None
    return value


def _json_object(ctx: click.Context, param: click.Parameter, value: str) -> dict:
    try:
        body = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{value!r} is not JSON ({exc})", ctx, param) from None
    if not isinstance(body, dict):
        raise click.BadParameter(f"{value!r} is not a JSON object ({{...}})", ctx, param)
    return body


POSITIVE = FinitePositive()

LOAD_OPTIONS: list[Callable] = [
    click.option("--url", callback=_url,
                 help="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1."),
    click.option("--model", help="Model name sent in requests."),
    click.option("--tokenizer", help="Tokenizer folder, file or Hugging Face id (default: --model)."),
    click.option("--concurrency", type=click.IntRange(min=1), help="Closed loop: requests in flight."),
    click.option("--rate", type=POSITIVE, help="Open loop: requests per second."),
    click.option("--arrival", type=click.Choice(["constant", "poisson", "gamma"]),
                 default="poisson", show_default=True),
    click.option("--burstiness", type=POSITIVE, default=1.0, show_default=True,
                 help="Gamma shape (1 = Poisson, < 1 burstier)."),
    click.option("--max-concurrency", type=click.IntRange(min=1),
                 help="Open loop: cap on requests in flight."),
    click.option("--requests", type=click.IntRange(min=1), default=100, show_default=True),
    click.option("--duration", "duration_s", type=POSITIVE, help="Stop after this many seconds."),
    click.option("--warmup", "warmup_requests", type=click.IntRange(min=0), default=0,
                 show_default=True),
    click.option("--input-tokens", default="128", show_default=True,
                 help="N | uniform:MIN:MAX | normal:MEAN:STD[:MIN:MAX]"),
    click.option("--output-tokens", default="128", show_default=True, help="Same forms as --input-tokens."),
    click.option("--shared-prefix", "shared_prefix_tokens", type=click.IntRange(min=0), default=0,
                 show_default=True),
    click.option("--api", type=click.Choice(["completions", "chat"]), default="completions",
                 show_default=True),
    click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="JSONL conversations instead of synthetic prompts."),
    click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True),
    click.option("--profiles", "profiles_path",
                 type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Profiles YAML (default configs/profiles.yaml)."),
    click.option("--extra-body", default="{}", callback=_json_object,
                 help='JSON object merged into each request, e.g. \'{"ignore_eos": true}\'.'),
    click.option("--timeout", "total_timeout_s", type=POSITIVE, default=600.0, show_default=True,
                 help="Seconds for a whole request."),
    click.option("--realtime", is_flag=True, help="Run the client at real-time priority where allowed."),
    click.option("--progress/--no-progress", default=True, show_default=True),
]


def load_options(fn: Callable) -> Callable:
    for option in reversed(LOAD_OPTIONS):
        fn = option(fn)
    return fn


@dataclass
class Setup:
    """What every loadgen command runs with, checked before the first request."""

    endpoint: Endpoint
    workload: Workload
    tokenizer: Tokenizer
    profiles: list[Profile]
    run_kwargs: dict


def setup(opts: dict) -> Setup:
    """The endpoint, workload, tokenizer and profiles of OPTS, or a UsageError naming the flag."""
    from bench.endpoint import Endpoint
    from bench.errors import WorkloadError
    from bench.workload import Workload, parse_length_spec

    if not opts["url"] or not opts["model"]:
        raise click.UsageError("--url and --model are required")
    if opts["concurrency"] is not None and opts["rate"] is not None:
        raise click.UsageError("give --concurrency or --rate, not both")
    try:
        lengths = {**parse_length_spec(opts["input_tokens"], "input"),
                   **parse_length_spec(opts["output_tokens"], "output")}
        load = "rate" if opts["rate"] is not None else "concurrency"
        workload = Workload(
            lengths="cli", **lengths, load=load,
            concurrency=opts["concurrency"] or (None if load == "rate" else 1),
            rate=opts["rate"], arrival=opts["arrival"], burstiness=opts["burstiness"],
            max_concurrency=opts["max_concurrency"], requests=opts["requests"],
            duration_s=opts["duration_s"], warmup_requests=opts["warmup_requests"],
            shared_prefix_tokens=opts["shared_prefix_tokens"], api=opts["api"], seed=opts["seed"])
    except WorkloadError as exc:
        raise _flag_error(str(exc)) from None
    endpoint = Endpoint(opts["url"], opts["model"], total_timeout_s=opts["total_timeout_s"],
                        extra_body=opts["extra_body"])
    run_kwargs = {"progress": opts["progress"] and sys.stderr.isatty(), "dataset": opts["dataset"],
                  "realtime": opts["realtime"]}
    return Setup(endpoint, workload, _tokenizer(opts), _profiles(opts["profiles_path"]), run_kwargs)


# Workload field (as a WorkloadError names it) -> the flag that sets it.
_FLAGS = {"input": "--input-tokens", "output": "--output-tokens", "duration_s": "--duration",
          "warmup_requests": "--warmup", "shared_prefix_tokens": "--shared-prefix"}


def _flag_error(message: str) -> click.UsageError:
    """A workload's error (`workload 'cli': input_min/input_max: why`) as one naming the flag."""
    m = re.match(r"workload '[^']*': (\w+)[^:]*: (.*)", message)
    if not m:
        return click.UsageError(message)
    field = m.group(1)
    flag = _FLAGS.get(field.split("_")[0]) or _FLAGS.get(field) or "--" + field.replace("_", "-")
    return click.BadParameter(m.group(2), param_hint=f"'{flag}'")


def _tokenizer(opts: dict) -> Tokenizer:
    from bench.tokens import Tokenizer, TokenizerError

    try:
        return Tokenizer(opts["tokenizer"] or opts["model"])
    except TokenizerError as exc:
        hint = "" if opts["tokenizer"] else " (--tokenizer defaults to --model: give the model's folder)"
        raise click.BadParameter(f"{exc}{hint}", param_hint="'--tokenizer'") from None


def _profiles(path: Path | None) -> list[Profile]:
    from bench.errors import WorkloadError
    from bench.profiles import load_profiles

    try:
        return load_profiles(path)
    except WorkloadError as exc:
        raise click.BadParameter(str(exc), param_hint="'--profiles'") from None


def check_output(path: Path | None, flag: str) -> None:
    """PATH (when given) can be written: found out before the run, not after it."""
    if path is not None:
        check_writable(path, flag)


def write_file(path: Path, flag: str, write: Callable[[Path], None]) -> None:
    """WRITE(PATH), an OSError becoming one line that names FLAG."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise click.ClickException(f"{flag} {str(path)!r}: cannot write: "
                                   f"{exc.strerror or exc}") from None
