"""A closed loop of clients as the engine's scheduler serves it (Assumptions.closed_loop
`mixed`, the default; catalog.roofline.at_clients is the `queue` model).

Every step (engine/scheduler.py) holds the running decodes first and then as many prompt tokens
as max_num_batched_tokens leaves, under max_num_seqs. So a decode's TPOT is the time of a step
that mixes decodes and prompt chunks, a prompt takes ceil(I / what the budget leaves) steps,
and once every step is full or every slot taken, more clients only wait for their first token:
TPOT stays flat while TTFT grows. The queue model instead stretches every decode by the share
of time prefills take (step / (1 - ρ)): fitted on the previous validation fixture, it put tiny
summarize's p50 TPOT at 37-50 ms at 12-32 clients (bf16 and int8, max_num_seqs 16, budget
256) where the levels read 12-22 ms, flat from eight clients on.

Held out on the validation fixture (tests/fixtures/validation/README.md, `servecat estimate
validate` against `--model queue`, 51 deployments): capacity 9.4% against 10.1%, p50 TPOT
12.7% against 16.8%, 95% intervals covering 91% / 92% of rows against 89% / 93%. It takes ~3x
the queue's time.
"""

from __future__ import annotations

import numpy as np

from catalog.roofline import Z99, Level, Physics, poisson_quantile

# The throughput: GRID points at once over 16 nats of log λ, narrowed PASSES times (to
# 16 / 15^5 ~ 2e-5 nats), then interpolated.
GRID, PASSES = 16, 5


def _as_column(ph: Physics) -> Physics:
    """PH with every per-row array as a column: it broadcasts against (rows, points)."""
    return Physics(*(v[:, None] if isinstance(v, np.ndarray) and v.ndim == 1 else v
                     for v in (getattr(ph, f) for f in Physics.__slots__)))


