"""Capacity and ranking through the whole pipeline (matrix -> runs -> catalog) against queueing
scripted servers under Poisson arrivals: an M/D/C queue whose capacity bench.queueing computes
on its own, so the catalog's capacity, rank and P(#1) are checked against known numbers.

The pipeline ranks under configs/profiles.yaml (no other profiles file can be given to it), so
the SLO is `interactive`'s p99 TTFT of 450 ms. Each request holds a slot for 150 ms (TTFT 140 ms
+ one 10 ms gap; TPOT 10 ms, far inside its 40 ms): the p99 wait budget is ~310 ms, about two
service times, which keeps the capacity well below saturation (C / 150 ms) for both C = 2 and
C = 4 (where the M/D/C comparison is meaningful) and makes it move ~1% per 10 ms a busy host
adds to a TTFT. Shorter service would mean more probes per second but a budget of many service
times, i.e. a capacity pressed against saturation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from assets.catalog import model_catalog
from assets.results import benchmark_results, results_complete
from bench.arrivals import arrival_offsets
from bench.priority import realtime
from bench.queueing import queue_capacity
from catalog.snapshots import load_latest
from servecat.profiles import load_profiles
from servecat.slo import misses
from tests.pipeline.support import scripted_command, spec_dict

TTFT_MS, GAP_MS, OUTPUT_TOKENS = 140, 10, 2
SERVICE_S = (TTFT_MS + (OUTPUT_TOKENS - 1) * GAP_MS) / 1000
SCENARIO = {"ttft_ms": [TTFT_MS, TTFT_MS], "gap_ms": [GAP_MS, GAP_MS]}
PROFILE, TTFT_LIMIT_MS = "interactive", 450
# 100 requests a probe: a probe at the C = 2 capacity (~8.4 req/s) takes ~12 s. The capacity is
# compared with the M/D/C figure for the very arrivals the probes sent (one seeded pattern
# scaled by 1/rate): 8.41 req/s at C = 2 and 23.06 at C = 4. The long-run M/D/C values, 7.80
# and 20.56 (bench.queueing.queue_capacity without a pattern), differ from them by 8% and 12%:
# the p99 of 100 waits swings that much around its long-run value, so only the run's own
# figure can be held to 10%.
REQUESTS, SEED = 100, 0


def rate_search(low: float, high: float) -> dict:
    return {"search": "rate", "min": low, "max": high, "slo": [PROFILE], "arrival": "poisson"}


def catalog_rows(bench_env, tiny_model, engine_args: dict, load: dict,
                 scenario: dict = SCENARIO, output_tokens: int = OUTPUT_TOKENS) -> pd.DataFrame:
    """Run every deployment of ENGINE_ARGS (queueing servers, slots = max_num_seqs) through the
    pipeline with the one LOAD; the catalog's deployment rows for PROFILE, by deployment."""
    spec = spec_dict(tiny_model, requests=REQUESTS, output_tokens=output_tokens)
    spec["engines"] = [{"name": "openai", "args": engine_args}]
    spec["workloads"]["loads"] = [load]
    spec["workloads"]["seed"] = SEED
    bench_env.spec.write_text(yaml.safe_dump(spec))
    # Server and client at real-time priority where allowed, as in the bench-level queue tests:
    # on a busy 2-core host the client otherwise falls behind its Poisson schedule and the
    # probes are (rightly) invalid.
    bench_env.commands = {"openai": scripted_command(
        scenario, extra="--slots {max_num_seqs} --realtime")}
    keys = bench_env.matrix()
    for key in keys:
        # An invalid probe (the client missed its schedule) counts as a failure for the
        # search: below the capacity it leaves the catalog a coarser bracket, so say so, not
        # as a capacity off by 15%. Above a valid failing probe it changes nothing (seen: a
        # probe at twice the capacity, p99 dispatch lag 10.5 ms). A shared host stalls the
        # client for 20+ ms now and then (seen: 23.75 ms at 7 req/s), so a deployment with a
        # harmful one is measured again from nothing, once.
        for attempt in range(2):
            with realtime():
                run = bench_env.run(key)
            invalid = _invalid_probes(bench_env, key)
            if not invalid:
                break
            print(f"\n{key}, attempt {attempt + 1}: host too busy: {invalid}")
            for kind in ("summary", "requests", "quality", "telemetry"):
                shutil.rmtree(Path(bench_env.store.root) / "runs" / kind / f"deployment={key}",
                              ignore_errors=True)
        assert not invalid, f"host too busy for the client's schedule: {invalid}"
        measured = run.asset_materializations_for_node("benchmark_runs")[0]
        assert measured.metadata["measured_now"].value >= 3
    result = dg.materialize([benchmark_results, results_complete, model_catalog],
                            instance=bench_env.instance, resources=bench_env.resources())
    assert result.success
    table = load_latest(bench_env.store.root).tables["deployments"]
    rows = table[table["profile"] == PROFILE].set_index("deployment")
    assert sorted(rows.index) == sorted(keys)
    print("\n" + rows[["max_num_seqs", "max_num_batched_tokens", "capacity_status", "pass_level",
                       "fail_level", "capacity_rps", "capacity_rps_lo", "capacity_rps_hi",
                       "rank", "p_first"]].to_string())
    return rows


