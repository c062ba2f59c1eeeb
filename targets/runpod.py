"""RunPod: a REST client and the target that benchmarks a deployment on a RunPod endpoint or pod.

Written to RunPod's published shapes (REST v1 OpenAPI, https://rest.runpod.io/v1/openapi.json,
mirrored in github.com/runpod/docs `api-reference/openapi.json`; serverless `/health` and the
OpenAI-compatible route from docs.runpod.io/serverless/endpoints/operation-reference and
docs.runpod.io/serverless/vllm/openai-compatibility):

| call | shape used |
| --- | --- |
| `POST /templates` | `{name, imageName, isServerless, env, containerDiskInGb}` -> `{id, ...}` |
| `POST /endpoints` | `{name, templateId, gpuTypeIds, gpuCount, workersMin, workersMax, idleTimeout, flashboot}` -> Endpoint `{id, name, createdAt, ...}` |
| `POST /pods` | `{name, imageName, gpuTypeIds, gpuCount, interruptible, ports, dockerStartCmd, ...}` -> Pod `{id, costPerHr, desiredStatus, ...}` |
| `GET /endpoints`, `GET /pods` | arrays of Endpoint / Pod |
| `GET`/`DELETE /endpoints/{id}`, `/pods/{id}`, `/templates/{id}` | one object / 204 |
| serverless `GET /v2/{id}/health` | `{jobs: {...}, workers: {idle, initializing, ready, running, throttled, ...}}` |
| serverless OpenAI base | `/v2/{id}/openai/v1` |

The API key lives only in request headers: never in messages, reprs, metadata or results.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.endpoint import Endpoint
from servecat.deployment import Deployment
from servecat.engines import TORCH_DTYPES, WEIGHT_QUANTIZATIONS
from targets.target import Target, TargetError

log = logging.getLogger(__name__)

# How RunPod deployments run: the Dagster layer's RunPodConfig (resources/target_resource.py)
# holds the fields, their defaults and their UI docs; this package reads them by name.
RunPodSettings = Any

REST_URL = "https://rest.runpod.io/v1"
SERVERLESS_URL = "https://api.runpod.ai/v2"
POD_URL_TEMPLATE = "https://{pod_id}-{port}.proxy.runpod.net"
# RunPod's vLLM worker image; its vLLM engine args are environment variables (flag names in
# upper case: docs.runpod.io/serverless/vllm/environment-variables).
WORKER_IMAGE = "runpod/worker-v1-vllm:v2.7.0stable-cuda12.1.0"
POD_IMAGE = "vllm/vllm-openai:latest"
NAME_PREFIX = "servecat-"  # every endpoint/pod/template servecat creates; the orphan sensor's key

# Our hardware names (configs/hardware.yaml) -> RunPod gpuTypeIds (the enum of the REST v1
# OpenAPI; docs.runpod.io/references/gpu-types). RunPod offers no A100 40GB: `a100-40gb`
# deployments need an explicit mapping (the RunPod config's gpu_types).
GPU_TYPE_IDS: dict[str, list[str]] = {
    "l4": ["NVIDIA L4"],
    "a100-80gb": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"],
    "h100": ["NVIDIA H100 80GB HBM3"],
    "h200": ["NVIDIA H200"],
}
# Our quantization -> vLLM (dtype, quantization); int8/int4 need a pre-quantized checkpoint.
VLLM_QUANT: dict[str, tuple[str, str | None]] = {
    **{word: (dtype, None) for word, dtype in TORCH_DTYPES.items()},
    **{word: ("auto", None) for word in WEIGHT_QUANTIZATIONS},
}


class RunPodError(RuntimeError):
    """A RunPod API call failed (the message never carries the API key)."""


class RunPodClient:
    """RunPod's REST v1 and serverless APIs; retries 429/5xx and transport errors with backoff."""

    def __init__(self, api_key: str, rest_url: str = REST_URL, serverless_url: str = SERVERLESS_URL,
                 timeout_s: float = 30.0, retries: int = 4, backoff_s: float = 0.5):
        if not api_key:
            raise RunPodError("no RunPod API key: set RUNPOD_API_KEY")
        self._key = api_key
        self.rest_url, self.serverless_url = rest_url.rstrip("/"), serverless_url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(timeout=timeout_s)

    def __repr__(self) -> str:
        return f"RunPodClient(rest_url={self.rest_url!r}, serverless_url={self.serverless_url!r})"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***")

    def request(self, method: str, url: str, body: Mapping | None = None,
                missing_ok: bool = False) -> Any:
        """One call; JSON back (None for 204, or for 404 when MISSING_OK)."""
        where = f"RunPod {method} {url}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self._http.request(method, url, json=body, headers=self.auth_headers())
            except httpx.TransportError as exc:
                if last:
                    raise RunPodError(self.redact(f"{where}: {type(exc).__name__}: {exc}")) from None
            else:
                if resp.status_code == 404 and missing_ok:
                    return None
                if resp.status_code < 400:
                    return resp.json() if resp.content else None
                if resp.status_code not in (429, 500, 502, 503, 504) or last:
                    raise RunPodError(self.redact(f"{where}: HTTP {resp.status_code}: "
                                                  f"{resp.text[:300]}"))
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def _rest(self, method: str, path: str, body: Mapping | None = None, **kw) -> Any:
        return self.request(method, f"{self.rest_url}{path}", body, **kw)

    def create_template(self, body: Mapping) -> dict:
        return self._rest("POST", "/templates", body)

    def delete_template(self, template_id: str) -> None:
        self._rest("DELETE", f"/templates/{template_id}", missing_ok=True)

    def list_templates(self) -> list[dict]:
        return self._rest("GET", "/templates") or []

    def create_endpoint(self, body: Mapping) -> dict:
        return self._rest("POST", "/endpoints", body)

    def get_endpoint(self, endpoint_id: str) -> dict | None:
        return self._rest("GET", f"/endpoints/{endpoint_id}", missing_ok=True)

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._rest("DELETE", f"/endpoints/{endpoint_id}", missing_ok=True)

    def list_endpoints(self) -> list[dict]:
        return self._rest("GET", "/endpoints") or []

    def create_pod(self, body: Mapping) -> dict:
        return self._rest("POST", "/pods", body)

    def get_pod(self, pod_id: str) -> dict | None:
        return self._rest("GET", f"/pods/{pod_id}", missing_ok=True)

    def delete_pod(self, pod_id: str) -> None:
        self._rest("DELETE", f"/pods/{pod_id}", missing_ok=True)

    def list_pods(self) -> list[dict]:
        return self._rest("GET", "/pods") or []

    def health(self, endpoint_id: str) -> dict:
        """The serverless endpoint's `/health`: job and worker counts."""
        return self.request("GET", f"{self.serverless_url}/{endpoint_id}/health") or {}

    def openai_base(self, endpoint_id: str) -> str:
        return f"{self.serverless_url}/{endpoint_id}/openai/v1"