def _steady(ph: Physics, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At a throughput of RATE requests/s: the step time T and the decoding sequences n a step
    holds. Each decode takes one token a step (n = λ·O·T, up to the
    slots) and the prompts need λ·I·T tokens a step, up to what the budget leaves the decodes.
    The step is linear in T within each of the four regimes (n capped or not, k capped or
    not), so each regime's fixed point is exact; the one consistent with its regime is it."""
    x, out, inp = np.asarray(rate, float), ph.out, ph.inp
    budget = np.broadcast_to(np.asarray(ph.budget, float), x.shape)
    slots = np.minimum(ph.slots, budget)  # decodes take the budget's tokens first
    r0, r1 = ph.weights / ph.bandwidth, (inp + out / 2.0) * ph.kv_token / ph.bandwidth
    c, s0, s1 = 2.0 * ph.params / ph.flops, ph.step_s, ph.sequence_s

    def fixed(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # T = a + b T
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b < 1.0, a / np.clip(1.0 - b, 1e-300, None), np.inf)

    with np.errstate(invalid="ignore"):
        sn = np.where(np.isfinite(slots), slots, 0.0)
        left = np.where(np.isfinite(budget), np.maximum(budget - sn, 0.0), 0.0)
        cb = np.where(np.isfinite(budget), c * budget, 0.0)
        free = np.maximum(fixed(r0 + s0, (r1 + s1) * x * out),
                          fixed(np.broadcast_to(s0, x.shape), (c * (inp + out) + s1 * out) * x))
        seqs_capped = np.maximum(r0 + r1 * sn + s0 + s1 * sn,
                                 fixed(c * sn + s0 + s1 * sn, c * x * inp))
        budget_full = np.maximum(fixed(r0 + s0, (r1 + s1) * x * out),
                                 fixed(cb + s0, s1 * x * out))
        both = np.maximum(r0 + r1 * sn, cb) + s0 + s1 * sn
        step = np.select(
            [(x * out * free <= slots) & (x * (inp + out) * free <= budget),
             (x * out * seqs_capped >= slots) & (x * inp * seqs_capped <= left),
             (x * out * budget_full <= slots) & (x * (inp + out) * budget_full >= budget)],
            [free, seqs_capped, budget_full], both)
    return step, np.minimum(x * out * step, slots)


def at_clients(ph: Physics, clients: np.ndarray) -> Level:
    """The estimated figures of every row under a closed loop of CLIENTS (a client sends its
    next request when its last ends), as the engine schedules it: every step holds the running
    decodes and as many prompt tokens as its budget leaves, so a decode's TPOT is the mixed
    step's time, and a prompt takes ceil(I / what the budget leaves) steps. The throughput is
    the clients over a request's cycle (TTFT + (O - 1) steps), or what the engine sustains if
    less: every step full (the token budget), every slot taken (max_num_seqs), or the front's
    time per request. Past that, clients wait for their first token."""
    clients = np.maximum(np.asarray(clients, float), 1.0)
    decode_steps = np.maximum(ph.out - 1.0, 0.0)

    col = _as_column(ph)
    c2 = clients[:, None]
    d2 = np.maximum(col.out - 1.0, 0.0)

    def cycle(p: Physics, rate: np.ndarray):
        step, n = _steady(p, rate)
        # The budget the decodes leave takes a prompt's tokens, a chunk a step.
        per_step = np.clip(np.minimum(p.budget - n, p.inp), 1.0, None)
        ttft = np.ceil(p.inp / per_step) * step + p.request_s
        return ttft, step, n

    def margin(rate: np.ndarray) -> np.ndarray:
        """How far (in log) RATE is within what the loop and the engine allow: >= 0 holds."""
        ttft, step, _ = cycle(col, rate)
        with np.errstate(divide="ignore", invalid="ignore"):
            loop = np.log(c2) - np.log(rate * (ttft + d2 * step))
            # sequences in the engine, tokens a step must hold, the front's share of a second
            seqs = np.log(col.slots) - np.log(rate * (ttft - col.request_s + d2 * step))
            tokens = np.log(col.budget) - np.log(rate * (col.inp + col.out) * step)
            front = -np.log(rate * col.request_s)
            out = np.minimum(np.minimum(loop, seqs), np.minimum(tokens, front))
        return np.where(np.isnan(out), -np.inf, out)

    # The most requests/s the loop and the engine allow, where the margin crosses 0 (it falls
    # as λ rises): GRID points at once over log λ, narrowed PASSES times, then the crossing
    # interpolated between the last two, so the throughput is smooth in the physics (a fit's
    # finite differences see it move, not a bisection's last digit).
    step1 = ph.step_time(np.ones_like(clients))
    lo = np.log(clients / (ph.request_s + step1 * np.maximum(decode_steps, 1.0))) - 15.0
    width = np.full(len(clients), 16.0)
    ticks = np.linspace(0.0, 1.0, GRID)
    rows = np.arange(len(clients))
    for _ in range(PASSES):
        u = lo[:, None] + width[:, None] * ticks[None, :]
        held = (margin(np.exp(u)) >= 0.0).sum(axis=1)
        idx = np.clip(held - 1, 0, GRID - 2)
        lo, width = u[rows, idx], width / (GRID - 1)
    ends = margin(np.exp(lo[:, None] + width[:, None] * np.array([0.0, 1.0])[None, :]))
    g0, g1 = ends[:, 0], ends[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(np.isfinite(g0) & np.isfinite(g1) & (g0 >= 0) & (g1 < 0),
                         g0 / (g0 - g1), 0.0)
    rate = np.exp(lo + width * share)
    ttft0, step, n = cycle(ph, rate)
    # Clients the engine cannot take wait for their first token (a closed loop's Little's law).
    ttft = np.maximum(clients / rate - decode_steps * step, ttft0)
    # The spread: prompts that land while a request decodes stretch its steps (a Poisson count,
    # its 99th percentile), up to a full budget a step; those that land while it waits for its
    # first token are prefilled first.
    others = clients - 1.0

    def count(mean: np.ndarray, z: float) -> np.ndarray:
        return np.minimum(poisson_quantile(mean, z), others)

    bare = ph.step_time(n)
    full = ph.step_time(n, np.maximum(ph.budget - n, 0.0))
    landing = rate * np.maximum(decode_steps, 1.0) * step
    prompt_s = 2.0 * ph.params * ph.inp / ph.flops
    tpot99 = np.maximum(np.minimum(bare + count(landing, Z99) * prompt_s
                                   / np.maximum(decode_steps, 1.0), full), step)
    waiting = rate * ttft
    ttft99 = ttft + np.maximum(count(waiting, Z99) - waiting, 0.0) * ph.prefill_s
    return Level(rate, np.minimum(clients, ph.slots), np.ones(len(rate), bool), ttft, ttft99,
                 step, tpot99)
