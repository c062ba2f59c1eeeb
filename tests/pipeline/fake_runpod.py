"""A local fake of RunPod's REST v1 and serverless APIs, to the published shapes.

REST under `/v1` (templates, endpoints, pods), serverless under `/v2/{id}` (`/health` and the
OpenAI-compatible `/openai/v1/...`, proxied to a real backend with the stream passed through
chunk by chunk), pods' HTTP proxy under `/proxy/{pod_id}-{port}`. It checks the bearer key on
every call and records calls (method and path only, never headers) for tests to assert on.
Faults: `ready_after_s` (cold start), `never_ready`, `openai_fail_after` (HTTP 500 for every
OpenAI request after that many), `rest_flaky` (that many 503s before REST calls succeed).
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class FakeRunPod:
    api_key: str
    backend: str  # the OpenAI-compatible server behind every endpoint/pod, e.g. http://h:p/v1
    log_path: Path | None = None
    ready_after_s: float = 0.2
    never_ready: bool = False
    openai_fail_after: int | None = None
    rest_flaky: int = 0
    cost_per_hr: float = 0.74
    templates: dict[str, dict] = field(default_factory=dict)
    endpoints: dict[str, dict] = field(default_factory=dict)
    pods: dict[str, dict] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    openai_requests: int = 0
    _born: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)

    def new_id(self) -> str:
        return f"fk{next(self._ids):04d}{secrets.token_hex(4)}"

    def add_endpoint(self, name: str, age_s: float = 0.0, template_id: str = "") -> str:
        """An endpoint that already exists (e.g. an orphan AGE_S old)."""
        eid = self.new_id()
        self.endpoints[eid] = _endpoint(eid, {"name": name, "templateId": template_id}, age_s)
        self._born[eid] = time.monotonic() - age_s
        return eid

    def add_pod(self, name: str, age_s: float = 0.0) -> str:
        pid = self.new_id()
        self.pods[pid] = _pod(pid, {"name": name}, self.cost_per_hr, age_s)
        self._born[pid] = time.monotonic() - age_s
        return pid

    def ready(self, ident: str) -> bool:
        born = self._born.get(ident)
        return (not self.never_ready and born is not None
                and time.monotonic() - born >= self.ready_after_s)

    def app(self) -> FastAPI:
        app = FastAPI()
        http = httpx.AsyncClient(timeout=httpx.Timeout(60.0))

        @app.middleware("http")
        async def auth_and_record(request: Request, call_next):
            path = request.url.path
            self.calls.append((request.method, path))
            if self.log_path:
                with self.log_path.open("a") as f:
                    f.write(f"{datetime.now(UTC).isoformat()} {request.method} {path}\n")
            if not path.startswith("/proxy/"):
                # RunPod accepts the key as `Bearer <key>` (REST) or bare (serverless).
                auth = request.headers.get("authorization", "")
                if auth.removeprefix("Bearer ") != self.api_key:
                    return JSONResponse({"error": "unauthorized"}, status_code=401)
            if path.startswith("/v1/") and self.rest_flaky > 0:
                self.rest_flaky -= 1
                return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
            return await call_next(request)

        # -- REST v1 ---------------------------------------------------------------------
        @app.post("/v1/templates", status_code=200)
        async def create_template(request: Request):
            body = await request.json()
            if any(t["name"] == body["name"] for t in self.templates.values()):
                raise HTTPException(400, "template name must be unique")
            tid = self.new_id()
            self.templates[tid] = {"id": tid, "isServerless": False, "env": {}, **body}
            return self.templates[tid]

        @app.get("/v1/templates")
        async def list_templates():
            return list(self.templates.values())

        @app.post("/v1/endpoints")
        async def create_endpoint(request: Request):
            body = await request.json()
            if body.get("templateId") not in self.templates:
                raise HTTPException(400, "templateId: no such template")
            eid = self.new_id()
            self.endpoints[eid] = _endpoint(eid, body)
            self._born[eid] = time.monotonic()
            return self.endpoints[eid]

        @app.get("/v1/endpoints")
        async def list_endpoints():
            return list(self.endpoints.values())

        @app.post("/v1/pods", status_code=201)
        async def create_pod(request: Request):
            body = await request.json()
            pid = self.new_id()
            self.pods[pid] = _pod(pid, body, self.cost_per_hr)
            self._born[pid] = time.monotonic()
            return self.pods[pid]

        @app.get("/v1/pods")
        async def list_pods():
            return list(self.pods.values())

        for kind, table in (("templates", self.templates), ("endpoints", self.endpoints),
                            ("pods", self.pods)):
            _crud(app, kind, table, self.deleted)

        # -- serverless ------------------------------------------------------------------
        @app.get("/v2/{eid}/health")
        async def health(eid: str):
            if eid not in self.endpoints:
                raise HTTPException(404, "endpoint not found")
            ready = int(self.ready(eid))
            return {"jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0,
                             "retried": 0},
                    "workers": {"idle": ready, "initializing": 1 - ready, "ready": ready,
                                "running": 0, "throttled": 0, "unhealthy": 0}}

        async def proxy(request: Request, rest: str) -> Response:
            self.openai_requests += 1
            if self.openai_fail_after is not None and self.openai_requests > self.openai_fail_after:
                return JSONResponse({"error": "worker failed"}, status_code=500)
            body = await request.body()
            headers = {"content-type": "application/json"}
            if rid := request.headers.get("x-request-id"):
                headers["x-request-id"] = rid
            req = http.build_request(request.method, f"{self.backend}/{rest}", content=body,
                                     headers=headers)
            resp = await http.send(req, stream=True)

            async def chunks():
                try:
                    async for chunk in resp.aiter_raw():
                        yield chunk
                finally:
                    await resp.aclose()

            return StreamingResponse(chunks(), status_code=resp.status_code,
                                     media_type=resp.headers.get("content-type"))

        @app.api_route("/v2/{eid}/openai/v1/{rest:path}", methods=["GET", "POST"])
        async def serverless_openai(eid: str, rest: str, request: Request):
            if eid not in self.endpoints:
                raise HTTPException(404, "endpoint not found")
            if not self.ready(eid):
                raise HTTPException(503, "no worker")
            return await proxy(request, rest)

        @app.api_route("/proxy/{pod_port}/{rest:path}", methods=["GET", "POST"])
        async def pod_proxy(pod_port: str, rest: str, request: Request):
            pid = pod_port.rpartition("-")[0]
            if pid not in self.pods or not self.ready(pid):
                raise HTTPException(502, "pod not reachable")
            if rest == "health":
                return Response(status_code=200)
            return await proxy(request, rest.removeprefix("v1/"))

        return app


def _crud(app: FastAPI, kind: str, table: dict, deleted: list) -> None:
    @app.get(f"/v1/{kind}/{{ident}}", name=f"get_{kind}")
    async def get(ident: str):
        if ident not in table:
            raise HTTPException(404, f"{kind}: {ident} not found")
        return table[ident]

    @app.delete(f"/v1/{kind}/{{ident}}", status_code=204, name=f"delete_{kind}")
    async def delete(ident: str):
        if table.pop(ident, None) is None:
            raise HTTPException(404, f"{kind}: {ident} not found")
        deleted.append((kind, ident))
        return Response(status_code=204)


def _stamp(age_s: float) -> str:
    return datetime.fromtimestamp(time.time() - age_s, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _endpoint(eid: str, body: dict, age_s: float = 0.0) -> dict:
    return {"id": eid, "name": body.get("name"), "templateId": body.get("templateId"),
            "gpuTypeIds": body.get("gpuTypeIds", ["NVIDIA L4"]), "gpuCount": body.get("gpuCount", 1),
            "workersMin": body.get("workersMin", 0), "workersMax": body.get("workersMax", 3),
            "idleTimeout": body.get("idleTimeout", 5), "flashboot": body.get("flashboot", False),
            "computeType": "GPU", "createdAt": _stamp(age_s), "version": 0, "workers": []}


def _pod(pid: str, body: dict, cost: float, age_s: float = 0.0) -> dict:
    return {"id": pid, "name": body.get("name"), "image": body.get("imageName"),
            "gpuCount": body.get("gpuCount", 1), "interruptible": body.get("interruptible", False),
            "desiredStatus": "RUNNING", "costPerHr": cost, "adjustedCostPerHr": cost,
            "ports": body.get("ports", []), "lastStartedAt": _stamp(age_s)}
