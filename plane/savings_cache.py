"""Watch-fed copies of what the savings view reads: Nodes with their labels, Pods with every
container's CPU request, and the workload objects that carry rightsizer recommendations.

The reflectors start on the first savings request, so a plane whose savings view is never
requested makes no extra watches. Each keeps only the fields the savings view reads.
"""

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from temper import annotations
from temper.kube import JsonObject, KubeClient, ObjectTransform, Reflector
from temper.tasks import TaskOwner

log = logging.getLogger(__name__)

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"

# kind -> (list path, path of the pod template inside the object). The kinds whose objects
# the rightsizer annotates, as it follows a pod's controller chain.
WORKLOAD_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Deployment": ("/apis/apps/v1/deployments", ("spec", "template")),
    "StatefulSet": ("/apis/apps/v1/statefulsets", ("spec", "template")),
    "DaemonSet": ("/apis/apps/v1/daemonsets", ("spec", "template")),
    "ReplicaSet": ("/apis/apps/v1/replicasets", ("spec", "template")),
    "Job": ("/apis/batch/v1/jobs", ("spec", "template")),
    "CronJob": ("/apis/batch/v1/cronjobs", ("spec", "jobTemplate", "spec", "template")),
}


def _slim_container(container: Mapping[str, Any]) -> dict[str, Any]:
    requests = (container.get("resources") or {}).get("requests") or {}
    slim: dict[str, Any] = {"name": container.get("name")}
    if "cpu" in requests:
        slim["resources"] = {"requests": {"cpu": requests["cpu"]}}
    if container.get("restartPolicy"):
        slim["restartPolicy"] = container["restartPolicy"]
    return slim


def _slim_pod_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    slim: dict[str, Any] = {
        key: [_slim_container(c) for c in spec.get(key) or []]
        for key in ("containers", "initContainers")
    }
    if spec.get("nodeName"):
        slim["nodeName"] = spec["nodeName"]
    overhead = (spec.get("overhead") or {}).get("cpu")
    if overhead is not None:
        slim["overhead"] = {"cpu": overhead}
    pod_level = ((spec.get("resources") or {}).get("requests") or {}).get("cpu")
    if pod_level is not None:
        slim["resources"] = {"requests": {"cpu": pod_level}}
    return slim


def _kept_annotations(metadata: Mapping[str, Any]) -> dict[str, str]:
    kept = (annotations.ORIGINAL_REQUESTS, annotations.RECOMMENDATION, MIRROR_POD_ANNOTATION)
    source = metadata.get("annotations") or {}
    return {key: source[key] for key in kept if key in source}


def _slim_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    slim = {
        key: metadata[key]
        for key in ("name", "namespace", "uid", "ownerReferences")
        if key in metadata
    }
    slim["annotations"] = _kept_annotations(metadata)
    return slim


def slim_pod(pod: JsonObject) -> JsonObject:
    """Keep a Pod's CPU requests, node, phase, owners and the two Temper annotations."""
    return {
        "metadata": _slim_metadata(pod.get("metadata") or {}),
        "spec": _slim_pod_spec(pod.get("spec") or {}),
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


def slim_node(node: JsonObject) -> JsonObject:
    """Keep a Node's name, labels and allocatable CPU."""
    metadata = node.get("metadata") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return {
        "metadata": {"name": metadata.get("name"), "labels": metadata.get("labels") or {}},
        "status": {"allocatable": {"cpu": allocatable["cpu"]} if "cpu" in allocatable else {}},
    }


def template_path(kind: str) -> tuple[str, ...]:
    """Return the path of the pod template inside an object of ``kind``."""
    return WORKLOAD_KINDS[kind][1]


def _slim_workload(kind: str) -> ObjectTransform:
    path = template_path(kind)

    def transform(obj: JsonObject) -> JsonObject:
        template: Any = obj
        for key in path:
            template = (template or {}).get(key)
        spec = (template or {}).get("spec") or {}
        slim: JsonObject = {
            "metadata": _slim_metadata(obj.get("metadata") or {}),
            "template": {"spec": _slim_pod_spec(spec)},
        }
        return slim

    return transform


class SavingsCache:
    """Reflectors over Nodes, Pods and the six workload kinds, started on first use."""

    def __init__(self, client: KubeClient) -> None:
        self.nodes = Reflector(client, "/api/v1/nodes", name="savings-nodes", transform=slim_node)
        self.pods = Reflector(client, "/api/v1/pods", name="savings-pods", transform=slim_pod)
        self.workloads = {
            kind: Reflector(
                client, path, name=f"savings-{kind.lower()}s", transform=_slim_workload(kind)
            )
            for kind, (path, _template) in WORKLOAD_KINDS.items()
        }
        self._tasks = TaskOwner("plane-savings-cache")
        self._started = False

    def _reflectors(self) -> dict[str, Reflector]:
        return {"Node": self.nodes, "Pod": self.pods, **self.workloads}

    def start(self) -> None:
        """Start the list/watch tasks once; later calls do nothing."""
        if self._started:
            return
        self._started = True
        for kind, reflector in self._reflectors().items():
            self._tasks.spawn(kind.lower(), reflector.run())
        log.info("savings watch cache started", extra={"kinds": sorted(self._reflectors())})

    async def wait_synced(self, timeout_seconds: float) -> list[str]:
        """Start if needed and wait until every reflector has listed once.

        Returns the kinds that are still not synced when the timeout passes (empty when all
        are).
        """
        self.start()
        pending = {kind: r for kind, r in self._reflectors().items() if not r.synced.is_set()}
        if pending:
            waits = [asyncio.ensure_future(r.synced.wait()) for r in pending.values()]
            _done, not_done = await asyncio.wait(waits, timeout=timeout_seconds)
            for wait in not_done:
                wait.cancel()
        return sorted(kind for kind, r in self._reflectors().items() if not r.synced.is_set())

    def revision(self) -> tuple[int, ...]:
        """Return a value that changes whenever any cached object changes."""
        return tuple(r.revision for r in self._reflectors().values())

    async def close(self, timeout_seconds: float = 10.0) -> None:
        """Stop the reflectors, waiting up to ``timeout_seconds``."""
        await self._tasks.close(timeout_seconds)
