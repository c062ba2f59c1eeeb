"""`runpod_orphan_sensor`: delete RunPod endpoints, pods and templates that servecat created
and no run is using (a run killed before its `stop`, a delete that failed)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from resources.target_resource import TargetsResource
from targets.runpod import NAME_PREFIX, RunPodClient, created_at

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
          dg.DagsterRunStatus.CANCELING]


def deployments_in_use(instance: dg.DagsterInstance) -> set[str]:
    """Deployment partitions of runs that are queued, starting, running or cancelling."""
    runs = instance.get_runs(dg.RunsFilter(statuses=ACTIVE))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}


def orphans(client: RunPodClient, in_use: set[str], max_age_s: float,
            now: datetime | None = None) -> list[tuple[str, dict]]:
    """(kind, object) of servecat-named endpoints and pods older than MAX_AGE_S whose deployment
    is not IN_USE, then servecat templates that no remaining endpoint uses."""
    now = now or datetime.now(UTC)
    found: list[tuple[str, dict]] = []
    kept_templates: set[str] = set()
    for kind, items in (("endpoint", client.list_endpoints()), ("pod", client.list_pods())):
        for obj in items:
            name, born = str(obj.get("name") or ""), created_at(obj)
            old = born is not None and (now - born).total_seconds() > max_age_s
            if name.startswith(NAME_PREFIX) and old and name.removeprefix(NAME_PREFIX) not in in_use:
                found.append((kind, obj))
            elif obj.get("templateId"):
                kept_templates.add(str(obj["templateId"]))
    for template in client.list_templates():
        name = str(template.get("name") or "")
        # servecat-<deployment>-<6 hex>: the deployment is the name between prefix and suffix
        deployment = name.removeprefix(NAME_PREFIX).rpartition("-")[0]
        if (name.startswith(NAME_PREFIX) and str(template.get("id")) not in kept_templates
                and deployment not in in_use):
            found.append(("template", template))
    return found


@dg.sensor(minimum_interval_seconds=900, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Deletes servecat-created RunPod endpoints/pods/templates older than the "
                       "configured age that no active run is using.")
def runpod_orphan_sensor(context: dg.SensorEvaluationContext,
                         targets: TargetsResource) -> dg.SkipReason:
    config = targets.runpod
    if not config.configured():
        return dg.SkipReason("RunPod is not configured (no RUNPOD_API_KEY)")
    client = config.client()
    deleted = []
    for kind, obj in orphans(client, deployments_in_use(context.instance), config.orphan_age_s):
        delete = {"endpoint": client.delete_endpoint, "pod": client.delete_pod,
                  "template": client.delete_template}[kind]
        try:
            delete(str(obj["id"]))
            deleted.append(f"{kind} {obj['id']} ({obj.get('name')})")
        except Exception as exc:  # noqa: BLE001 (one failure must not stop the others)
            context.log.warning(f"could not delete RunPod {kind} {obj['id']}: "
                                f"{client.redact(str(exc))}")
    if deleted:
        context.log.info("deleted orphaned RunPod resources: " + ", ".join(deleted))
    return dg.SkipReason(f"deleted {len(deleted)} orphaned RunPod resources"
                         + (": " + ", ".join(deleted) if deleted else ""))
