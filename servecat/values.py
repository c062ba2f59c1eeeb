"""One rule for a missing value: what a row cell becomes when it leaves a table."""

from __future__ import annotations

import math
from typing import Any


def plain(value: object) -> Any:
    """VALUE as a plain Python value: numpy scalars unwrapped; None, NaN and pandas' NA -> None."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
