"""Fixtures for catalog tests: small synthetic catalogs, stores, and a live API over 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn

from catalog import build_catalog, load_hardware, load_profiles
from catalog.recommend import build_deployments
from catalog.snapshots import write_snapshot
from catalog.synthetic import (
    SWEEP_DEPLOYMENTS,
    synthetic_requests,
    synthetic_summary,
    synthetic_sweep,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hardware():
    return load_hardware(REPO / "configs/hardware.yaml")


@pytest.fixture(scope="session")
def profiles():
    return load_profiles(REPO / "configs/profiles.yaml")


@pytest.fixture(scope="session")
def summary() -> pd.DataFrame:
    return synthetic_summary(600, models=3, seed=7, failed_share=0.05)


@pytest.fixture(scope="session")
def requests_table(summary: pd.DataFrame) -> pd.DataFrame:
    return synthetic_requests(summary, per_config=20, seed=7)


@pytest.fixture(scope="session")
def catalog_df(summary, requests_table, hardware, profiles) -> pd.DataFrame:
    return build_catalog(summary, requests_table, hardware, profiles)


@pytest.fixture(scope="session")
def deployment_tables(summary, requests_table, hardware, profiles) -> dict[str, pd.DataFrame]:
    """The deployment and load-level tables a snapshot stores beside catalog_df."""
    return build_deployments(summary, requests_table, hardware, profiles, draws=100).tables()


SWEEP_MODEL = "org/model-a"
# A deployment too slow to hold any profile's SLOs at its lowest load: it is listed unranked.
SLOW = {"hardware": "a100-80gb", "gpu_count": 1, "engine": "builtin", "quantization": "fp16",
        "speed": 0.05, "name": "slow"}


@pytest.fixture(scope="session")
def sweep_tables(hardware, profiles):
    """(config-level catalog, Deployments) of deployments that each swept every load level."""
    summary, requests = synthetic_sweep((*SWEEP_DEPLOYMENTS, SLOW), seed=11)
    configs = build_catalog(summary, requests, hardware, profiles)
    return configs, build_deployments(summary, requests, hardware, profiles, draws=200)


@pytest.fixture
def store(tmp_path: Path, catalog_df: pd.DataFrame, deployment_tables) -> Path:
    root = tmp_path / "store"
    write_snapshot(catalog_df, root, tables=deployment_tables)
    return root


class LiveServer:
    """uvicorn serving an app in a thread on a free port; `client` is an httpx.Client on it."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=20)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """serve(store, **create_app_kwargs) -> a started LiveServer; all are stopped at teardown."""
    from catalog.api import create_app

    started: list[LiveServer] = []

    def start(store_root: Path, **kwargs) -> LiveServer:
        kwargs.setdefault("configs_dir", REPO / "configs")
        live = LiveServer(create_app(store_root, **kwargs)).__enter__()
        started.append(live)
        return live

    yield start
    for live in started:
        live.__exit__(None, None, None)


SHARED_KEY = "test-key-123"


@pytest.fixture(scope="module")
def shared_live(tmp_path_factory, catalog_df, deployment_tables) -> Iterator[LiveServer]:
    """One server (API key SHARED_KEY) for many read-only cases: starting one per case is slow."""
    from catalog.api import create_app

    root = tmp_path_factory.mktemp("shared") / "store"
    write_snapshot(catalog_df, root, tables=deployment_tables)
    app = create_app(root, configs_dir=REPO / "configs", api_keys=[SHARED_KEY])
    with LiveServer(app) as live:
        yield live


@pytest.fixture(scope="session")
def sweep_live(tmp_path_factory, sweep_tables) -> Iterator[LiveServer]:
    """One read-only server over sweep_tables, for the deployment endpoints and the page."""
    from catalog.api import create_app

    configs, deployments = sweep_tables
    root = tmp_path_factory.mktemp("sweep") / "store"
    write_snapshot(configs, root, tables=deployments.tables())
    with LiveServer(create_app(root, configs_dir=REPO / "configs")) as live:
        yield live