def _invalid_probes(bench_env, key: str) -> list[str]:
    """KEY's invalid probes that no valid failing probe at a lower rate makes harmless."""
    rows = [pq.read_table(bench_env.store.uri(p)).to_pylist()[0]
            for p in bench_env.store.list(f"runs/summary/deployment={key}/")]
    slo = next(p for p in load_profiles() if p.name == PROFILE).slo
    valid_fails = [r["rate"] for r in rows if r["status"] == "ok" and r["rate"] and misses(
        r["ttft_p99_ms"], r["tpot_p99_ms"], r["error_rate"], slo).any()]
    return [f"{r['rate']:g}/s: {r['status_reason']}" for r in rows
            if r["status"] == "invalid" and not any(f < r["rate"] for f in valid_fails)]


def test_poisson_capacity_matches_mdc_and_more_slots_rank_first(bench_env, tiny_model):
    rows = catalog_rows(bench_env, tiny_model, {"max_num_seqs": [2, 4]}, rate_search(7, 64))
    wait_s = (TTFT_LIMIT_MS - TTFT_MS) / 1000
    pattern = arrival_offsets("poisson", 1.0, REQUESTS, seed=SEED)  # the probes' own, per 1/s
    for _, row in rows.iterrows():
        slots = int(row["max_num_seqs"])
        sample = queue_capacity(wait_s, slots, SERVICE_S, pattern=pattern)
        print(f"C={slots}: catalog {row['capacity_rps']:.2f} req/s (bracket "
              f"{row['pass_level']:g}-{row['fail_level']:g}/s); M/D/{slots} {sample:.2f} req/s "
              f"for these {REQUESTS} arrivals")
        assert row["capacity_status"] == "bracketed" and row["load"] == "rate"
        assert row["fail_level"] <= row["pass_level"] * 1.1 + 1e-9  # the search's precision
        assert row["capacity_rps"] == pytest.approx(sample, rel=0.10)
    by_slots = rows.reset_index().set_index("max_num_seqs")
    assert by_slots.loc[4, "rank"] == 1
    assert by_slots.loc[4, "p_first"] > 0.9
    assert by_slots.loc[2, "p_first"] == pytest.approx(1 - by_slots.loc[4, "p_first"])


# Three 20 ms gaps here, not one of 10 ms: a busy 2-vCPU host adds 2-10 ms to a gap now and
# then, which on one 10 ms gap is a real difference (seen: TPOT p99 10.2 vs 13.8 ms for the two
# identical queues) but spread over three 20 ms gaps stays within 3-17%, inside the tie
# tolerance. Not one 30 ms gap either: that sits so near the profile's 40 ms TPOT limit that one
# 10 ms stall fails a level in the bootstrap's draws (seen: capacity lo 0, P(#1) 0.83 / 0.17
# with TPOT p99 33.2 vs 32.2 ms). Service 200 ms: capacity ~15 req/s at C = 4.
TIE_SCENARIO, TIE_OUTPUT_TOKENS = {"ttft_ms": [TTFT_MS, TTFT_MS], "gap_ms": [20, 20]}, 4


def test_identical_queues_come_out_tied(bench_env, tiny_model):
    # Two deployments the scripted server cannot tell apart (it ignores max_num_batched_tokens).
    rows = catalog_rows(bench_env, tiny_model,
                        {"max_num_seqs": [4], "max_num_batched_tokens": [256, 512]},
                        rate_search(10, 64), TIE_SCENARIO, TIE_OUTPUT_TOKENS)
    assert len(rows) == 2 and set(rows["capacity_status"]) == {"bracketed"}
    low, high = sorted(rows["capacity_rps"])
    assert high <= low * 1.1  # one queue, measured twice: within the search's precision
    assert rows["p_first"].sum() == pytest.approx(1.0)  # between them they are first
    # Practically equal (every criterion within catalog.confidence.TIE_TOLERANCE in a draw)
    # shares first place: host noise must not pick a confident winner (a real difference gives
    # P(#1) near 1). At a 10 ms gap the 2-vCPU CI host gave 0.695 / 0.305 and 0.715 / 0.285
    # in two runs (TPOT p99 within 2-8%), a 2-vCPU Xeon 0.855 / 0.145 (TPOT p99 11.0 vs 13.3
    # ms) and 0.93 / 0.07 (10.2 vs 13.8 ms).
    assert (rows["p_first"] <= 0.75).all(), rows[
        ["p_first", "capacity_rps", "ttft_p99_ms", "tpot_p99_ms",
         "output_tokens_per_s"]].round(3).to_dict()
