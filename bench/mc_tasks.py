"""Multiple-choice task accuracy over the OpenAI completions API, scored the way
lm-evaluation-harness scores its log-likelihood tasks.

Each choice is a continuation of the item's question: the prompt `question + choice` is sent
with `echo` and `logprobs` (max_tokens 1, as bench.quality does), and the logprobs of the
prompt tokens that make up the choice are summed. The model's answer is the choice with the
highest sum (accuracy), or with the highest sum per character of the choice (length-normalised
accuracy, lm-eval's acc_norm). Any server that returns prompt logprobs can be scored; one that
does not gives a `skipped` run with the reason.

Which tokens make up the choice is read from `text_offset`, counted back from the end of the
prompt (the offset of the one generated token), so a BOS token the server adds in front does
not shift it: the choice's tokens are those starting at or after its first character.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow as pa

from bench.quality import PROBES, NoLogprobs, Prober

TASK_VERSION = "mc-v1"


@dataclass(frozen=True, slots=True)
class McItem:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices


@dataclass(frozen=True, slots=True)
class TaskSet:
    version: str
    prompt_template: str  # with {question}
    choice_prefix: str  # put before each choice (" ": the choice starts a new word)
    items: tuple[McItem, ...]

    def context(self, item: McItem) -> str:
        return self.prompt_template.format(question=item.question)

    def continuation(self, item: McItem, choice: int) -> str:
        return self.choice_prefix + item.choices[choice]


class TaskSetError(ValueError):
    """A task set file that is missing or malformed; the message names the problem."""


def load_task_set(version: str = TASK_VERSION, folder: Path = PROBES) -> TaskSet:
    """The task set shipped as bench/probes/VERSION.json, checked item by item."""
    path = folder / f"{version}.json"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("mc-*.json"))
        raise TaskSetError(f"no task set {version!r} in {folder} (have: {', '.join(have)})")
    data = json.loads(path.read_text())
    items = []
    for key, raw in data["items"].items():
        choices = tuple(raw["choices"])
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise TaskSetError(f"{path}: item {key!r} needs at least two non-empty choices")
        if not (isinstance(raw["answer"], int) and 0 <= raw["answer"] < len(choices)):
            raise TaskSetError(f"{path}: item {key!r} has answer {raw['answer']!r}, not an "
                               f"index into its {len(choices)} choices")
        items.append(McItem(key, raw["question"], choices, raw["answer"]))
    if not items:
        raise TaskSetError(f"{path}: no items")
    return TaskSet(data["version"], data["prompt_template"], data["choice_prefix"],
                   tuple(items))


@dataclass(slots=True)
class ChoiceScore:
    """One choice of one item: its summed logprob over the tokens that spell it."""

    item: str
    choice: int
    answer: int  # the item's right choice (repeated on each of its rows)
    logprob: float
    tokens: int
    chars: int


@dataclass(frozen=True, slots=True)
class ItemResult:
    item: str
    answer: int
    chosen: int  # argmax of summed logprob
    chosen_norm: int  # argmax of summed logprob per character


@dataclass(slots=True)
class TaskRun:
    """One deployment's scores on a task set, or why there are none (status `skipped`)."""

    task_version: str
    model: str
    status: str = "ok"  # ok | skipped (the server offers no prompt logprobs)
    status_reason: str | None = None
    measured_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    scores: list[ChoiceScore] = field(default_factory=list)

    def items(self) -> list[ItemResult]:
        by_item: dict[str, list[ChoiceScore]] = {}
        for s in self.scores:
            by_item.setdefault(s.item, []).append(s)
        out = []
        for key, rows in by_item.items():
            rows = sorted(rows, key=lambda s: s.choice)
            best = max(rows, key=lambda s: s.logprob)
            best_norm = max(rows, key=lambda s: s.logprob / s.chars)
            out.append(ItemResult(key, rows[0].answer, best.choice, best_norm.choice))
        return out

    @property
    def accuracy(self) -> float:
        items = self.items()
        return sum(r.chosen == r.answer for r in items) / len(items) if items else float("nan")

    @property
    def accuracy_norm(self) -> float:
        items = self.items()
        return (sum(r.chosen_norm == r.answer for r in items) / len(items) if items
                else float("nan"))

    def summary(self) -> dict:
        run = {k: v for k, v in asdict(self).items() if k != "scores"}
        items = self.items()
        return {**run, "items": len(items), "correct": sum(r.chosen == r.answer for r in items),
                "accuracy": self.accuracy, "accuracy_norm": self.accuracy_norm}

    def to_json(self) -> str:
        """The summary, then one entry per item and its choices' scores."""
        items = self.items()
        scores = {r.item: [] for r in items}
        for s in self.scores:
            scores[s.item].append({"choice": s.choice, "logprob": s.logprob,
                                   "tokens": s.tokens, "chars": s.chars})
        body = {**self.summary(), "per_item": [{**asdict(r), "scores": scores[r.item]}
                                               for r in items]}
        return json.dumps(body, indent=2, allow_nan=True) + "\n"

    def to_table(self) -> pa.Table:
        """One row per choice, run columns repeated; a run without scores keeps one row, so
        its status survives in the file."""
        run = {k: v for k, v in asdict(self).items() if k != "scores"}
        rows = [{**run, **asdict(s)} for s in self.scores] or [
            {**run, **dict.fromkeys(SCORE_FIELDS)}]
        return pa.Table.from_pylist(rows, schema=TABLE_SCHEMA)

    @classmethod
    def from_table(cls, table: pa.Table) -> TaskRun:
        rows = table.to_pylist()
        run = {k: rows[0][k] for k in RUN_FIELDS}
        return cls(**run, scores=[ChoiceScore(**{k: r[k] for k in SCORE_FIELDS})
                                  for r in rows if r["item"] is not None])


