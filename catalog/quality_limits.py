"""Which deployment rows a profile's quality demands leave unranked, and why.

A profile demands quality when it sets `max_quality_loss` (servecat/profiles.py) or weights a
quality criterion (quality_kl). Under such a profile a row is turned away when its deployment is
beyond a limit, or has no quality figure at all: not measured, skipped, or not comparable to the
reference. A missing figure is never read as lossless.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from catalog.config import Profile
from catalog.quality import NOT_MEASURED
from servecat.profiles import QUALITY_CRITERIA, QUALITY_LIMITS


def quality_exclusions(table: pd.DataFrame, profiles: Sequence[Profile]) -> np.ndarray:
    """Per row of TABLE (deployment × length profile × profile, with the quality_* columns): the
    reason its profile turns it away on quality ("not ranked: ..."), or None."""
    n = len(table)
    out = np.full(n, None, dtype=object)
    if not n:
        return out
    profile = table["profile"].astype(str).to_numpy()
    status = (table["quality_status"].fillna(NOT_MEASURED).astype(str).to_numpy()
              if "quality_status" in table else np.full(n, NOT_MEASURED, dtype=object))
    why = (table["quality_status_reason"].to_numpy(object) if "quality_status_reason" in table
           else np.full(n, None, dtype=object))
    measured = np.where(pd.notna(why), status.astype(object) + ": " + why.astype(str), status)
    for p in profiles:  # a handful; each step below is over all rows of the profile at once
        weighted = [c for c in QUALITY_CRITERIA if p.weights.get(c, 0.0) > 0]
        if not (p.max_quality_loss or weighted):
            continue
        mine = profile == p.name
        asks = " and ".join([*(["sets max_quality_loss"] if p.max_quality_loss else []),
                             *(f"weights {c}" for c in weighted)])
        # Without a figure that is the one reason; with one, every limit it misses.
        figures = [_beyond(table, key, limit) for key, limit in p.max_quality_loss.items()]
        figures += [np.where(np.isfinite(_values(table, c)), "", f"{c} unknown")
                    for c in weighted]
        joined = np.where(status == "ok", _join(figures, n),
                          "no quality figure (" + measured.astype(object) + ")")
        hit = mine & (joined != "")
        out[hit] = "not ranked: " + joined[hit] + f"; the {p.name} profile {asks}"
    return out


def _beyond(table: pd.DataFrame, key: str, limit: float) -> np.ndarray:
    """Per row: `quality kl 0.52 > max_quality_loss.kl 0.05` where the figure misses the limit
    (an unknown figure misses it), else ""."""
    values = _values(table, f"quality_{key}")
    at_most = QUALITY_LIMITS[key] == "max"
    # `not <=` / `not >=`: a NaN figure fails the limit rather than passing it.
    bad = ~(values <= limit) if at_most else ~(values >= limit)
    shown = pd.Series(values).map(lambda v: "unknown" if np.isnan(v) else f"{v:.4g}").to_numpy()
    sign = ">" if at_most else "<"
    return np.where(bad, f"quality {key} " + shown.astype(object)
                    + f" {sign} max_quality_loss.{key} {limit:g}", "")


def _join(notes: list[np.ndarray], n: int) -> np.ndarray:
    """Row-wise join of the non-empty NOTES (each N long) with ", "; "" where all are empty."""
    out = np.full(n, "", dtype=object)
    for note in notes:  # a few figures; each over all rows at once
        note = note.astype(object)
        out = np.where(out == "", note, np.where(note == "", out, out + ", " + note))
    return out


def _values(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(float, na_value=np.nan)
