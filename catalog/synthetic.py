"""Synthetic summary and requests tables with the contract's columns, for tests and `perf api`.

Shapes follow serving physics loosely: throughput rises with concurrency and saturates, latency
rises with load, faster hardware and lighter quantization are quicker. Deterministic per seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from servecat.results import LATENCY_METRICS

HARDWARE = {"l4": 0.35, "a100-40gb": 1.0, "a100-80gb": 1.2, "h100": 2.2, "h200": 2.6, "cpu": 0.02}
ENGINES = ("builtin", "vllm", "sglang", "tgi")
QUANTIZATIONS = {"bf16": 1.0, "fp16": 1.0, "int8": 1.35, "int4": 1.7}
LENGTHS = ("128:128", "512:256", "2048:512")
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128)


def synthetic_summary(n_configs: int, models: int = 4, seed: int = 0,
                      failed_share: float = 0.02) -> pd.DataFrame:
    """N_CONFIGS summary rows over MODELS models; FAILED_SHARE of them failed or skipped."""
    rng = np.random.default_rng(seed)
    n = n_configs
    model = np.array([f"org/model-{i}" for i in range(models)])[rng.integers(0, models, n)]
    hw_names = np.array(list(HARDWARE))
    hardware = hw_names[rng.integers(0, len(hw_names), n)]
    gpu_count = np.where(hardware == "cpu", 1, rng.choice([1, 2, 4, 8], n))
    engine = np.array(ENGINES)[rng.integers(0, len(ENGINES), n)]
    quant = np.array(list(QUANTIZATIONS))[rng.integers(0, len(QUANTIZATIONS), n)]
    lengths = np.array(LENGTHS)[rng.integers(0, len(LENGTHS), n)]
    by_rate = rng.random(n) < 0.3
    concurrency = np.array(CONCURRENCY)[rng.integers(0, len(CONCURRENCY), n)]
    rate = np.round(rng.uniform(0.5, 50, n), 2)
    max_num_seqs = rng.choice([64, 128, 256], n)
    speed = (pd.Series(hardware).map(HARDWARE).to_numpy() * pd.Series(quant).map(QUANTIZATIONS).to_numpy()
             * gpu_count ** 0.8 * rng.lognormal(0, 0.15, n))
    load = np.where(by_rate, rate / 4, concurrency).astype(float)
    tokens_per_s = 900 * speed * load / (load + 8 * np.sqrt(speed))
    tpot = 1000 * load / np.maximum(tokens_per_s, 1e-3) * rng.lognormal(0, 0.1, n)
    ttft = 40 / speed * (1 + load / 4) * rng.lognormal(0, 0.2, n) + 5
    num_requests = rng.integers(50, 500, n)
    status = np.where(rng.random(n) < failed_share, np.where(rng.random(n) < 0.5, "failed", "skipped"), "ok")
    ok = status == "ok"
    error_rate = np.where(ok, np.round(rng.beta(1, 60, n), 4), 1.0)
    num_failed = np.round(num_requests * error_rate).astype(int)
    num_completed = num_requests - num_failed
    duration = num_requests / np.maximum(tokens_per_s / 200, 1e-3)
    df = pd.DataFrame({
        "config_id": np.char.add(f"cfg-{seed}-", np.char.zfill(np.arange(n).astype(str), 7)).astype(object),
        "deployment": np.char.add(np.char.add(model.astype(str), "|"), hardware.astype(str)),
        "workload_id": np.char.add("w-", lengths.astype(str)),
        "matrix": "synthetic",
        "servecat_version": "0.1.0",
        "model": model, "hardware": hardware, "gpu_count": gpu_count, "engine": engine,
        "quantization": quant, "tensor_parallel_size": gpu_count, "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_seqs * 64, "lengths": lengths,
        "load": np.where(by_rate, "rate", "concurrency"),
        "concurrency": np.where(by_rate, np.nan, concurrency),
        "rate": np.where(by_rate, rate, np.nan),
        "num_requests": num_requests, "num_completed": num_completed, "num_failed": num_failed,
        "error_rate": error_rate, "duration_s": duration,
        "requests_per_s": num_completed / duration,
        "output_tokens_per_s": tokens_per_s,
        "total_tokens_per_s": tokens_per_s * 2.5,
    })
    base = {"ttft": ttft, "itl": tpot * 1.1, "tpot": tpot, "e2e": ttft + tpot * 200}
    for metric in LATENCY_METRICS:
        v = base[metric]
        for name, factor in (("mean", 1.1), ("p50", 1.0), ("p90", 1.5), ("p95", 1.8), ("p99", 2.5)):
            df[f"{metric}_{name}_ms"] = v * factor
    failed = ~ok
    for col in [c for c in df.columns if c.endswith("_ms")] + ["output_tokens_per_s", "requests_per_s"]:
        df.loc[failed, col] = np.nan
    df.loc[failed, "num_completed"] = 0
    df["status"] = status
    df["skip_reason"] = np.where(status == "skipped", "engine does not support int4 on cpu", None)
    return df


def synthetic_requests(summary: pd.DataFrame, per_config: int = 40, seed: int = 0) -> pd.DataFrame:
    """PER_CONFIG requests per summary row, TTFT/TPOT drawn around the row's p50."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(len(summary)), per_config)
    ttft = summary["ttft_p50_ms"].to_numpy(float)[rows] * rng.lognormal(0, 0.4, len(rows))
    tpot = summary["tpot_p50_ms"].to_numpy(float)[rows] * rng.lognormal(0, 0.3, len(rows))
    ok = (rng.random(len(rows)) >= summary["error_rate"].to_numpy(float)[rows]) & np.isfinite(ttft)
    return pd.DataFrame({"config_id": summary["config_id"].to_numpy()[rows],
                         "ttft_ms": np.where(ok, ttft, np.nan), "tpot_ms": np.where(ok, tpot, np.nan),
                         "ok": ok})