SCORE_FIELDS = tuple(f.name for f in fields(ChoiceScore))
RUN_FIELDS = ("task_version", "model", "status", "status_reason", "measured_at")
TABLE_SCHEMA = pa.schema(
    [(f, pa.string()) for f in RUN_FIELDS]
    + [("item", pa.string()), ("choice", pa.int32()), ("answer", pa.int32()),
       ("logprob", pa.float64()), ("tokens", pa.int32()), ("chars", pa.int32())])


def continuation_logprob(reply: dict, chars: int) -> tuple[float, int]:
    """Summed logprob and token count of the prompt's last CHARS characters, from a
    completions choice with echoed prompt logprobs and the one generated token after them."""
    lp = reply["logprobs"]
    offsets, logprobs = lp.get("text_offset"), lp["token_logprobs"]
    if not offsets or len(offsets) != len(logprobs):
        raise NoLogprobs("the reply has no text_offset to find the choice's tokens by")
    n = len(logprobs) - 1  # max_tokens 1: all but the last token are the prompt's
    start = offsets[n] - chars  # the generated token starts where the prompt ends
    picked = [logprobs[i] for i in range(n) if offsets[i] >= start]
    if not picked or any(v is None for v in picked):
        raise NoLogprobs("no prompt logprobs for the choice's tokens")
    return float(sum(picked)), len(picked)


def run_tasks(base_url: str, model: str, tasks: TaskSet | None = None,
              headers: dict[str, str] | None = None, timeout_s: float = 120.0,
              transport: httpx.BaseTransport | None = None) -> TaskRun:
    """Score every choice of every item against the server at BASE_URL (like
    http://host:8000/v1) serving MODEL.

    A server without prompt logprobs gives a `skipped` run with the reason; transport errors
    and 5xx raise (httpx.HTTPError), so nothing is recorded.
    """
    tasks = tasks or load_task_set()
    run = TaskRun(tasks.version, model)
    prober = Prober(base_url, model, headers, timeout_s, transport)
    try:
        for item in tasks.items:
            context = tasks.context(item)
            for i in range(len(item.choices)):
                cont = tasks.continuation(item, i)
                # logprobs=0: the prompt tokens' own logprobs, no alternatives needed.
                reply = prober.ask(context + cont, max_tokens=1, logprobs=0, echo=True)
                total, n = continuation_logprob(reply, len(cont))
                run.scores.append(ChoiceScore(item.id, i, item.answer, total, n, len(cont)))
    except NoLogprobs as exc:
        run.status, run.status_reason = "skipped", f"no prompt logprobs from the server: {exc}"
        run.scores = []
    finally:
        prober.http.close()
    return run
