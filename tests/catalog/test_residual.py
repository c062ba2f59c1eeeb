"""The estimates' second stage (catalog/residual.py): what the physics misses, learnt by config."""

from __future__ import annotations

import numpy as np
import pandas as pd

from catalog.residual import features, fit_correction


def rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "quantization": rng.choice(["fp32", "bf16", "int8"], n),
        "max_num_seqs": rng.choice([4, 16, 64], n),
        "max_num_batched_tokens": rng.choice([256, 512, 2048], n),
        "input_tokens": rng.choice([144.0, 384.0, 1024.0], n),
        "output_tokens": rng.choice([12.0, 128.0], n),
        "parameters": rng.choice([2e7, 1e8], n),
        "profile": rng.choice(["interactive", "server"], n)})


def test_a_miss_that_follows_the_config_is_taken_out_and_the_rest_is_the_interval():
    # The physics reads each doubling of the batch 10% slow and bf16 20% fast; the rest is 5%
    # noise.
    train, new = rows(60), rows(40, seed=1)
    profiles = ("interactive", "server")

    def miss(r: pd.DataFrame, seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).normal(0.0, 0.05, len(r))
        return (0.1 * np.log2(r["max_num_seqs"]) - 0.2 * (r["quantization"] == "bf16")
                + noise).to_numpy(float)

    c = fit_correction(features(train, profiles), miss(train, 2))
    assert c.mode == "ridge"
    shift, se, q = c.apply(features(new, profiles))
    left = miss(new, 3) - shift
    assert np.abs(left).mean() < 0.07 < 0.5 * np.abs(miss(new, 3)).mean()
    covered = np.abs(left) <= q * se
    assert 0.85 <= covered.mean() <= 1.0


def test_few_operating_points_shift_by_their_mean_or_not_at_all():
    x = features(rows(8))
    mean = fit_correction(x[:6], np.full(6, 0.3))
    assert mean.mode == "mean"  # held out, the mean predicts every row: it is chosen
    assert np.allclose(mean.apply(x)[0], 0.3)
    two = fit_correction(x[:2], np.array([0.5, -0.1]))
    assert two.mode == "none" and np.allclose(two.apply(x)[0], 0.0)
    nothing = fit_correction(x[:0], np.zeros(0))
    assert nothing.mode == "prior" and np.allclose(nothing.apply(x)[0], 0.0)


def test_an_engine_without_the_args_reads_as_unbounded_and_unchunked():
    r = pd.DataFrame({"quantization": ["fp16"], "max_num_seqs": [None],
                      "max_num_batched_tokens": [None], "input_tokens": [512.0],
                      "output_tokens": [64.0], "parameters": [7e9]})
    f = features(r)
    assert np.isfinite(f).all()
    assert f[0, 4] == np.log(256.0) and f[0, 5] == np.log(512.0) and f[0, 6] == 0.0


def test_misses_that_are_noise_are_not_learnt():
    # Ten deployments, four operating points each, misses that follow nothing: a ridge would
    # fit the noise; held out, no shift (or the mean's) predicts a new deployment better.
    r = rows(40, seed=4)
    groups = np.repeat(np.arange(10), 4)
    miss = np.random.default_rng(5).normal(0.0, 0.2, 40)
    c = fit_correction(features(r, ("interactive", "server")), miss, groups)
    assert c.mode in ("none", "mean")
    assert abs(c.shift(features(r, ("interactive", "server")))).max() < 0.1
    assert 0.15 < c.sigma < 0.3  # the interval is the noise's
