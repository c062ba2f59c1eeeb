"""MLflow tracking: one MLflow run per deployment run, one step per workload."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from servecat.deployment import Deployment

# Matrix columns that describe the deployment (MLflow params). Nothing secret is among them:
# API keys live only in environment variables and request headers, never in the matrix.
DEPLOYMENT_PARAMS = ("deployment", "matrix", "model", "model_id", "parameters", "hardware",
                     "gpu_count", "hardware_key", "engine", "quantization", "engine_args",
                     "tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens",
                     "servecat_version")
METRIC_KEYS = ("output_tokens_per_s", "requests_per_s", "error_rate", "ttft_p50_ms",
               "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "itl_p99_ms", "e2e_p99_ms")


def default_tracking_uri() -> str:
    path = Path(os.environ.get("SERVECAT_HOME", ".servecat")).resolve() / "mlflow" / "mlflow.db"
    return f"sqlite:///{path}"


class Tracking(dg.ConfigurableResource):
    """MLflow: a local sqlite store by default; `MLFLOW_TRACKING_URI` overrides."""

    tracking_uri: str = ""
    experiment: str = "servecat"

    def uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()

    def start(self, deployment: Deployment, run_tags: Mapping[str, str]) -> TrackedRun:
        """Open the MLflow run of a deployment run."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        uri = self.uri()
        with _store_lock(uri):
            # A new sqlite store is created by the first client; two runs starting at once
            # would both run its migrations, so creation is serialised.
            client = mlflow.MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                artifacts = None
                if uri.startswith("sqlite:///"):
                    artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
                exp_id = client.create_experiment(self.experiment, artifact_location=artifacts)
            else:
                exp_id = exp.experiment_id
        run = client.create_run(exp_id, run_name=deployment.key,
                                tags={k: str(v) for k, v in run_tags.items()})
        values = deployment.values()
        params = {k: _param(values.get(k)) for k in DEPLOYMENT_PARAMS if k in values}
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        return TrackedRun(client, run.info.run_id)


@contextlib.contextmanager
def _store_lock(uri: str):
    """An exclusive lock beside a local sqlite store (nothing for a tracking server)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _param(value: object) -> str:
    text = "" if value is None else str(value)
    return text[:500]


class TrackedRun:
    """A live MLflow run: workload metrics as steps, summary files as artifacts."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_workload(self, step: int, workload_id: str, summary: Mapping | None,
                     artifact: Path | None = None) -> None:
        for key in METRIC_KEYS:
            value = (summary or {}).get(key)
            if isinstance(value, int | float) and value == value:
                self.client.log_metric(self.run_id, key, float(value), step=step)
        if artifact is not None:
            self.client.log_artifact(self.run_id, str(artifact), artifact_path="summary")
        self.client.set_tag(self.run_id, f"workload.{step}", re.sub(r"[^\w.-]", "_", workload_id))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
