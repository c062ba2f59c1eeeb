"""Workloads, length specs and prompts of exact token lengths."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bench.dataset import conversation_prompts, synthetic_prompts
from bench.errors import WorkloadError
from bench.profiles import DEFAULT_PROFILES_PATH
from bench.tokens import Tokenizer
from bench.workload import WORKLOAD_FIELDS, Workload, parse_length_spec


def test_workload_from_a_matrix_row():
    row = {f.name: getattr(Workload(concurrency=4), f.name) for f in dataclasses.fields(Workload)}
    row |= {"lengths": "chat", "input_dist": "uniform", "input_min": 10, "input_max": 20,
            "extra_column": "ignored by the caller"}
    w = Workload(**{f: row[f] for f in WORKLOAD_FIELDS})
    assert w.lengths == "chat" and w.concurrency == 4 and w.target_rate is None
    assert Workload(load="rate", rate=2.5).target_rate == 2.5


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"load": "concurrency", "concurrency": None}, "concurrency"),
    ({"load": "rate", "rate": 0}, "rate"),
    ({"load": "rate", "rate": 1, "arrival": "weibull"}, "arrival"),
    ({"concurrency": 1, "input_dist": "uniform", "input_min": 5, "input_max": 2}, "input_min/input_max"),
    ({"concurrency": 1, "api": "embeddings"}, "api"),
    ({"concurrency": 1, "requests": 0}, "requests"),
])
def test_workload_errors_name_the_field(kwargs, field):
    with pytest.raises(WorkloadError, match=f"workload 'custom': {field}: "):
        Workload(**kwargs)


def test_length_specs():
    assert parse_length_spec("64", "input") == {"input_dist": "fixed", "input_tokens": 64}
    assert parse_length_spec("uniform:10:30", "output") == {
        "output_dist": "uniform", "output_tokens": 20, "output_min": 10, "output_max": 30}
    assert parse_length_spec("normal:100:10:50:150", "input")["input_std"] == 10.0
    with pytest.raises(WorkloadError, match="--input-tokens 'ten'"):
        parse_length_spec("ten", "input")


@pytest.mark.parametrize("spec", ["fixed:50", "uniform:5:200", "normal:64:20:8:128"])
def test_synthetic_prompts_have_exact_lengths(spec, tokenizer_path):
    tok = Tokenizer(tokenizer_path)
    fields = parse_length_spec(spec, "input") | parse_length_spec("uniform:1:9", "output")
    w = Workload(concurrency=1, seed=3, **fields)
    prompts = synthetic_prompts(w, tok, 200)
    asked = np.array([p.input_tokens for p in prompts])
    assert [len(tok.encode(p.text)) for p in prompts] == asked.tolist()
    assert len({p.text for p in prompts}) == 200  # unique: no server prefix-cache flattery
    assert all(1 <= p.max_tokens <= 9 for p in prompts)
    if spec.startswith("fixed"):
        assert set(asked) == {50}
    elif spec.startswith("uniform"):
        assert asked.min() >= 5 and asked.max() <= 200 and len(set(asked)) > 50
    else:
        assert asked.min() >= 8 and asked.max() <= 128 and abs(asked.mean() - 64) < 6
    again = synthetic_prompts(w, tok, 200)
    assert [p.text for p in again] == [p.text for p in prompts]  # seeded


def test_each_load_level_has_new_prompts_of_the_same_lengths(tokenizer_path):
    # A capacity search's probes run on one server: a prompt seen at one level would be a
    # prefix-cache hit at the next.
    tok = Tokenizer(tokenizer_path)
    fields = parse_length_spec("uniform:5:60", "input") | parse_length_spec("8", "output")
    levels = [Workload(concurrency=c, seed=3, **fields) for c in (1, 2, 16)]
    levels.append(Workload(load="rate", rate=2.5, seed=3, **fields))
    prompts = [synthetic_prompts(w, tok, 50) for w in levels]
    for i, a in enumerate(prompts):
        assert [p.input_tokens for p in a] == [p.input_tokens for p in prompts[0]]
        for b in prompts[i + 1:]:
            assert not {p.text for p in a} & {p.text for p in b}
            firsts = {tuple(tok.encode(p.text)[:4]) for p in a}
            assert len(firsts & {tuple(tok.encode(p.text)[:4]) for p in b}) <= 1
    other_seed = synthetic_prompts(Workload(concurrency=1, seed=4, **fields), tok, 50)
    assert not {p.text for p in other_seed} & {p.text for p in prompts[0]}


def test_shared_prefix_prompts(tokenizer_path):
    tok = Tokenizer(tokenizer_path)
    w = Workload(concurrency=1, input_tokens=40, shared_prefix_tokens=30, api="chat")
    prompts = synthetic_prompts(w, tok, 20)
    prefix = tok.encode(prompts[0].text)[:30]
    for p in prompts:
        assert p.input_tokens == 40 and tok.encode(p.text)[:30] == prefix
        assert p.messages == ({"role": "user", "content": p.text},)
    assert len({p.text for p in prompts}) == 20


def test_conversations_file(tokenizer_path, tmp_path):
    tok = Tokenizer(tokenizer_path)
    sample = DEFAULT_PROFILES_PATH.parent / "conversations.jsonl"
    rows = [json.loads(x) for x in sample.read_text().splitlines()]
    w = Workload(concurrency=1, api="chat", output_tokens=7)
    prompts = conversation_prompts(sample, w, tok, len(rows) + 3)
    assert [p.max_tokens for p in prompts[:len(rows)]] == [r["output_tokens"] for r in rows]
    assert prompts[0].messages == tuple(rows[0]["messages"])
    assert len({p.text for p in prompts}) == len(prompts)  # cycled prompts are made unique
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user"}]}\n')
    with pytest.raises(WorkloadError, match="bad.jsonl:1:"):
        conversation_prompts(bad, w, tok, 1)
