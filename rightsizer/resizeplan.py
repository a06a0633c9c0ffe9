"""Resize plans of the applier: the containers it resizes to the tracking request, and why not.

Pure functions over a pod as the API server returns it and its workload's recommendation;
the API calls are in :mod:`rightsizer.resizer`. For each container that the recommendation
names, the new CPU request is the tracking request bounded in this order:

1. at least the floor ``min_cpu_millicores``;
2. at most the container's CPU limit, if it has one (the limit wins over the floor);
3. the pod's QoS class must not change (the API server rejects such a resize). A Burstable
   pod whose CPU and memory requests would all equal their limits would turn Guaranteed, so a
   container that would reach its limit stays 1m under it.

Then the hysteresis: the container is resized only when the bounded request differs from
its current request by more than ``hysteresis_fraction`` of the current request.
Guaranteed pods are never resized, because their requests must equal their limits.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from rightsizer.annotation import Status, WorkloadRecommendation
from rightsizer.owners import Workload
from temper.annotations import RIGHTSIZE_APPLY_OFF, RIGHTSIZE_APPLY_TRACKING
from temper.errors import InvalidQuantityError
from temper.quantity import cpu_millicores, format_cpu_millicores, parse_quantity

TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# The kubelet sets this pod condition while it cannot actuate a resize yet (reason Deferred)
# or at all on this node (reason Infeasible).
RESIZE_PENDING_CONDITION = "PodResizePending"
RESIZE_INFEASIBLE = "Infeasible"
QOS_RESOURCES = ("cpu", "memory")


class SkipReason(StrEnum):
    """Reason a pod or container keeps its CPU request; also the label value of a metric."""

    NO_RECOMMENDATION = "no-recommendation"
    NO_TRACKING = "no-tracking-request"
    EXPIRED = "expired"
    DISMISSED = "dismissed"
    NOT_SCHEDULED = "not-scheduled"
    TERMINATED = "terminated"
    DELETING = "deleting"
    STATIC_POD = "static-pod"
    GUARANTEED = "guaranteed"
    BEST_EFFORT = "best-effort"
    POD_LEVEL_RESOURCES = "pod-level-resources"
    NOT_RECOMMENDED = "container-not-recommended"
    NO_CPU_REQUEST = "no-cpu-request"
    INVALID_QUANTITY = "invalid-quantity"
    WITHIN_HYSTERESIS = "within-hysteresis"
    RESIZE_INFEASIBLE = "resize-infeasible"
    RATE_LIMITED = "rate-limited"


class Bound(StrEnum):
    """The bound that changed a tracking request before it was applied."""

    FLOOR = "floor"
    LIMIT = "limit"
    BELOW_LIMIT = "below-limit"  # 1m under the limit, so the pod stays Burstable


@dataclass(frozen=True)
class ApplyPolicy:
    """The applier's bounds, from the settings."""

    hysteresis_fraction: float
    min_cpu_millicores: int


@dataclass(frozen=True)
class ContainerChange:
    """A CPU request the applier sets, in millicores."""

    name: str
    old_millicores: int
    new_millicores: int
    tracking_millicores: int
    bound: Bound | None = None

    @property
    def relative_change(self) -> float:
        """The change as a fraction of the old request."""
        return abs(self.new_millicores - self.old_millicores) / self.old_millicores


@dataclass(frozen=True)
class Skip:
    """A pod (``container`` None) or a container that keeps its request, and why."""

    container: str | None
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class ResizePending:
    """The kubelet's PodResizePending condition on a pod."""

    reason: str  # Deferred or Infeasible
    message: str


