"""double_then_bisect: the one search behind `loadgen slo-search` and `perf loadgen`."""

from __future__ import annotations

import math

from bench.search import double_then_bisect


def test_integer_search_doubles_then_bisects_to_the_exact_edge():
    seen = []

    def passes(c):
        seen.append(c)
        return c <= 45

    assert double_then_bisect(passes, 1, 1024, snap=math.floor) == (45, 46)
    assert seen[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert all(isinstance(c, int) for c in seen)


def test_all_pass_and_none_pass():
    assert double_then_bisect(lambda c: True, 1, 100, snap=math.floor) == (64, None)
    assert double_then_bisect(lambda c: False, 1, 100, snap=math.floor) == (None, 1)
    assert double_then_bisect(lambda c: True, 10, 5) == (None, None)


def test_geometric_steps_and_halving_below_a_failing_start():
    seen = []

    def passes(rate):
        seen.append(rate)
        return rate <= 30.0

    good, bad = double_then_bisect(passes, 100.0, 20000.0, geometric=True,
                                   snap=lambda r: round(r, 1), steps=3, lowest=100 / 16)
    assert seen[:3] == [100.0, 50.0, 25.0]  # start fails: halve down until one passes
    assert len(seen) == 3 + 3 and good <= 30.0 < bad
    assert seen[3] == round(math.sqrt(25.0 * 50.0), 1)


def test_bisection_stops_when_the_snapped_midpoint_is_not_inside():
    seen = []
    double_then_bisect(lambda c: seen.append(c) or c <= 2, 1, 64, snap=math.floor)
    assert seen == [1, 2, 4, 3]