SWEEP_DEPLOYMENTS = (
    {"hardware": "h100", "gpu_count": 1, "engine": "vllm", "quantization": "bf16", "speed": 2.2},
    {"hardware": "a100-80gb", "gpu_count": 1, "engine": "vllm", "quantization": "bf16", "speed": 1.2},
    {"hardware": "l4", "gpu_count": 2, "engine": "sglang", "quantization": "int8", "speed": 0.8},
    {"hardware": "h100", "gpu_count": 2, "engine": "builtin", "quantization": "fp16", "speed": 3.5},
)


def synthetic_sweep(deployments: tuple[dict, ...] = SWEEP_DEPLOYMENTS, model: str = "org/model-a",
                    lengths: tuple[str, ...] = ("128:128", "512:256"),
                    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
                    rates: tuple[float, ...] = (), requests: int = 200,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, requests) of deployments that each sweep every length profile × load level.

    Each deployment dict gives hardware, gpu_count, engine, quantization and `speed`; a `name`
    sets its key. Latency rises with load, so capacities are bracketed; the summary's
    percentiles are computed from its own requests.
    """
    rng = np.random.default_rng(seed)
    levels = [("concurrency", float(c)) for c in concurrency] + [("rate", float(r)) for r in rates]
    summaries, tables = [], []
    for d in deployments:  # a handful of deployments × lengths × levels
        name = d.get("name") or f"{model.split('/')[-1]}-{d['hardware']}x{d['gpu_count']}-" \
                                f"{d['engine']}-{d['quantization']}"
        for lengths_name in lengths:
            n_in, n_out = (int(x) for x in lengths_name.split(":"))
            for load, x in levels:
                row, table = _sweep_level(rng, d, model, name, lengths_name, n_in, n_out,
                                          load, x, requests)
                summaries.append(row)
                tables.append(table)
    return pd.DataFrame(summaries), pd.concat(tables, ignore_index=True)


def _sweep_level(rng: np.random.Generator, d: dict, model: str, name: str, lengths: str,
                 n_in: int, n_out: int, load: str, x: float,
                 n: int) -> tuple[dict, pd.DataFrame]:
    peak = 900.0 * d["speed"] * d["gpu_count"] ** 0.8   # output tokens/s at saturation
    knee = 8.0
    if load == "rate":  # open loop: in-flight from a queue that fills as λ nears the peak
        busy = min(x * n_out / peak, 0.99)
        conc = busy / (1 - busy) * knee
    else:
        conc = x
    tpot50 = 1000.0 * (conc + knee) / peak
    ttft50 = (5 + n_in / (20 * d["speed"])) * (1 + conc / 8)
    ttft = ttft50 * rng.lognormal(0, 0.3, n)
    tpot = tpot50 * rng.lognormal(0, 0.15, n)
    ok = rng.random(n) >= d.get("error_rate", 0.0)
    ttft, tpot = np.where(ok, ttft, np.nan), np.where(ok, tpot, np.nan)
    e2e = ttft + tpot * (n_out - 1)
    rps = conc / (np.nanmean(e2e) / 1000.0) if load == "concurrency" else x
    duration = n / rps
    row = {
        "config_id": f"{name}|{lengths}|{load}={x:g}", "deployment": name,
        "workload_id": f"{lengths}-{load}-{x:g}", "matrix": "synthetic-sweep",
        "servecat_version": "0.1.0", "model": model, "hardware": d["hardware"],
        "gpu_count": d["gpu_count"], "engine": d["engine"], "quantization": d["quantization"],
        "tensor_parallel_size": d["gpu_count"], "max_num_seqs": 256,
        "max_num_batched_tokens": 8192, "engine_args": '{"max_num_seqs": 256}',
        "lengths": lengths, "load": load, "concurrency": x if load == "concurrency" else np.nan,
        "rate": x if load == "rate" else np.nan, "num_requests": n,
        "num_completed": int(ok.sum()), "num_failed": int((~ok).sum()),
        "error_rate": float((~ok).mean()), "duration_s": duration,
        "requests_per_s": ok.sum() / duration, "output_tokens_per_s": ok.sum() * n_out / duration,
        "total_tokens_per_s": ok.sum() * (n_in + n_out) / duration,
        "mean_input_tokens": float(n_in), "mean_output_tokens": float(n_out), "status": "ok",
        "skip_reason": None,
    }
    values = {"ttft": ttft, "itl": tpot, "tpot": tpot, "e2e": e2e}
    for metric in LATENCY_METRICS:
        v = values[metric][ok]
        row[f"{metric}_mean_ms"] = float(v.mean()) if len(v) else np.nan
        for q in (50, 90, 95, 99):
            row[f"{metric}_p{q}_ms"] = float(np.percentile(v, q)) if len(v) else np.nan
    table = pd.DataFrame({"config_id": row["config_id"], "ttft_ms": ttft, "tpot_ms": tpot,
                          "ok": ok})
    return row, table