@dataclass
class PodPlan:
    """The resize of one pod: the containers to change and the ones skipped."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    workload: Workload
    changes: list[ContainerChange] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    pending: ResizePending | None = None

    @property
    def pod(self) -> str:
        """``namespace/name`` of the pod."""
        return f"{self.namespace}/{self.name}"

    @property
    def priority(self) -> tuple[int, float]:
        """Sort key under the rate limit: increases first, then the largest change."""
        increase = any(c.new_millicores > c.old_millicores for c in self.changes)
        largest = max((c.relative_change for c in self.changes), default=0.0)
        return (0 if increase else 1, -largest)


def label_problem(value: str | None) -> str | None:
    """Return what is wrong with an opt-in label value, or None when it is valid or absent."""
    if value is None or value in (RIGHTSIZE_APPLY_TRACKING, RIGHTSIZE_APPLY_OFF):
        return None
    return (
        f"value {value!r} is neither {RIGHTSIZE_APPLY_TRACKING!r} (resize in place) nor "
        f"{RIGHTSIZE_APPLY_OFF!r} (leave alone); treated as {RIGHTSIZE_APPLY_OFF!r}"
    )


def opted_in(namespace_value: str | None, workload_value: str | None) -> bool:
    """Return whether a workload's pods are resized: its own label wins over its namespace's."""
    if workload_value is not None:
        return workload_value == RIGHTSIZE_APPLY_TRACKING
    return namespace_value == RIGHTSIZE_APPLY_TRACKING


def expiry_seconds(recommendation: WorkloadRecommendation) -> float | None:
    """Return when the tracking requests stop holding, or None when there are none.

    A tracking request covers ``trk_s`` seconds after its data ends, and the data ends at
    the window's end, at the latest at the computation time ``ts``. When the collector
    stopped, the window's end lies in the past, so the request expires even if ``ts`` is new.
    """
    if recommendation.tracking_seconds is None:
        return None
    start = min(recommendation.timestamp_seconds, recommendation.window_end_seconds)
    return start + recommendation.tracking_seconds


def recommendation_skip(recommendation: WorkloadRecommendation, now_seconds: float) -> Skip | None:
    """Return why no pod of the workload may be resized now, or None when they may."""
    if recommendation.status is Status.DISMISSED:
        return Skip(None, SkipReason.DISMISSED, "the recommendation was dismissed")
    expires = expiry_seconds(recommendation)
    if expires is None:
        return Skip(
            None,
            SkipReason.NO_TRACKING,
            "the recommendation has no tracking request (written before trk_s existed); run "
            "`temper rightsize recommend` again",
        )
    if now_seconds > expires:
        return Skip(
            None,
            SkipReason.EXPIRED,
            f"the tracking request expired {now_seconds - expires:.0f} s ago; it is refreshed "
            "from the history each apply interval, so check that collection is running",
        )
    return None


def resize_pending(pod: Mapping[str, Any]) -> ResizePending | None:
    """Return the pod's PodResizePending condition, or None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == RESIZE_PENDING_CONDITION and condition.get("status") == "True":
            reason = str(condition.get("reason", ""))
            return ResizePending(reason, str(condition.get("message", "")))
    return None


def _positive(resources: Mapping[str, Any], name: str) -> Decimal | None:
    raw = resources.get(name)
    if raw is None:
        return None
    value = parse_quantity(raw)
    return value if value > 0 else None


def qos_class(spec: Mapping[str, Any], cpu_requests: Mapping[str, int] | None = None) -> str:
    """Return the QoS class of a pod spec, as Kubernetes computes it from container resources.

    ``cpu_requests`` replaces the CPU request of the named regular containers (millicores).
    Pod-level resources are not considered. Raises InvalidQuantityError on a bad quantity.
    """
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for list_key in ("initContainers", "containers"):
        for container in spec.get(list_key) or []:
            resources = container.get("resources") or {}
            own_requests = dict(resources.get("requests") or {})
            name = container.get("name")
            if list_key == "containers" and cpu_requests and name in cpu_requests:
                own_requests["cpu"] = format_cpu_millicores(cpu_requests[name])
            found_limits = set()
            for resource in QOS_RESOURCES:
                request = _positive(own_requests, resource)
                if request is not None:
                    requests[resource] = requests.get(resource, Decimal(0)) + request
                limit = _positive(resources.get("limits") or {}, resource)
                if limit is not None:
                    found_limits.add(resource)
                    limits[resource] = limits.get(resource, Decimal(0)) + limit
            if found_limits != set(QOS_RESOURCES):
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(name) == value for name, value in requests.items()):
        return "Guaranteed" if len(requests) == len(limits) else "Burstable"
    return "Burstable"


def _pod_skip(pod: Mapping[str, Any]) -> Skip | None:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase")

    if phase in TERMINATED_PHASES:
        return Skip(None, SkipReason.TERMINATED, f"the pod has terminated ({phase})")
    if metadata.get("deletionTimestamp"):
        return Skip(None, SkipReason.DELETING, "the pod is being deleted")
    if MIRROR_ANNOTATION in (metadata.get("annotations") or {}):
        return Skip(None, SkipReason.STATIC_POD, "static pods cannot be resized")
    if not spec.get("nodeName"):
        return Skip(None, SkipReason.NOT_SCHEDULED, "the pod is not bound to a node yet")

    if spec.get("resources"):
        return Skip(
            None,
            SkipReason.POD_LEVEL_RESOURCES,
            "the pod sets pod-level resources, which the applier does not resize",
        )
    try:
        # Parsing every quantity here lets the later steps assume they are valid.
        computed = qos_class(spec)
    except InvalidQuantityError as error:
        return Skip(None, SkipReason.INVALID_QUANTITY, str(error))
    qos = status.get("qosClass") or computed

    if qos == "Guaranteed":
        return Skip(
            None,
            SkipReason.GUARANTEED,
            "Guaranteed QoS: requests must equal limits, and a resize may not change the QoS class",
        )
    if qos == "BestEffort":
        return Skip(None, SkipReason.BEST_EFFORT, "BestEffort QoS: the pod has no CPU request")
    return None


def _millicores(resources: Mapping[str, Any], section: str) -> int | None:
    raw = (resources.get(section) or {}).get("cpu")
    return None if raw is None else cpu_millicores(raw)


