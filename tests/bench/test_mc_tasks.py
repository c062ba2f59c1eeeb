"""`servecat quality tasks`: multiple-choice accuracy from prompt logprobs, end to end against a
real `servecat serve` of the tiny model, checked against Hugging Face `forward` on the same
weights; a server without logprobs is skipped with the reason.

Tolerance: 1e-3 on each choice's summed logprob (fp32 server vs fp32 HF; measured 2e-6 over
all 48 items, whose closest top-two choices are 0.0028 apart).
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bench.mc_tasks import (
    ChoiceScore,
    TaskRun,
    TaskSetError,
    continuation_logprob,
    load_task_set,
)
from bench.scripted_server import scripted_server
from cli.main import main
from servecat.net import free_port

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-3


@pytest.fixture(scope="module")
def served(tiny_model):
    """`servecat serve` of the tiny model in its own process; yields the API's base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--model", str(tiny_model), "--port",
           str(port), "--served-model-name", "tiny", "--max-num-seqs", "8",
           "--kv-cache-memory", "0.05", "--dtype", "fp32", "--num-threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240  # a loaded 2-core machine takes a minute or more
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def hf_choice_logprobs(model_dir: Path, items: int) -> dict[tuple[str, int], tuple[float, int]]:
    """(item, choice) -> summed logprob and token count of the choice's tokens (those starting
    at or after its first character), from HF's tokenizer and fp32 forward: no server."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tasks = load_task_set()
    out = {}
    for item in tasks.items[:items]:
        context = tasks.context(item)
        for i in range(len(item.choices)):
            enc = tok(context + tasks.continuation(item, i), return_offsets_mapping=True)
            ids = enc.input_ids
            with torch.no_grad():
                logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            picked = [p for p, (start, _) in enumerate(enc.offset_mapping)
                      if p > 0 and start >= len(context)]
            out[item.id, i] = (sum(logp[p - 1, ids[p]].item() for p in picked), len(picked))
    return out


# Items scored over HTTP here: `servecat serve` answers ~1 request/s on a loaded 2-core
# machine, and 24 items (96 requests) cover every kind (stdlib, facts, arithmetic).
ITEMS = 24


def test_cli_accuracy_matches_hf_forward(served, tiny_model, tmp_path):
    out = tmp_path / "tiny.json"
    r = CliRunner().invoke(main, ["quality", "tasks", "--base-url", served, "--model", "tiny",
                                  "--out", str(out), "--limit", str(ITEMS)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    tasks = load_task_set()
    assert (result["status"], result["items"]) == ("ok", ITEMS)
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["accuracy_norm"] <= 1.0
    assert f"accuracy {result['accuracy']:.4f} ({result['correct']}/{ITEMS} items)" in r.output
    assert [e["item"] for e in result["per_item"]] == [i.id for i in tasks.items[:ITEMS]]
    ref = hf_choice_logprobs(tiny_model, ITEMS)
    answers = {item.id: item.answer for item in tasks.items}
    for entry in result["per_item"]:
        assert entry["answer"] == answers[entry["item"]]
        hf = {s["choice"]: ref[entry["item"], s["choice"]] for s in entry["scores"]}
        for s in entry["scores"]:
            assert abs(s["logprob"] - hf[s["choice"]][0]) <= TOL, (entry["item"], s)
            assert s["tokens"] == hf[s["choice"]][1]
        best = max(hf.values())[0]
        # The server's pick is HF's argmax (or within tolerance of it, a tie).
        assert hf[entry["chosen"]][0] >= best - 2 * TOL, entry["item"]
    correct = sum(e["chosen"] == e["answer"] for e in result["per_item"])
    assert result["correct"] == correct and result["accuracy"] == correct / ITEMS


def test_server_without_logprobs_is_skipped_with_reason(tmp_path):
    out = tmp_path / "none.parquet"
    with scripted_server() as url:  # a real OpenAI-style server that returns no logprobs
        r = CliRunner().invoke(main, ["quality", "tasks", "--url", url, "--model", "scripted",
                                      "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "skipped (no prompt logprobs from the server: the reply has no logprobs)" in r.output
    run = TaskRun.from_table(pq.read_table(out))
    assert run.status == "skipped" and "no logprobs" in run.status_reason and not run.scores


def score(item: str, choice: int, answer: int, logprob: float, chars: int) -> ChoiceScore:
    return ChoiceScore(item, choice, answer, logprob, 1, chars)


def test_accuracy_and_length_normalised_accuracy():
    # a: -4 over 2 chars (-2/char) beats -6 over 6 chars (-1/char) by sum, loses by char.
    run = TaskRun("mc-v1", "m", scores=[score("a", 0, 0, -4.0, 2), score("a", 1, 0, -6.0, 6),
                                        score("b", 0, 1, -3.0, 3), score("b", 1, 1, -1.0, 3)])
    assert [(r.chosen, r.chosen_norm) for r in run.items()] == [(0, 1), (1, 1)]
    assert (run.accuracy, run.accuracy_norm) == (1.0, 0.5)
    assert TaskRun.from_table(run.to_table()) == run
    assert json.loads(run.to_json())["correct"] == 2


def test_choice_tokens_are_counted_back_from_the_prompt_end():
    # A BOS shown as 17 characters shifts every offset; the choice " 42" is still its tokens.
    reply = {"logprobs": {"tokens": ["<bos>", "Answer", ":", " 4", "2", "x"],
                          "token_logprobs": [None, -1.0, -2.0, -3.0, -4.0, -9.0],
                          "text_offset": [0, 17, 23, 24, 26, 27]}}
    assert continuation_logprob(reply, len(" 42")) == (-7.0, 2)
    assert continuation_logprob(reply, len(": 42")) == (-9.0, 3)


def test_task_set_is_small_balanced_and_plain_text():
    tasks = load_task_set()
    assert tasks.version == "mc-v1" and 40 <= len(tasks.items) <= 60
    assert len({i.id for i in tasks.items}) == len(tasks.items)
    assert all(len(i.choices) == 4 and len(set(i.choices)) == 4 for i in tasks.items)
    counts = Counter(i.answer for i in tasks.items)
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
    text = "".join(i.question + "".join(i.choices) for i in tasks.items)
    assert set(text) <= set(string.printable)


def test_bad_task_set_and_out_file_are_one_clear_error(tmp_path):
    bad = {"version": "mc-x", "prompt_template": "{question}", "choice_prefix": " ",
           "items": {"q1": {"question": "?", "choices": ["a", "b"], "answer": 2}}}
    (tmp_path / "mc-x.json").write_text(json.dumps(bad))
    with pytest.raises(TaskSetError, match="item 'q1' has answer 2, not an index into its 2"):
        load_task_set("mc-x", tmp_path)
    r = CliRunner().invoke(main, ["quality", "tasks", "--url", "http://127.0.0.1:9/v1",
                                  "--model", "m", "--task-version", "mc-v9"])
    assert r.exit_code == 2 and "no task set 'mc-v9'" in r.output and "mc-v1" in r.output
    r = CliRunner().invoke(main, ["quality", "tasks", "--url", "http://127.0.0.1:9/v1",
                                  "--model", "m", "--out", str(tmp_path / "r.csv")])
    assert r.exit_code == 2 and "give a .json or .parquet file" in r.output
    assert "Traceback" not in r.output
