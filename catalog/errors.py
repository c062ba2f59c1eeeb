"""Errors a catalog query answers with: each carries the HTTP status the API maps it to and the
parameter it is about."""

from __future__ import annotations

from collections.abc import Sequence

MAX_NAMES = 50


class QueryError(Exception):
    """A query the catalog cannot answer; STATUS is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


class NotFound(QueryError):
    status = 404


class InvalidParameter(QueryError):
    status = 422


class StaleCursor(QueryError):
    status = 410


class Unavailable(QueryError):
    """The snapshot in use cannot answer this endpoint (built before it existed)."""

    status = 503


def names_list(names: Sequence[str]) -> str:
    """NAMES joined with commas, at most MAX_NAMES of them."""
    shown = ", ".join(names[:MAX_NAMES])
    more = len(names) - MAX_NAMES
    return shown + (f", ... and {more} more" if more > 0 else "")
