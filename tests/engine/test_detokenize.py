"""Output text is the whole decode of the output ids, even when the last token ends in the
middle of a UTF-8 character (its text used to be held back forever)."""

from __future__ import annotations

import httpx
from engine_helpers import make_engine

from engine.sequence import SamplingParams


def _seeded(n: int) -> list[SamplingParams]:
    # Sampled (not greedy) so byte tokens come up; seeds make it the same every run.
    return [SamplingParams(temperature=1.5, seed=i, max_tokens=3 + i % 13, ignore_eos=True)
            for i in range(n)]


def test_engine_text_is_the_whole_decode_even_mid_character(tiny_model, prompts):
    engine = make_engine(tiny_model, max_model_len=256)
    tok = engine.tokenizer
    params = _seeded(48)
    seqs = engine.generate([prompts[i % len(prompts)] for i in range(48)], params)
    whole = [tok.decode(s.output_ids, skip_special_tokens=True) for s in seqs]
    assert any(w.endswith("\ufffd") for w in whole), "no case ends mid-character: reseed"
    assert [s.text for s in seqs] == whole


def test_served_text_is_the_whole_decode_even_mid_character(live, prompts):
    tok = live.engine.tokenizer
    ended_mid = 0
    with httpx.Client(base_url=live.base_url, timeout=60) as http:
        for i, p in enumerate(_seeded(48)):
            body = {"model": "tiny", "prompt": prompts[i % len(prompts)], "ignore_eos": True,
                    "temperature": p.temperature, "seed": p.seed, "max_tokens": p.max_tokens,
                    "logprobs": 0, "return_tokens_as_token_ids": True}
            choice = http.post("/v1/completions", json=body).json()["choices"][0]
            ids = [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]
            whole = tok.decode(ids, skip_special_tokens=True)
            ended_mid += whole.endswith("\ufffd")
            assert choice["text"] == whole, (ids, choice["text"])
    assert ended_mid, "no case ends mid-character: reseed"
