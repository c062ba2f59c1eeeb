"""The quality probe: what a deployment's model says about a fixed, versioned probe set, asked
through the OpenAI completions API over HTTP, so any OpenAI-compatible server can be probed.

Two kinds of items (bench/probes/<version>.json):
- passages, scored with prompt logprobs (`echo` + `logprobs`, max_tokens 1): every position's
  token and top-N logprobs, teacher-forced, so two deployments see the same contexts;
- prompts, continued greedily (temperature 0, `max_tokens` tokens) with their top-N logprobs.

A run keeps the raw outputs (one ProbeRecord per position); the quality columns are computed
from them afterwards by bench.quality_compare, against a reference chosen after the fact.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
import pyarrow as pa

PROBE_VERSION = "quality-v1"
PROBES = Path(__file__).parent / "probes"
# vLLM's request field for tokens as "token_id:<id>": exact keys even where two tokens decode to
# the same text. A server that refuses it is asked again without it (tokens are then texts).
AS_IDS = {"return_tokens_as_token_ids": True}


@dataclass(frozen=True, slots=True)
class ProbeSet:
    version: str
    passages: dict[str, str]  # id -> text scored by prompt logprobs
    prompts: dict[str, str]  # id -> text continued greedily
    max_tokens: int  # greedy tokens per prompt
    top_logprobs: int  # alternatives per position (5: what OpenAI's completions API allows)


def load_probe_set(version: str = PROBE_VERSION) -> ProbeSet:
    """The probe set shipped as bench/probes/VERSION.json."""
    data = json.loads((PROBES / f"{version}.json").read_text())
    return ProbeSet(data["version"], data["passages"], data["prompts"], data["max_tokens"],
                    data["top_logprobs"])


@dataclass(slots=True)
class ProbeRecord:
    """One position of one item: the token there, its logprob, and the top-N alternatives."""

    item: str
    kind: str  # passage | continuation
    position: int  # token index within the passage, or within the continuation
    token: str  # "token_id:<id>", or the token's text where the server cannot give ids
    logprob: float | None  # None: the passage's first token (nothing precedes it)
    top_tokens: list[str] = field(default_factory=list)
    top_logprobs: list[float] = field(default_factory=list)


@dataclass(slots=True)
class ProbeRun:
    """One deployment's raw probe outputs, or why there are none (status `skipped`)."""

    probe_version: str
    model: str
    deployment: str = ""
    status: str = "ok"  # ok | skipped (the server offers no logprobs)
    status_reason: str | None = None
    token_kind: str = "id"  # id | text: what ProbeRecord.token holds
    measured_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    records: list[ProbeRecord] = field(default_factory=list)

    def to_table(self) -> pa.Table:
        """One row per record, run columns repeated; a run without records keeps one row, so
        its status survives in the file."""
        run = {k: v for k, v in asdict(self).items() if k != "records"}
        rows = [{**run, **asdict(r)} for r in self.records] or [
            {**run, **dict.fromkeys(RECORD_FIELDS)}]
        return pa.Table.from_pylist(rows, schema=TABLE_SCHEMA)

    @classmethod
    def from_table(cls, table: pa.Table) -> ProbeRun:
        rows = table.to_pylist()
        run = {k: rows[0][k] for k in RUN_FIELDS}
        records = [ProbeRecord(**{k: r[k] for k in RECORD_FIELDS})
                   for r in rows if r["item"] is not None]
        return cls(**run, records=records)


RECORD_FIELDS = tuple(f.name for f in fields(ProbeRecord))
RUN_FIELDS = ("probe_version", "model", "deployment", "status", "status_reason", "token_kind",
              "measured_at")
TABLE_SCHEMA = pa.schema(
    [(f, pa.string()) for f in RUN_FIELDS]
    + [("item", pa.string()), ("kind", pa.string()), ("position", pa.int32()),
       ("token", pa.string()), ("logprob", pa.float64()), ("top_tokens", pa.list_(pa.string())),
       ("top_logprobs", pa.list_(pa.float64()))])


class NoLogprobs(Exception):
    """The server answered, but offers no logprobs (or no echo): the probe is skipped."""


