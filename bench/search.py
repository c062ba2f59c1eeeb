"""Double-then-bisect: the highest load that still passes a probe (SLO search, load-generator
rate, a capacity search in a deployment's sweep)."""

from __future__ import annotations

import math
from collections.abc import Callable


def double_then_bisect(passes: Callable[[float], bool], start: float, maximum: float, *,
                       geometric: bool = False, snap: Callable[[float], float] = lambda x: x,
                       steps: int | None = None, lowest: float | None = None,
                       tight: Callable[[float, float], bool] | None = None,
                       reach_maximum: bool = False) -> tuple[float | None, float | None]:
    """Double from START while PASSES holds (up to MAXIMUM), then bisect; (last pass, first fail).

    SNAP rounds every new probe value (math.floor for integers); bisection stops after STEPS
    probes, once TIGHT(pass, fail) says the bracket is narrow enough, or when the snapped
    midpoint is no longer strictly inside the bracket. GEOMETRIC bisects at sqrt(lo * hi), for
    loads spanning decades. With LOWEST, a failing START is halved down to LOWEST before giving
    up. REACH_MAXIMUM probes MAXIMUM itself when the next doubling would overshoot it, so a
    range that is not START x 2^k is covered to its top. Either end is None when never seen.
    """
    good: float | None = None
    bad: float | None = None
    x = start
    while x <= maximum:
        if not passes(x):
            bad = x
            break
        good, x = x, x * 2
        if reach_maximum and good < maximum < x:
            x = maximum
    if good is None and bad is not None and lowest is not None:
        while bad > lowest:
            x = snap(bad / 2)
            if not 0 < x < bad:
                break
            if passes(x):
                good = x
                break
            bad = x
    if good is None or bad is None:
        return good, bad
    done = 0
    while (steps is None or done < steps) and not (tight and tight(good, bad)):
        mid = snap(math.sqrt(good * bad) if geometric else (good + bad) / 2)
        if not good < mid < bad:  # the bracket is as tight as the snapping allows
            break
        good, bad = (mid, bad) if passes(mid) else (good, mid)
        done += 1
    return good, bad
