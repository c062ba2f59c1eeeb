"""Fixtures for the load-generator tests: the tiny model's tokenizer and scripted servers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bench.scripted_server import Scenario, script_for


@pytest.fixture(scope="session")
def tokenizer_path(tiny_model: Path) -> Path:
    return tiny_model


def errors_vs_script(requests: pa.Table, scenario: Scenario,
                     sent_log: dict[tuple[str, int], tuple[float, float]] | None = None
                     ) -> dict[str, np.ndarray]:
    """|measured - scripted| TTFT, E2E, TPOT (per request) and ITL (per gap), in ms.

    With the server's `sent_log`, each scripted chunk time is moved by how late the server
    really sent that chunk, leaving the load generator's own error (plus the loopback hop).
    """
    out: dict[str, list[float]] = {"ttft": [], "e2e": [], "itl": [], "tpot": []}
    for row in requests.to_pylist():
        s = script_for(scenario, row["request_id"], row["max_tokens"])
        times = np.cumsum([s.ttft_ms, *s.gaps_ms])
        if sent_log is not None:
            late = [sent_log[(row["request_id"], i)] for i in range(len(times))]
            times = times + np.array([(sent - due) * 1000 for due, sent in late])
        measured = np.array(row["chunk_times_ms"])
        assert len(measured) == len(times)
        out["ttft"].append(measured[0] - times[0])
        out["e2e"].append(row["e2e_ms"] - times[-1])
        if s.output_tokens > 1:
            out["tpot"].append(row["tpot_ms"] - (times[-1] - times[0]) / (s.output_tokens - 1))
        out["itl"] += list(np.diff(measured) - np.diff(times))
    return {k: np.abs(np.array(v)) for k, v in out.items()}


def server_lateness_ms(sent_log: dict[tuple[str, int], tuple[float, float]]) -> np.ndarray:
    """How late the server sent each chunk against its script, in ms."""
    return np.array([(sent - due) * 1000 for due, sent in sent_log.values()])