class Prober:
    """Completions requests for the probe, one at a time (quality, not load, is measured)."""

    def __init__(self, base_url: str, model: str, headers: dict[str, str] | None,
                 timeout_s: float, transport: httpx.BaseTransport | None = None):
        self.url = f"{base_url.rstrip('/')}/completions"
        self.model, self.extra, self.first = model, dict(AS_IDS), True
        self.http = httpx.Client(headers=headers or {}, timeout=timeout_s, transport=transport)

    def ask(self, prompt: str, **kw) -> dict:
        """choices[0] of a completions reply with logprobs, and its usage."""
        body = {"model": self.model, "prompt": prompt, "temperature": 0, **kw, **self.extra}
        r = self.http.post(self.url, json=body)
        first, self.first = self.first, False
        if r.status_code == 400 and first and self.extra:  # perhaps the token-id field
            self.extra = {}  # for the whole run, so all its tokens are of one kind
            return self.ask(prompt, **kw)
        if r.status_code in (400, 404, 422):
            raise NoLogprobs(f"HTTP {r.status_code}: {r.text[:300]}")
        r.raise_for_status()
        data = r.json()
        choice = data["choices"][0]
        if not choice.get("logprobs") or not choice["logprobs"].get("tokens"):
            raise NoLogprobs("the reply has no logprobs")
        return {**choice, "usage": data.get("usage") or {}}


def _records(item: str, kind: str, lp: dict, start: int, stop: int) -> list[ProbeRecord]:
    out = []
    for i in range(start, stop):
        top = lp["top_logprobs"][i] or {}
        ranked = sorted(top.items(), key=lambda kv: -kv[1])
        out.append(ProbeRecord(item, kind, i - start, lp["tokens"][i], lp["token_logprobs"][i],
                               [t for t, _ in ranked], [v for _, v in ranked]))
    return out


def score_passage(prober: Prober, item: str, text: str, top: int) -> list[ProbeRecord]:
    """Prompt logprobs of TEXT: echo with max_tokens 1 (0 is not allowed everywhere)."""
    choice = prober.ask(text, max_tokens=1, logprobs=top, echo=True)
    lp = choice["logprobs"]
    n = choice["usage"].get("prompt_tokens")
    if n is None:  # no usage: the prompt's tokens are those that start inside its text
        n = sum(1 for off in lp["text_offset"] if off < len(text))
    return _records(item, "passage", lp, 0, n)


def continue_prompt(prober: Prober, item: str, text: str, max_tokens: int,
                    top: int) -> list[ProbeRecord]:
    """The greedy continuation of TEXT with its top logprobs."""
    choice = prober.ask(text, max_tokens=max_tokens, logprobs=top)
    return _records(item, "continuation", choice["logprobs"], 0,
                    len(choice["logprobs"]["tokens"]))


def run_probe(base_url: str, model: str, probe: ProbeSet | None = None,
              headers: dict[str, str] | None = None, deployment: str = "",
              timeout_s: float = 120.0, transport: httpx.BaseTransport | None = None) -> ProbeRun:
    """Probe the server at BASE_URL (like http://host:8000/v1) serving MODEL.

    A server without logprobs gives a `skipped` run with the reason; transport errors and 5xx
    raise (httpx.HTTPError), so nothing is recorded and a later run tries again.
    """
    probe = probe or load_probe_set()
    run = ProbeRun(probe.version, model, deployment)
    prober = Prober(base_url, model, headers, timeout_s, transport)
    try:
        for item, text in probe.passages.items():
            run.records += score_passage(prober, item, text, probe.top_logprobs)
        for item, text in probe.prompts.items():
            run.records += continue_prompt(prober, item, text, probe.max_tokens,
                                           probe.top_logprobs)
    except NoLogprobs as exc:
        run.status, run.status_reason = "skipped", f"no prompt logprobs from the server: {exc}"
        run.records = []
    finally:
        prober.http.close()
    run.token_kind = "id" if prober.extra and all(
        r.token.startswith("token_id:") for r in run.records) else "text"
    return run


# --- the deployment-run hook -------------------------------------------------------------

class Store(Protocol):
    """What the hook needs of a result store (resources.store.ResultStore has it)."""

    def exists(self, relpath: str) -> bool: ...

    def write_parquet(self, relpath: str, table: pa.Table) -> str: ...


def quality_path(deployment: str, version: str = PROBE_VERSION) -> str:
    return f"runs/quality/deployment={deployment}/{version}.parquet"


def probe_deployment(store: Store, deployment: str, base_url: str, model: str,
                     headers: dict[str, str] | None = None,
                     log: Callable[[str], None] = print) -> str | None:
    """Probe a running deployment once per probe version and write its raw outputs whole;
    None when they are already stored (a resumed run does not probe again)."""
    path = quality_path(deployment)
    if store.exists(path):
        return None
    run = run_probe(base_url, model, headers=headers, deployment=deployment)
    uri = store.write_parquet(path, run.to_table())
    log(f"quality probe {run.probe_version}: {run.status}"
        f"{': ' + run.status_reason if run.status_reason else ''} "
        f"({len(run.records)} positions) -> {uri}")
    return uri
