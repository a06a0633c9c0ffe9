"""What the agent needs from a pod: tier, QoS class, CPU requests and limits, cgroup UID."""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from temper.errors import InvalidQuantityError
from temper.kube import object_key
from temper.quantity import cpu_millicores, parse_quantity
from temper.tiers import Tier, has_temper_class, pod_tier

# The kubelet names a static pod's cgroup after its config hash, not the API object's UID.
CONFIG_HASH_ANNOTATION = "kubernetes.io/config.hash"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class QosClass(StrEnum):
    """Kubernetes pod QoS classes."""

    GUARANTEED = "Guaranteed"
    BURSTABLE = "Burstable"
    BEST_EFFORT = "BestEffort"


@dataclass(frozen=True)
class PodInfo:
    """A pod bound to this node, reduced to what the layer config and tier-load need."""

    key: str
    uid: str
    cgroup_uid: str
    tier: Tier
    temper_class: bool
    qos: QosClass
    cpu_request_millicores: int
    cpu_limit_millicores: int | None
    phase: str

    @property
    def terminal(self) -> bool:
        """True when the pod's containers have finished (phase Succeeded or Failed)."""
        return self.phase in ("Succeeded", "Failed")


def _container_resources(container: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = container.get("resources") or {}
    return dict(resources.get("requests") or {}), dict(resources.get("limits") or {})


def qos_class(pod: Mapping[str, Any]) -> QosClass:
    """Return the QoS class: ``status.qosClass`` when set, else computed from the containers."""
    reported = (pod.get("status") or {}).get("qosClass")
    if reported in {q.value for q in QosClass}:
        return QosClass(reported)
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    guaranteed = True
    any_set = False
    for container in containers:
        requests, limits = _container_resources(container)
        if requests or limits:
            any_set = True
        for resource in ("cpu", "memory"):
            limit = limits.get(resource)
            if limit is None:
                guaranteed = False
                continue
            # Requests default to limits when only the limit is given.
            request = requests.get(resource, limit)
            if parse_quantity(request) != parse_quantity(limit):
                guaranteed = False
    if not any_set:
        return QosClass.BEST_EFFORT
    return QosClass.GUARANTEED if guaranteed else QosClass.BURSTABLE


def pod_cpu_millicores(pod: Mapping[str, Any]) -> tuple[int, int | None]:
    """Effective CPU (request, limit) of a pod in millicores, as the scheduler computes them.

    Regular containers add up; an init container counts only if it needs more than that
    (restartable sidecar init containers add to the sum). The limit is None when any regular
    container has no CPU limit.
    """
    spec = pod.get("spec") or {}
    request_sum = 0
    limit_sum: int | None = 0
    for container in spec.get("containers") or []:
        requests, limits = _container_resources(container)
        limit = limits.get("cpu")
        request = requests.get("cpu", limit)
        request_sum += cpu_millicores(request) if request is not None else 0
        if limit is None or limit_sum is None:
            limit_sum = None
        else:
            limit_sum += cpu_millicores(limit)
    sidecars = 0
    init_peak = 0
    for container in spec.get("initContainers") or []:
        requests, limits = _container_resources(container)
        request = requests.get("cpu", limits.get("cpu"))
        value = cpu_millicores(request) if request is not None else 0
        if container.get("restartPolicy") == "Always":
            sidecars += value
        else:
            init_peak = max(init_peak, sidecars + value)
    return max(request_sum + sidecars, init_peak), limit_sum


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    """Reduce a pod dict; raise InvalidQuantityError when a CPU quantity is malformed."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    uid = str(metadata.get("uid", ""))
    try:
        request, limit = pod_cpu_millicores(pod)
        qos = qos_class(pod)
    except InvalidQuantityError as error:
        raise InvalidQuantityError(f"pod {object_key(pod)}: {error}") from error
    return PodInfo(
        key=object_key(pod),
        uid=uid,
        cgroup_uid=str(annotations.get(CONFIG_HASH_ANNOTATION) or uid),
        tier=pod_tier(pod),
        temper_class=has_temper_class(pod),
        qos=qos,
        cpu_request_millicores=request,
        cpu_limit_millicores=limit,
        phase=str((pod.get("status") or {}).get("phase", "Pending")),
    )
