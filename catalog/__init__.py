"""servecat catalog layer: cost, SLO attainment, Pareto fronts, TOPSIS ranks, snapshots, query API.

Never imports Dagster, engine or bench: it ranks any table with the summary's columns.

    df = build_catalog(summary, requests, "configs/hardware.yaml", "configs/profiles.yaml")
    deployments = build_deployments(summary, requests, "configs/hardware.yaml",
                                    "configs/profiles.yaml")   # what /v1/recommend ranks
    write_snapshot(df, store_root, tables=deployments.tables())  # the API picks it up atomically
    BenchmarkRequests(store_root).list(status="pending")
"""

from catalog.benchmark_requests import BenchmarkRequest, BenchmarkRequests, InvalidTransition
from catalog.build import SUMMARY_COLUMNS, build_catalog, check_summary
from catalog.config import CRITERIA, ConfigError, Hardware, Profile, load_hardware, load_profiles
from catalog.recommend import DeploymentCatalog, build_deployments
from catalog.snapshots import NoCatalogError, Snapshot, latest_id, load_latest, write_snapshot

__all__ = ["CRITERIA", "SUMMARY_COLUMNS", "BenchmarkRequest", "BenchmarkRequests", "ConfigError",
           "DeploymentCatalog", "Hardware", "InvalidTransition", "NoCatalogError", "Profile",
           "Snapshot", "build_catalog", "build_deployments", "check_summary", "latest_id", "load_hardware", "load_latest",
           "load_profiles", "write_snapshot"]
