"""Synthetic probe runs (bench.quality.ProbeRun) and a sweep of one model's deployments that
differ in quantization, for the quality tests: built by hand, compared by bench.quality_compare.

Every run scores the same passages (same tokens: comparable) and continues the same prompts.
A run's top-5 distributions are the reference's logits plus NOISE; its greedy tokens follow the
reference's for the first AGREE share of each continuation, then diverge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.quality import PROBE_VERSION, ProbeRecord, ProbeRun, quality_path
from catalog.synthetic import synthetic_sweep

VOCAB = [f"token_id:{i}" for i in range(12)]
PASSAGES, PROMPTS, POSITIONS, GREEDY = 2, 3, 10, 10
MODEL = "org/model-a"
LENGTHS = "512:256"
# One model on one GPU type: bf16 (the reference), a good int8, a broken int4 that is the
# fastest of all, and an int4 never probed.
REFERENCE, GOOD, BROKEN, UNPROBED = "ref-bf16", "good-int8", "broken-int4", "unprobed-int4"
DEPLOYMENTS = (
    {"name": REFERENCE, "quantization": "bf16", "speed": 2.0},
    {"name": GOOD, "quantization": "int8", "speed": 2.4},
    {"name": BROKEN, "quantization": "int4", "speed": 3.2},
    {"name": UNPROBED, "quantization": "int4", "speed": 2.9},
)
# (noise in logits, greedy agreement): the int8 is close, the broken int4 is not.
LOSS = {REFERENCE: (0.0, 1.0), GOOD: (0.1, 0.8), BROKEN: (3.0, 0.1)}


def probe_run(deployment: str, noise: float, agree: float, seed: int = 1) -> ProbeRun:
    """A run of the probe set whose distributions are the reference's plus NOISE."""
    base, mine = np.random.default_rng(0), np.random.default_rng(seed)
    records = []
    for p in range(PASSAGES):
        for pos in range(POSITIONS):
            logits = base.normal(0, 2, len(VOCAB))
            token = VOCAB[int(base.integers(len(VOCAB)))]  # the passage's text: the same for all
            lps = _log_softmax(logits + noise * mine.normal(0, 1, len(VOCAB)))
            lp = None if pos == 0 else float(lps[VOCAB.index(token)])
            records.append(_record(f"p{p}", "passage", pos, token, lp, lps))
    for q in range(PROMPTS):
        for pos in range(GREEDY):
            logits = base.normal(0, 2, len(VOCAB))
            lps = _log_softmax(logits + noise * mine.normal(0, 1, len(VOCAB)))
            same = pos < round(agree * GREEDY)
            token = VOCAB[int(np.argmax(logits))] if same else "token_id:999"
            records.append(_record(f"q{q}", "continuation", pos, token, float(lps.max()), lps))
    return ProbeRun(PROBE_VERSION, MODEL, deployment, records=records)


def probe_runs() -> dict[str, ProbeRun]:
    """The stored runs of every probed deployment (the unprobed one has none)."""
    return {d: probe_run(d, *LOSS[d]) for d in LOSS}


def quality_sweep(seed: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, requests) of DEPLOYMENTS, each sweeping concurrency on LENGTHS."""
    return synthetic_sweep(tuple({"hardware": "h100", "gpu_count": 1, "engine": "vllm", **d}
                                 for d in DEPLOYMENTS), model=MODEL, lengths=(LENGTHS,),
                           seed=seed)


class DictStore:
    """The two store calls catalog.quality.stored_probe_runs makes, over a dict of tables."""

    def __init__(self, runs: dict[str, ProbeRun]):
        self.files = {quality_path(d): r.to_table() for d, r in runs.items()}

    def list(self, prefix: str) -> list[str]:
        return sorted(p for p in self.files if p.startswith(prefix))

    def read_parquet(self, relpath: str):
        return self.files[relpath]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def _record(item: str, kind: str, pos: int, token: str, lp: float | None,
            lps: np.ndarray) -> ProbeRecord:
    top = np.argsort(-lps)[:5]
    return ProbeRecord(item, kind, pos, token, lp, [VOCAB[i] for i in top],
                       [float(lps[i]) for i in top])
