"""The one place that chooses the environment: local embedded default or production."""

from __future__ import annotations

import os

from resources.store import ResultStore


def resources() -> dict:
    """Resources from the environment: SERVECAT_STORE is a folder or s3://bucket/prefix."""
    return {"store": ResultStore(root=os.environ.get("SERVECAT_STORE", ".servecat/store"))}
