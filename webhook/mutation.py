"""Scale down the CPU requests of a Pod under admission, as RFC 6902 JSON Patch operations.

The webhook receives the Pod after defaulting, so a container that set only a CPU limit already
carries a request equal to that limit. The rules, checked in this order:

1. Mirror pods (annotation ``kubernetes.io/config.mirror``) are left alone: the kubelet runs
   the manifest on disk, so the API copy must not change.
2. A pod that already carries ``temper.codes/original-requests`` was mutated before
   (reinvocation, or a manifest copied from a mutated pod): no patch.
3. Pods of the system classes (``system-node-critical``, ``system-cluster-critical``, or a
   priority in the range reserved for them) and pods of the critical tier are left alone.
4. Pods with pod-level CPU resources are left alone, because the scheduler uses the pod-level
   request, which container changes would not lower.
5. Guaranteed pods are left alone, because a lower request would make them Burstable.
6. Per container (init containers, restartable sidecars included, and regular containers):
   a container without a CPU request, or whose request equals its limit, keeps it. A
   limits-only container arrives with a request defaulted from the limit, and the webhook
   cannot tell that from a request written equal to the limit, so both keep their request.
7. Otherwise the request becomes ``ceil(request * factor)``, raised to the floor, and never
   above the original request. The floor is the largest of ``min_cpu_millicores``, the
   namespace's LimitRange ``min`` for type Container and, when a LimitRange sets
   ``maxLimitRequestRatio`` for type Container, ``limit / ratio``. Limits and memory are never
   touched.
8. When the scaled pod would break a LimitRange constraint of type Pod (``min`` or
   ``maxLimitRequestRatio`` on the pod's aggregate CPU), the whole pod is left unchanged,
   because LimitRanger validates after the webhook and would reject the pod.

When any request changes, the originals of every container go into the annotation
``temper.codes/original-requests``.
"""

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from temper.annotations import ORIGINAL_REQUESTS, OriginalRequests
from temper.errors import InvalidQuantityError, TemperError
from temper.quantity import cpu_millicores, format_cpu_millicores, parse_quantity
from temper.tiers import SYSTEM_CLASSES, SYSTEM_PRIORITY_MIN, Tier, pod_tier
from webhook.limitranges import (
    NO_LIMIT_RANGE,
    CpuLimitRange,
    pod_cpu_total,
    ratio_exceeded,
    ratio_floor_millicores,
)
from webhook.settings import WebhookSettings

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CONTAINER_LISTS = ("initContainers", "containers")

# Pods repeat a few quantity strings ("1", "500m", "64Mi"), and parsing them into Decimals
# was the largest part of the rules' CPU time. Both results are immutable.
_cached_quantity = functools.lru_cache(maxsize=1024)(parse_quantity)
_cached_millicores = functools.lru_cache(maxsize=1024)(cpu_millicores)


def _quantity(value: Any) -> Decimal:
    """Return parse_quantity(value), from a cache for strings."""
    return _cached_quantity(value) if isinstance(value, str) else parse_quantity(value)


def _millicores(value: Any) -> int:
    """Return cpu_millicores(value), from a cache for strings."""
    return _cached_millicores(value) if isinstance(value, str) else cpu_millicores(value)


class InvalidPodError(TemperError, ValueError):
    """The object under admission does not have the shape of a v1 Pod."""


@dataclass(frozen=True)
class Mutation:
    """JSON Patch operations for one Pod, and the warnings returned to the API client.

    ``skip_reason`` is the reason the whole pod is left unchanged. It is None when the rules
    were applied to each container, and the patch may still be empty then.
    """

    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    tier: Tier | None = None


def escape_pointer_token(token: str) -> str:
    """Escape one JSON Pointer reference token (RFC 6901): ``~`` as ``~0``, ``/`` as ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def _mapping(parent: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """Return ``parent[key]`` as a dict, with a missing or null value as an empty dict."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidPodError(f"{where}.{key} is {type(value).__name__}, expected an object")
    return value


