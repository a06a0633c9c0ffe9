"""Find the workload that owns a pod, through the controller ownerReferences.

A pod of a Deployment is owned by a ReplicaSet that is owned by the Deployment; a pod of
a CronJob is owned by a Job owned by the CronJob. StatefulSet, DaemonSet and Job own
their pods directly. A pod without a controller is its own workload.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from temper.errors import KubernetesError, TemperError
from temper.kube import KubeClient

log = logging.getLogger(__name__)

# kind -> (API group path, resource, path of the pod template inside the object)
WORKLOAD_KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "Deployment": ("apis/apps/v1", "deployments", ("spec", "template")),
    "StatefulSet": ("apis/apps/v1", "statefulsets", ("spec", "template")),
    "DaemonSet": ("apis/apps/v1", "daemonsets", ("spec", "template")),
    "ReplicaSet": ("apis/apps/v1", "replicasets", ("spec", "template")),
    "Job": ("apis/batch/v1", "jobs", ("spec", "template")),
    "CronJob": ("apis/batch/v1", "cronjobs", ("spec", "jobTemplate", "spec", "template")),
    "Pod": ("api/v1", "pods", ()),
}
# Owners followed one level further up.
_PARENTS = {"ReplicaSet": "Deployment", "Job": "CronJob"}


class UnknownWorkloadKindError(TemperError, ValueError):
    """A workload kind the rightsizer does not handle."""


@dataclass(frozen=True, slots=True, order=True)
class Workload:
    """A namespaced workload object."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name} -n {self.namespace}"

    @property
    def path(self) -> str:
        """The object's API path."""
        group, resource, _template = WORKLOAD_KINDS[self.kind]
        return f"/{group}/namespaces/{self.namespace}/{resource}/{self.name}"


def parse_workload(reference: str, namespace: str) -> Workload:
    """Parse ``deployment/web`` (kind case-insensitive, plural accepted) into a Workload."""
    kind_text, _, name = reference.partition("/")
    lowered = kind_text.lower()
    for kind, (_group, resource, _template) in WORKLOAD_KINDS.items():
        if lowered in (kind.lower(), resource) and name:
            return Workload(kind, namespace, name)
    raise UnknownWorkloadKindError(
        f"invalid workload {reference!r}: expected KIND/NAME with KIND one of "
        f"{', '.join(k.lower() for k in WORKLOAD_KINDS)}"
    )


def pod_template(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the pod template (metadata and spec) of a workload object, or the pod itself."""
    node: Any = obj
    for key in WORKLOAD_KINDS[kind][2]:
        node = (node or {}).get(key)
    return node or {}


def _controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    for reference in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("kind")), str(reference.get("name"))
    return None


class OwnerResolver:
    """Resolves pods to workloads, caching the intermediate ReplicaSets and Jobs."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self._parents: dict[Workload, Workload] = {}

    async def _parent(self, child: Workload) -> Workload:
        cached = self._parents.get(child)
        if cached is not None:
            return cached
        parent = child
        try:
            obj = await self._client.get(child.path)
        except KubernetesError as error:
            if error.status != 404:
                raise
            obj = {}
        owner = _controller(obj)
        if owner is not None and owner[0] == _PARENTS.get(child.kind):
            parent = Workload(owner[0], child.namespace, owner[1])
        self._parents[child] = parent
        return parent

    async def owner_of_pod(self, namespace: str, pod: str) -> Workload | None:
        """Return the pod's workload, or None when the pod no longer exists."""
        try:
            obj = await self._client.get(f"/api/v1/namespaces/{namespace}/pods/{pod}")
        except KubernetesError as error:
            if error.status == 404:
                return None
            raise
        return await self.owner_of_object(obj)

    async def owner_of_object(self, obj: Mapping[str, Any]) -> Workload:
        """Return the workload of a pod object already read from the API server."""
        metadata = obj.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        pod = str(metadata.get("name", ""))
        owner = _controller(obj)
        if owner is None:
            return Workload("Pod", namespace, pod)
        kind, name = owner
        if kind not in WORKLOAD_KINDS:
            log.info(
                "pod has an owner kind the rightsizer does not handle, treated as a bare pod",
                extra={"pod": f"{namespace}/{pod}", "owner_kind": kind},
            )
            return Workload("Pod", namespace, pod)
        workload = Workload(kind, namespace, name)
        if kind in _PARENTS:
            workload = await self._parent(workload)
        return workload
