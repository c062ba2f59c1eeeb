"""GuideLLM's probe for `servecat perf loadgen`: one `guidellm run` at one constant or Poisson
rate against the same zero-delay scripted server, judged by the same criterion as ours and
AIPerf's.

GuideLLM (its own venv, `make peers-env`) exports every request's `targeted_start` (when its
scheduler meant to send it) and `request_start` (when its worker began the request), on one
wall clock. Its dispatch lag is the difference, as ours is sent minus scheduled; its achieved
rate is (n - 1) / (last start - first start). GuideLLM has no warm-up count on the command
line: it is sent 50 more requests and the first 50 by schedule are dropped, as AIPerf's
`--warmup-request-count 50` and ours leave them out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

WARMUP = 50


def find_guidellm(peers_venv: Path) -> str | None:
    """The guidellm executable of the peers' venv, else on PATH."""
    candidate = peers_venv / "bin" / "guidellm"
    return str(candidate) if os.access(candidate, os.X_OK) else shutil.which("guidellm")


def figures(rows: list[dict], n: int) -> tuple[float | None, float | None, int]:
    """(achieved rate, p99 dispatch lag ms, failed) of the N measured requests among ROWS, the
    requests of GuideLLM's JSON (successful and errored), after the first WARMUP by schedule."""
    rows = sorted(rows, key=lambda r: r["info"]["timings"]["targeted_start"])[WARMUP:]
    ok = [r for r in rows if r["info"].get("status") == "completed" and not r["info"].get("error")]
    timed = [r["info"]["timings"] for r in rows if r["info"]["timings"].get("request_start")]
    start = np.array([t["request_start"] for t in timed], dtype=np.float64)
    target = np.array([t["targeted_start"] for t in timed], dtype=np.float64)
    lag99 = float(np.percentile((start - target) * 1000, 99)) if start.size else None
    ordered = np.sort(start)
    achieved = ((len(ordered) - 1) / (ordered[-1] - ordered[0])
                if len(ordered) > 1 and ordered[-1] > ordered[0] else None)
    return achieved, lag99, n - min(len(ok), n)


def guidellm(binary: str, url: str, tokenizer: str, seconds: float, arrival: str,
             realtime: bool, sustained: Callable[..., bool]) -> Callable:
    """GuideLLM at a rate: a probe for perf_loadgen.search."""

    def probe(rate: float) -> dict:
        n = int(min(max(rate * seconds, 200), 50_000))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "guidellm.json"
            cmd = [binary, "run",
                   "--backend", f"kind=openai_http,target={url.removesuffix('/v1')},"
                                "model=scripted,request_format=/v1/completions",
                   "--profile", f"kind={arrival},rate={rate}",
                   "--constraint", f"kind=max_requests,count={n + WARMUP}",
                   "--data", "kind=synthetic_text,prompt_tokens=32,output_tokens=8",
                   "--tokenizer", f"kind=huggingface_auto,model={Path(tokenizer).resolve()}",
                   "--output", f"kind=json,path={out}", "--disable-console"]
            if realtime and shutil.which("chrt"):  # the same priority as ours, for all its processes
                cmd = ["chrt", "-f", "10", *cmd]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            rows = []
            if out.exists():
                for bench in json.loads(out.read_text()).get("benchmarks", []):
                    reqs = bench.get("requests", {})
                    rows += reqs.get("successful", []) + reqs.get("errored", []) \
                        + reqs.get("incomplete", [])
        achieved, lag99, failed = figures(rows, n) if proc.returncode == 0 else (None, None, n)
        return {"tool": "guidellm", "target_rate": rate, "requests": n,
                "achieved_rate": achieved, "dispatch_lag_p99_ms": lag99, "failed": failed,
                "sustained": bool(sustained(achieved, rate, lag99, failed)),
                "exit_code": proc.returncode,
                **({"stderr_tail": proc.stderr[-300:]} if proc.returncode else {})}

    return probe
