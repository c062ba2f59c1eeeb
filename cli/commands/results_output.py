"""A query's rows as a text table, CSV or JSON (what `servecat results` prints)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

FORMATS = ("table", "csv", "json")


def render(columns: Sequence[str], rows: Sequence[Sequence[object]], fmt: str) -> str:
    """ROWS under COLUMNS in FMT (one of FORMATS)."""
    if fmt == "csv":
        return _csv(columns, rows)
    if fmt == "json":
        return json.dumps([dict(zip(columns, map(_plain, r), strict=True)) for r in rows],
                          indent=2, default=str)
    return _table(columns, rows)


def _plain(value: object) -> object:
    """JSON has no NaN or inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r[i], int | float) and not isinstance(r[i], bool)
                   for r in rows if r[i] is not None) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    out.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(out)


def _csv(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue().rstrip("\n")