def _bounded_target(
    tracking_m: int, limit_m: int | None, policy: ApplyPolicy
) -> tuple[int, Bound | None]:
    target, bound = tracking_m, None
    if target < policy.min_cpu_millicores:
        target, bound = policy.min_cpu_millicores, Bound.FLOOR
    if limit_m is not None and target > limit_m:
        target, bound = limit_m, Bound.LIMIT
    return target, bound


def _keep_qos_class(
    spec: Mapping[str, Any], qos: str, targets: dict[str, ContainerChange]
) -> dict[str, ContainerChange]:
    """Lower the containers that would reach their limit by 1m if the QoS class would change."""
    new_requests = {name: change.new_millicores for name, change in targets.items()}
    if qos_class(spec, new_requests) == qos:
        return targets
    limits = {
        str(container.get("name")): _millicores(container.get("resources") or {}, "limits")
        for container in spec.get("containers") or []
    }
    kept: dict[str, ContainerChange] = {}
    for name, change in targets.items():
        if change.new_millicores == limits.get(name) and change.new_millicores > 1:
            kept[name] = ContainerChange(
                name,
                change.old_millicores,
                change.new_millicores - 1,
                change.tracking_millicores,
                Bound.BELOW_LIMIT,
            )
        else:
            kept[name] = change
    return kept


def plan_pod(
    pod: Mapping[str, Any],
    workload: Workload,
    recommendation: WorkloadRecommendation | None,
    policy: ApplyPolicy,
    now_seconds: float,
) -> PodPlan:
    """Plan the in-place resize of one pod of an opted-in workload."""
    metadata = pod.get("metadata") or {}
    plan = PodPlan(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        workload=workload,
        pending=resize_pending(pod),
    )
    if recommendation is None:
        plan.skips.append(
            Skip(None, SkipReason.NO_RECOMMENDATION, "the workload has no recommendation yet")
        )
        return plan
    skip = _pod_skip(pod) or recommendation_skip(recommendation, now_seconds)
    if skip is not None:
        plan.skips.append(skip)
        return plan

    # Bound each container's tracking request by the floor and its limit.
    spec = pod.get("spec") or {}
    targets: dict[str, ContainerChange] = {}
    for container in spec.get("containers") or []:
        name = str(container.get("name", ""))
        advice = recommendation.containers.get(name)
        if advice is None or advice.tracking_request_millicores is None:
            plan.skips.append(
                Skip(name, SkipReason.NOT_RECOMMENDED, "no tracking request for this container")
            )
            continue
        resources = container.get("resources") or {}
        current_m = _millicores(resources, "requests")
        limit_m = _millicores(resources, "limits")
        if current_m is None or current_m <= 0:
            plan.skips.append(
                Skip(name, SkipReason.NO_CPU_REQUEST, "the container has no CPU request to resize")
            )
            continue
        tracking_m = advice.tracking_request_millicores
        target, bound = _bounded_target(tracking_m, limit_m, policy)
        targets[name] = ContainerChange(name, current_m, target, tracking_m, bound)

    # A resize may not change the QoS class.
    qos = (pod.get("status") or {}).get("qosClass") or qos_class(spec)
    targets = _keep_qos_class(spec, qos, targets)

    # Hysteresis, and no increase while the kubelet reports the last resize as infeasible.
    for name, change in targets.items():
        difference = abs(change.new_millicores - change.old_millicores)
        if difference <= policy.hysteresis_fraction * change.old_millicores:
            plan.skips.append(
                Skip(
                    name,
                    SkipReason.WITHIN_HYSTERESIS,
                    f"{change.new_millicores}m is within {policy.hysteresis_fraction:.0%} of the "
                    f"current {change.old_millicores}m",
                )
            )
        elif (
            plan.pending is not None
            and plan.pending.reason == RESIZE_INFEASIBLE
            and change.new_millicores > change.old_millicores
        ):
            plan.skips.append(
                Skip(
                    name,
                    SkipReason.RESIZE_INFEASIBLE,
                    f"the kubelet reports the last resize as infeasible ({plan.pending.message}); "
                    "only decreases are applied until it is resolved",
                )
            )
        else:
            plan.changes.append(change)
    return plan


def _cpu(change: ContainerChange) -> str:
    return format_cpu_millicores(change.new_millicores)


def resize_patch(plan: PodPlan) -> dict[str, Any]:
    """Return the strategic merge patch for ``pods/resize`` that sets the new CPU requests.

    Containers merge by name, so other containers and resources stay as they are. The
    resourceVersion makes the API server return 409 Conflict when the pod changed since it
    was read, so a resize never overwrites a change the plan did not see.
    """
    return {
        "metadata": {"resourceVersion": plan.resource_version},
        "spec": {
            "containers": [
                {"name": change.name, "resources": {"requests": {"cpu": _cpu(change)}}}
                for change in plan.changes
            ]
        },
    }
