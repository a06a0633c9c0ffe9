"""Observation targets: the pods on this node, their tier, and their container cgroups."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.cgroups import (
    CgroupLayout,
    CgroupVersion,
    container_cgroup_name,
    pod_cgroup_relative_path,
)
from agent.podinfo import pod_info
from temper.errors import InvalidQuantityError
from temper.tiers import Tier

_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


@dataclass(frozen=True)
class PodTarget:
    """One running pod and where its threads live."""

    uid: str
    namespace: str
    name: str
    tier: Tier
    cgroup: str
    directory: Path
    # Container cgroup directory name -> (container name, status containerID).
    containers: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def tasks_file(layout: CgroupLayout) -> str:
    """Return the name of the file listing a cgroup's threads (``tasks`` or ``cgroup.threads``)."""
    return "cgroup.threads" if layout.version is CgroupVersion.V2 else "tasks"


def pod_target(pod: Mapping[str, Any], layout: CgroupLayout) -> PodTarget | None:
    """Build the target of a pod dict; None for finished pods and pods with invalid quantities."""
    try:
        info = pod_info(pod)
    except InvalidQuantityError:
        return None  # the reconcile loop reports these
    if info.terminal or not info.uid:
        return None
    metadata = pod.get("metadata") or {}
    containers: dict[str, tuple[str, str]] = {}
    status = pod.get("status") or {}
    for key in _STATUS_LISTS:
        for container in status.get(key) or []:
            container_id = container.get("containerID")
            if container_id:
                directory = container_cgroup_name(container_id, layout.driver)
                containers[directory] = (str(container.get("name", "")), str(container_id))
    return PodTarget(
        uid=info.uid,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        tier=info.tier,
        cgroup=pod_cgroup_relative_path(info.cgroup_uid, info.qos, layout.driver) + "/",
        directory=layout.pod_directory(info.cgroup_uid, info.qos, "cpu"),
        containers=containers,
    )


class TargetCache:
    """Pod targets, recomputed only for pods whose resourceVersion changed."""

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout
        self._cache: dict[str, tuple[str, PodTarget | None]] = {}

    def targets(self, pods: Iterable[Mapping[str, Any]]) -> list[PodTarget]:
        """Targets of the running pods among ``pods``."""
        fresh: dict[str, tuple[str, PodTarget | None]] = {}
        result = []
        for pod in pods:
            metadata = pod.get("metadata") or {}
            uid = str(metadata.get("uid", ""))
            version = str(metadata.get("resourceVersion", ""))
            cached = self._cache.get(uid)
            if cached is not None and cached[0] == version and version:
                target = cached[1]
            else:
                target = pod_target(pod, self.layout)
            fresh[uid] = (version, target)
            if target is not None:
                result.append(target)
        self._cache = fresh
        return result