def _containers(spec: Mapping[str, Any], list_key: str) -> list[dict[str, Any]]:
    value = spec.get(list_key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidPodError(f"spec.{list_key} must be a list of objects")
    for index, container in enumerate(value):
        if not isinstance(container.get("name"), str):
            raise InvalidPodError(f"spec.{list_key}[{index}].name is missing or not a string")
    return value


def _resource_lists(container: Mapping[str, Any], where: str) -> tuple[dict[str, Any], ...]:
    resources = _mapping(container, "resources", where)
    requests = _mapping(resources, "requests", f"{where}.resources")
    limits = _mapping(resources, "limits", f"{where}.resources")
    return requests, limits


def _is_guaranteed(containers: list[tuple[str, dict[str, Any]]]) -> bool:
    """Apply the QoS rule: every container has equal, non-zero CPU and memory request and limit.

    A missing request counts as equal to the limit, as defaulting would make it.
    """
    if not containers:
        return False
    for where, container in containers:
        requests, limits = _resource_lists(container, where)
        for resource in ("cpu", "memory"):
            limit = limits.get(resource)
            request = requests.get(resource, limit)
            if limit is None or request is None:
                return False
            try:
                if _quantity(request) != _quantity(limit) or _quantity(limit) == 0:
                    return False
            except InvalidQuantityError:
                return False
    return True


def _pod_skip_reason(pod: Mapping[str, Any]) -> str | None:
    metadata = _mapping(pod, "metadata", "pod")
    annotations = _mapping(metadata, "annotations", "metadata")
    if MIRROR_ANNOTATION in annotations:
        return "mirror pod"
    if ORIGINAL_REQUESTS in annotations:
        return f"already carries {ORIGINAL_REQUESTS}"
    spec = _mapping(pod, "spec", "pod")
    priority = spec.get("priority")
    if spec.get("priorityClassName") in SYSTEM_CLASSES or (
        isinstance(priority, int) and priority >= SYSTEM_PRIORITY_MIN
    ):
        return "system priority class"
    return None


def _annotation_operation(pod: Mapping[str, Any], value: str) -> dict[str, Any]:
    """Return the JSON Patch operation that adds the original-requests annotation."""
    if pod.get("metadata") is None:
        return {
            "op": "add",
            "path": "/metadata",
            "value": {"annotations": {ORIGINAL_REQUESTS: value}},
        }
    if pod["metadata"].get("annotations") is None:
        return {"op": "add", "path": "/metadata/annotations", "value": {ORIGINAL_REQUESTS: value}}
    path = "/metadata/annotations/" + escape_pointer_token(ORIGINAL_REQUESTS)
    return {"op": "add", "path": path, "value": value}


def _scaled_millicores(
    original: Any,
    limit: Any,
    factor: float,
    floor_millicores: int,
    max_limit_request_ratio: Decimal | None,
) -> int | None:
    """Return the new request in millicores, or None when the request stays as it is.

    Raises InvalidQuantityError for a request or limit that is not a quantity.
    """
    if limit is not None and _quantity(limit) == _quantity(original):
        return None
    if limit is not None and max_limit_request_ratio is not None:
        floor_millicores = max(
            floor_millicores, ratio_floor_millicores(_millicores(limit), max_limit_request_ratio)
        )
    request = _millicores(original)
    # Decimal keeps 1000 * 0.6 at exactly 600, where float arithmetic would round up to 601.
    target = max(math.ceil(Decimal(request) * Decimal(str(factor))), floor_millicores)
    if target >= request:
        return None
    return target


def _pod_constraint_violation(
    entries: list[tuple[str, int, dict[str, Any]]],
    scaled: Mapping[tuple[str, int], int],
    limit_range: CpuLimitRange,
) -> str | None:
    """Return the LimitRange Pod constraint the scaled pod would break, or None.

    ``scaled`` maps (container list, index) to the new request of each scaled container.
    """
    pod_min = limit_range.pod_min_millicores
    pod_ratio = limit_range.pod_max_limit_request_ratio
    if not pod_min and pod_ratio is None:
        return None
    requests: dict[str, list[tuple[int | None, bool]]] = {key: [] for key in CONTAINER_LISTS}
    limits: dict[str, list[tuple[int | None, bool]]] = {key: [] for key in CONTAINER_LISTS}
    try:
        for list_key, index, container in entries:
            container_requests, container_limits = _resource_lists(
                container, f"spec.{list_key}[{index}]"
            )
            request = scaled.get((list_key, index))
            if request is None and container_requests.get("cpu") is not None:
                request = _millicores(container_requests["cpu"])
            limit = container_limits.get("cpu")
            restartable = container.get("restartPolicy") == "Always"
            requests[list_key].append((request, restartable))
            limits[list_key].append((None if limit is None else _millicores(limit), restartable))
    except InvalidQuantityError:
        # The API server rejects invalid quantities before admission, so only a hand-made
        # AdmissionReview gets here, and the per-container warnings already report it.
        return None
    request_total = pod_cpu_total(
        [value for value, _ in requests["containers"]], requests["initContainers"]
    )
    limit_total = pod_cpu_total(
        [value for value, _ in limits["containers"]], limits["initContainers"]
    )
    if request_total is None:
        return None
    if pod_min and request_total < pod_min:
        return f"min {format_cpu_millicores(pod_min)}"
    if (
        pod_ratio is not None
        and limit_total is not None
        and ratio_exceeded(limit_total, request_total, pod_ratio)
    ):
        return f"maxLimitRequestRatio {pod_ratio}"
    return None


def mutate_pod(
    pod: Mapping[str, Any],
    settings: WebhookSettings,
    limit_range: CpuLimitRange = NO_LIMIT_RANGE,
) -> Mutation:
    """Compute the JSON Patch that scales the pod's CPU requests by the module's rules.

    ``limit_range`` contains the CPU constraints of the pod's namespace. Raises InvalidPodError
    when the pod does not have the shape of a Pod.
    """
    if not isinstance(pod, Mapping):
        raise InvalidPodError(f"the object is {type(pod).__name__}, expected a Pod object")
    reason = _pod_skip_reason(pod)
    if reason is not None:
        return Mutation(skip_reason=reason)
    tier = pod_tier(pod)
    factor = settings.tier_factors().get(tier)
    if factor is None:
        return Mutation(skip_reason=f"{tier.value} tier", tier=tier)

    spec = _mapping(pod, "spec", "pod")
    pod_requests, pod_limits = _resource_lists(spec, "spec")
    if "cpu" in pod_requests or "cpu" in pod_limits:
        # NOTE: scaling spec.resources.requests.cpu as well would make these pods overcommit.
        return Mutation(
            warnings=["temper overcommit skipped this pod: it sets pod-level CPU resources"],
            skip_reason="pod-level CPU resources",
            tier=tier,
        )
    entries = [
        (list_key, index, container)
        for list_key in CONTAINER_LISTS
        for index, container in enumerate(_containers(spec, list_key))
    ]
    located = [(f"spec.{key}[{index}]", container) for key, index, container in entries]
    if not (pod_requests or pod_limits) and _is_guaranteed(located):
        return Mutation(skip_reason="Guaranteed QoS class", tier=tier)

    floor_millicores = max(settings.min_cpu_millicores, limit_range.container_min_millicores)
    originals: dict[str, dict[str, str | None]] = {key: {} for key in CONTAINER_LISTS}
    scaled_requests: dict[tuple[str, int], int] = {}
    patch: list[dict[str, Any]] = []
    warnings: list[str] = []
    for list_key, index, container in entries:
        name = container["name"]
        requests, limits = _resource_lists(container, f"spec.{list_key}[{index}]")
        original = requests.get("cpu")
        originals[list_key][name] = None if original is None else str(original)
        if original is None:
            continue
        try:
            scaled = _scaled_millicores(
                original,
                limits.get("cpu"),
                factor,
                floor_millicores,
                limit_range.container_max_limit_request_ratio,
            )
        except InvalidQuantityError as error:
            warnings.append(f"temper overcommit left container {name} unchanged: {error}")
            continue
        if scaled is None:
            continue
        scaled_requests[(list_key, index)] = scaled
        new_value = format_cpu_millicores(scaled)
        patch.append(
            {
                "op": "replace",
                "path": f"/spec/{list_key}/{index}/resources/requests/cpu",
                "value": new_value,
            }
        )
        # The API server passes warnings on as Warning headers; keep each under 120 chars.
        warnings.append(f"temper overcommit: {name} cpu request {original} -> {new_value}")

    if not patch:
        return Mutation(warnings=warnings, tier=tier)
    violation = _pod_constraint_violation(entries, scaled_requests, limit_range)
    if violation is not None:
        return Mutation(
            warnings=[
                "temper overcommit skipped this pod: scaled CPU requests would break the "
                f"LimitRange Pod {violation}"
            ],
            skip_reason=f"LimitRange Pod {violation}",
            tier=tier,
        )
    record = OriginalRequests(
        containers=originals["containers"], init_containers=originals["initContainers"]
    )
    patch.append(_annotation_operation(pod, record.encode()))
    return Mutation(patch=patch, warnings=warnings, tier=tier)