def ready_workers(health: Mapping) -> int:
    """Workers that can take a request now (`ready` where reported, else idle + running)."""
    workers = health.get("workers") or {}
    if "ready" in workers:
        return int(workers["ready"] or 0)
    return int(workers.get("idle") or 0) + int(workers.get("running") or 0)


def resource_name(deployment: str) -> str:
    return f"{NAME_PREFIX}{deployment}"


def created_at(obj: Mapping) -> datetime | None:
    """When RunPod says the endpoint/pod was created (pods report `lastStartedAt`)."""
    stamp = obj.get("createdAt") or obj.get("lastStartedAt")
    if not stamp:
        return None
    with contextlib.suppress(ValueError):
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def runpod_target(config: RunPodSettings, deployment: Deployment) -> RunPodTarget:
    return RunPodTarget(RunPodClient(config.api_key, config.rest_url, config.serverless_url),
                        config, deployment)


class RunPodTarget(Target):
    """A deployment on RunPod: a serverless endpoint from a vLLM worker template, a pod, or an
    existing endpoint. Deletes what it created on stop, also after a failure."""

    def __init__(self, client: RunPodClient, config: RunPodSettings, deployment: Deployment):
        self.client, self.config = client, config
        self.deployment = deployment.values()
        self.name = resource_name(deployment.key)
        self.model = deployment.model
        self.endpoint_id: str | None = config.endpoint_id or None
        self.template_id: str | None = None  # created by us
        self.pod_id: str | None = None
        self.created_endpoint = False
        self._base_url: str | None = None
        self._created_at: float | None = None
        self._cold_start_s: float | None = None
        self._cost_per_hr: float | None = None
        self._last_check = 0.0

    def describe(self) -> str:
        what = f"pod {self.pod_id}" if self.pod_id else f"endpoint {self.endpoint_id}"
        return f"RunPod {what} ({self.name})"

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        if self.config.mode == "pod" and not self.config.endpoint_id:
            self._create_pod()
        elif not self.endpoint_id:
            self._create_endpoint()
        self.wait_healthy(self.config.health_timeout_s)
        first = self._probe()
        if self._created_at is not None:
            self._cold_start_s = round(first - self._created_at, 3)
        log.info("%s ready after %.1f s", self.describe(), time.monotonic() - started)

    def _gpu_type_ids(self) -> list[str]:
        hardware = str(self.deployment["hardware"])
        ids = {**GPU_TYPE_IDS, **self.config.gpu_types}.get(hardware)
        if not ids:
            raise TargetError(f"hardware {hardware}: no RunPod GPU type for it; map it in the "
                              f"RunPod config's gpu_types (known: {', '.join(GPU_TYPE_IDS)})")
        return list(ids)

    def _vllm_args(self) -> dict[str, object]:
        """vLLM engine args of the deployment (flag name -> value)."""
        d = self.deployment
        dtype, quant = VLLM_QUANT.get(str(d.get("quantization")), ("auto", None))
        args: dict[str, object] = {"model": d["model_id"], "served_model_name": self.model,
                                   "dtype": dtype, "quantization": quant,
                                   "tensor_parallel_size": d.get("tensor_parallel_size")
                                   or d.get("gpu_count"),
                                   "max_num_seqs": d.get("max_num_seqs"),
                                   "max_num_batched_tokens": d.get("max_num_batched_tokens")}
        return {k: int(v) if isinstance(v, float) else v for k, v in args.items() if v is not None}

    def _create_endpoint(self) -> None:
        gpu_ids, gpu_count = self._gpu_type_ids(), int(self.deployment.get("gpu_count") or 1)
        template_id = self.config.template_id
        if not template_id:
            env = {("MODEL_NAME" if k == "model" else "OPENAI_SERVED_MODEL_NAME_OVERRIDE"
                    if k == "served_model_name" else k.upper()): str(v)
                   for k, v in self._vllm_args().items()}
            # Template names are unique per account: a suffix keeps re-runs apart.
            template = self.client.create_template({
                "name": f"{self.name}-{secrets.token_hex(3)}", "imageName": self.config.worker_image,
                "isServerless": True, "env": env, "containerDiskInGb": self.config.container_disk_gb})
            self.template_id = template_id = str(template["id"])
        self._created_at = time.monotonic()
        endpoint = self.client.create_endpoint({
            "name": self.name, "templateId": template_id, "gpuTypeIds": gpu_ids,
            "gpuCount": gpu_count, "workersMin": self.config.workers_min,
            "workersMax": max(self.config.workers_max, self.config.workers_min, 1),
            "idleTimeout": self.config.idle_timeout_s, "flashboot": self.config.flashboot})
        self.endpoint_id, self.created_endpoint = str(endpoint["id"]), True
        log.info("created RunPod endpoint %s (%s)", self.endpoint_id, self.name)

    def _create_pod(self) -> None:
        port = self.config.pod_port
        cmd = []
        for flag, value in self._vllm_args().items():
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
        self._created_at = time.monotonic()
        pod = self.client.create_pod({
            "name": self.name, "imageName": self.config.pod_image, "gpuTypeIds": self._gpu_type_ids(),
            "gpuCount": int(self.deployment.get("gpu_count") or 1),
            "interruptible": self.config.interruptible, "ports": [f"{port}/http"],
            "dockerStartCmd": [*cmd, "--port", str(port)],
            "containerDiskInGb": self.config.container_disk_gb})
        self.pod_id = str(pod["id"])
        self._cost_per_hr = _number(pod.get("costPerHr"))
        log.info("created RunPod pod %s (%s)", self.pod_id, self.name)

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll until a worker is ready (serverless) or the pod's server answers `/health`."""
        deadline, seen = time.monotonic() + timeout_s, "nothing yet"
        while time.monotonic() < deadline:
            try:
                if self.pod_id:
                    ok, seen = self._pod_ready()
                else:
                    health = self.client.health(str(self.endpoint_id))
                    ok, seen = ready_workers(health) > 0, f"workers {health.get('workers')}"
            except (RunPodError, httpx.HTTPError) as exc:
                ok, seen = False, self.client.redact(str(exc))
            if ok:
                return
            time.sleep(self.config.poll_s)
        raise TargetError(f"{self.describe()} had no ready worker after {timeout_s:.0f} s "
                          f"(last: {seen})")

    def _pod_ready(self) -> tuple[bool, str]:
        pod = self.client.get_pod(str(self.pod_id))
        if pod is None:
            raise TargetError(f"{self.describe()} disappeared while starting")
        self._cost_per_hr = _number(pod.get("costPerHr")) or self._cost_per_hr
        if pod.get("desiredStatus") != "RUNNING":
            return False, f"pod desiredStatus {pod.get('desiredStatus')}"
        resp = httpx.get(self._pod_url() + "/health", timeout=5.0)
        return resp.status_code == 200, f"pod /health HTTP {resp.status_code}"

    def _pod_url(self) -> str:
        return self.config.pod_url_template.format(pod_id=self.pod_id, port=self.config.pod_port)

    def _probe(self) -> float:
        """One 1-token completion; its answer time ends the cold start (the first request's
        queue delay included, which health alone does not show)."""
        ep = self.endpoint()
        resp = httpx.post(ep.url("completions"), headers=ep.request_headers(), timeout=600.0,
                          json={"model": self.model, "prompt": "Hello", "max_tokens": 1})
        if resp.status_code >= 400:
            raise TargetError(f"{self.describe()}: first request failed: HTTP {resp.status_code}: "
                              f"{self.client.redact(resp.text[:300])}")
        return time.monotonic()

    # -- running ---------------------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        if self.pod_id:
            # The pod's own vLLM server: RunPod's key is not sent to it.
            return Endpoint(base_url=self._pod_url() + "/v1", model=self.model,
                            api_key_env=None, extra_body={"ignore_eos": True})
        return Endpoint(base_url=self.client.openai_base(str(self.endpoint_id)), model=self.model,
                        headers=self.client.auth_headers(), api_key_env=None,
                        extra_body={"ignore_eos": True})

    def health_url(self) -> str:
        if self.pod_id:
            return self._pod_url() + "/health"
        return f"{self.client.serverless_url}/{self.endpoint_id}/health"

    def metrics_url(self) -> str | None:
        return self._pod_url() + "/metrics" if self.pod_id else None  # serverless exports none

    def check_alive(self) -> None:
        """Raise TargetError when what we benchmark was deleted or terminated (checked at most
        every 10 s; API hiccups are not deaths)."""
        now = time.monotonic()
        if now - self._last_check < 10.0:
            return
        self._last_check = now
        try:
            if self.pod_id:
                pod = self.client.get_pod(self.pod_id)
                if pod is None or pod.get("desiredStatus") in ("EXITED", "TERMINATED"):
                    raise TargetError(f"{self.describe()} stopped (interrupted?)")
            elif self.endpoint_id and self.client.get_endpoint(self.endpoint_id) is None:
                raise TargetError(f"{self.describe()} no longer exists")
        except RunPodError as exc:
            log.warning("%s: health check skipped: %s", self.describe(), exc)

    def info(self) -> dict[str, object]:
        return {"cold_start_s": self._cold_start_s, "cost_usd_per_hour": self._cost_per_hr}

    # -- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Delete what this target created; idempotent, and never raises for API errors
        (the orphan sensor deletes what a failed call leaves)."""
        steps = []
        if self.pod_id:
            steps.append(("pod", self.pod_id, self.client.delete_pod))
        if self.created_endpoint and self.endpoint_id:
            steps.append(("endpoint", self.endpoint_id, self.client.delete_endpoint))
        if self.template_id:
            steps.append(("template", self.template_id, self.client.delete_template))
        for kind, ident, delete in steps:
            try:
                delete(ident)
                log.info("deleted RunPod %s %s", kind, ident)
            except Exception as exc:  # noqa: BLE001 (stop must not mask the run's own error)
                log.warning("could not delete RunPod %s %s: %s", kind, ident,
                            self.client.redact(str(exc)))
        self.pod_id = self.template_id = None
        self.created_endpoint = False


def _number(value: object) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
