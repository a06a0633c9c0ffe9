"""Watch-fed state of the extender: each Node's tier load and the pods bound since then.

The request handlers read only this cache and never call the API server. Two reflectors feed
it. The one on Nodes keeps the parsed ``temper.codes/tier-load`` value per node name. The one
on bound pods (``spec.nodeName!=``) records when each pod was bound, so the requests of pods
bound after a node's last tier-load value can be subtracted from that value.

Work is done when data changes, not per request: an annotation is parsed only when its text
changes, and a node's :class:`~extender.scoring.NodeCapacity` is recomputed only when its
value or its bound pods change. The capacities live in a
:class:`~extender.table.CapacityTable`, whose NumPy columns the handlers read. The reflectors
store reduced objects (see :func:`reduce_node` and :func:`reduce_pod`), so memory grows with
the number of nodes and pods, not with the size of their status.
"""

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from extender.scoring import MAX_FREE_MILLICORES, NodeCapacity, node_capacity, pod_demand
from extender.table import CapacityTable
from temper.annotations import TIER_LOAD, TierLoad
from temper.errors import InvalidAnnotationError, InvalidQuantityError
from temper.kube import JsonObject, KubeClient, Reflector, object_key
from temper.tiers import Tier

log = logging.getLogger(__name__)

# PodScheduled.lastTransitionTime has one-second resolution: a pod counts as bound at the end
# of that second, so it may count twice for one publish interval but is never missed.
CONDITION_TIME_RESOLUTION_SECONDS = 1.0
# Invalid values remembered per node for log-once; the set is cleared when it grows past this.
MAX_REPORTED_VALUES_PER_NODE = 64
TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})
# Pod spec fields that pod_demand reads besides the containers.
_POD_SPEC_FIELDS = ("nodeName", "priorityClassName", "priority", "overhead", "resources")


def reduce_node(node: JsonObject) -> JsonObject:
    """Keep only the name and the tier-load annotation of a Node; the cache reads nothing else."""
    metadata = node.get("metadata") or {}
    reduced: JsonObject = {"name": metadata.get("name", "")}
    raw = (metadata.get("annotations") or {}).get(TIER_LOAD)
    if raw is not None:
        reduced["annotations"] = {TIER_LOAD: raw}
    return {"metadata": reduced}


def _reduce_containers(containers: Any) -> list[JsonObject]:
    if not isinstance(containers, list):
        return []
    reduced = []
    for container in containers:
        if not isinstance(container, dict):
            continue
        entry: JsonObject = {}
        cpu = ((container.get("resources") or {}).get("requests") or {}).get("cpu")
        if cpu is not None:
            entry["resources"] = {"requests": {"cpu": cpu}}
        if "restartPolicy" in container:
            entry["restartPolicy"] = container["restartPolicy"]
        reduced.append(entry)
    return reduced


def reduce_pod(pod: JsonObject) -> JsonObject:
    """Keep only the Pod fields that pod_demand, scheduled_at_seconds and the cache read.

    ``pod_demand`` and ``scheduled_at_seconds`` return the same for the reduced pod as for the
    full one. A change to the fields they read must be made here too.

    NOTE: a reduced pod still takes about 2 KB of memory (tracemalloc, a one-container pod),
    so 100,000 bound pods take about 200 MB.
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    reduced_spec: JsonObject = {key: spec[key] for key in _POD_SPEC_FIELDS if key in spec}
    for key in ("containers", "initContainers"):
        if key in spec:
            reduced_spec[key] = _reduce_containers(spec[key])
    conditions = [
        {key: condition.get(key) for key in ("type", "status", "lastTransitionTime")}
        for condition in status.get("conditions") or []
        if isinstance(condition, dict) and condition.get("type") == "PodScheduled"
    ]
    reduced_status: JsonObject = {"conditions": conditions}
    if "phase" in status:
        reduced_status["phase"] = status["phase"]
    return {
        "metadata": {key: metadata[key] for key in ("name", "namespace") if key in metadata},
        "spec": reduced_spec,
        "status": reduced_status,
    }


def _check_capacities(tier_load: TierLoad) -> None:
    """Raise InvalidAnnotationError for a protection capacity the scoring cannot represent."""
    for tier, entry in tier_load.tiers.items():
        if entry.protection_capacity_millicores > MAX_FREE_MILLICORES:
            raise InvalidAnnotationError(
                f"annotation {TIER_LOAD}: tier {tier.value!r} has cap_m="
                f"{entry.protection_capacity_millicores}, above the maximum of "
                f"{MAX_FREE_MILLICORES} millicores; check the agent that wrote it"
            )


class AnnotationDecoder:
    """Decodes tier-load values, logging each invalid value once per node."""

    def __init__(self) -> None:
        self._reported: dict[str, set[str]] = {}

    def decode(self, node_name: str, annotations: Mapping[str, Any] | None) -> TierLoad | None:
        """Return the parsed value, or None when it is missing or invalid."""
        raw = (annotations or {}).get(TIER_LOAD)
        if raw is None:
            return None
        try:
            if not isinstance(raw, str):
                raise InvalidAnnotationError(f"annotation {TIER_LOAD} is {raw!r}, not a string")
            tier_load = TierLoad.decode(raw)
            _check_capacities(tier_load)
            return tier_load
        except InvalidAnnotationError as error:
            reported = self._reported.setdefault(node_name, set())
            value = str(raw)
            if value not in reported:
                if len(reported) >= MAX_REPORTED_VALUES_PER_NODE:
                    reported.clear()
                reported.add(value)
                log.warning(
                    "invalid tier-load annotation, treating the node as without data",
                    extra={"node": node_name, "value": value[:500], "error": str(error)},
                )
            return None

    def forget(self, node_name: str) -> None:
        """Drop the log-once memory of a deleted node."""
        self._reported.pop(node_name, None)


@dataclass
class BoundPod:
    """A pod bound to a node, with what it takes from the node's tiers."""

    node_name: str
    tier: Tier
    cpu_request_millicores: int
    bound_at_seconds: float


def scheduled_at_seconds(pod: Mapping[str, Any]) -> float | None:
    """Return the end of the second in which PodScheduled became True, or None if unknown."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "PodScheduled" or condition.get("status") != "True":
            continue
        stamp = condition.get("lastTransitionTime")
        if not isinstance(stamp, str):
            return None
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        return moment.timestamp() + CONDITION_TIME_RESOLUTION_SECONDS
    return None


class BoundPodIndex:
    """Bound pods per node, sorted by binding time, so a query skips older pods."""

    def __init__(self) -> None:
        self._pods: dict[str, BoundPod] = {}
        self._by_node: dict[str, list[tuple[float, str]]] = {}

    def __len__(self) -> int:
        return len(self._pods)

    def get(self, key: str) -> BoundPod | None:
        """Return the record of a pod (``namespace/name``), if bound."""
        return self._pods.get(key)

    def put(self, key: str, pod: BoundPod) -> None:
        """Add or replace a pod's record."""
        self.remove(key)
        self._pods[key] = pod
        bisect.insort(self._by_node.setdefault(pod.node_name, []), (pod.bound_at_seconds, key))

    def remove(self, key: str) -> BoundPod | None:
        """Forget a pod and return its record; unknown keys are ignored and return None."""
        pod = self._pods.pop(key, None)
        if pod is None:
            return None
        entries = self._by_node[pod.node_name]
        entries.remove((pod.bound_at_seconds, key))
        if not entries:
            del self._by_node[pod.node_name]
        return pod

    def bound_since(self, node_name: str, timestamp_seconds: float) -> dict[Tier, int]:
        """Sum the CPU requests per tier of the node's pods bound after ``timestamp_seconds``."""
        entries = self._by_node.get(node_name, [])
        start = bisect.bisect_right(entries, timestamp_seconds, key=lambda entry: entry[0])
        totals: dict[Tier, int] = {}
        for _bound_at, key in entries[start:]:
            pod = self._pods[key]
            totals[pod.tier] = totals.get(pod.tier, 0) + pod.cpu_request_millicores
        return totals


class NodeCache:
    """Tier loads per node and bound pods, fed by two reflectors; see the module docstring."""

    def __init__(self, client: KubeClient, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._decoder = AnnotationDecoder()
        # Last annotation text per node, so an unchanged value is not parsed again.
        self._raw_values: dict[str, Any] = {}
        self._loads: dict[str, TierLoad] = {}
        self._capacities = CapacityTable()
        self._pods = BoundPodIndex()
        self._last_node_update_monotonic: float | None = None
        self._node_reflector = Reflector(
            client,
            "/api/v1/nodes",
            name="nodes",
            on_event=self._on_node_event,
            transform=reduce_node,
        )
        self._pod_reflector = Reflector(
            client,
            "/api/v1/pods",
            name="bound-pods",
            params={"fieldSelector": "spec.nodeName!="},
            on_event=self._on_pod_event,
            transform=reduce_pod,
        )

    async def run(self) -> None:
        """List and watch Nodes and bound pods until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._node_reflector.run(), name="extender/nodes")
            group.create_task(self._pod_reflector.run(), name="extender/bound-pods")

    def ready(self) -> bool:
        """True once both the Node list and the bound-pod list were loaded."""
        return self._node_reflector.synced.is_set() and self._pod_reflector.synced.is_set()

    async def wait_ready(self) -> None:
        """Return once both the Node list and the bound-pod list were loaded."""
        await self._node_reflector.synced.wait()
        await self._pod_reflector.synced.wait()

    @property
    def capacities(self) -> CapacityTable:
        """Free capacity per tier of every node with a valid tier-load value, fresh or stale."""
        return self._capacities

    def capacity_from_annotations(
        self, node_name: str, annotations: Mapping[str, Any] | None
    ) -> NodeCapacity | None:
        """Return ``free_t`` per tier for a Node object received in a request.

        When the request carries the tier-load text that the cache has for the node, this
        is the cached capacity, because both come from the same value and the same bound
        pods. Any other value is parsed and combined with the node's bound pods here.
        """
        raw = (annotations or {}).get(TIER_LOAD)
        if node_name in self._raw_values and self._raw_values[node_name] == raw:
            return self._capacities.get(node_name)
        load = self._decoder.decode(node_name, annotations)
        if load is None:
            return None
        bound = self._pods.bound_since(node_name, load.timestamp_seconds)
        return node_capacity(load, bound)

    def age_seconds(self) -> float | None:
        """Seconds since the node watch last delivered a change; None before the first one."""
        if self._last_node_update_monotonic is None:
            return None
        return time.monotonic() - self._last_node_update_monotonic

    def _refresh_capacity(self, node_name: str) -> None:
        load = self._loads.get(node_name)
        if load is None:
            self._capacities.remove(node_name)
            return
        bound = self._pods.bound_since(node_name, load.timestamp_seconds)
        self._capacities.put(node_name, node_capacity(load, bound))

    def _on_node_event(self, event_type: str, node: JsonObject) -> None:
        self._last_node_update_monotonic = time.monotonic()
        metadata = node.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if event_type == "DELETED":
            self._raw_values.pop(name, None)
            self._loads.pop(name, None)
            self._capacities.remove(name)
            self._decoder.forget(name)
            return
        annotations = metadata.get("annotations")
        raw = (annotations or {}).get(TIER_LOAD)
        if name in self._raw_values and self._raw_values[name] == raw:
            return
        self._raw_values[name] = raw
        load = self._decoder.decode(name, annotations)
        if load is None:
            self._loads.pop(name, None)
        else:
            self._loads[name] = load
        self._refresh_capacity(name)

    def _on_pod_event(self, event_type: str, pod: JsonObject) -> None:
        key = object_key(pod)
        spec = pod.get("spec") or {}
        node_name = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if event_type == "DELETED" or not node_name or phase in TERMINATED_PHASES:
            self._forget_pod(key)
            return
        try:
            demand = pod_demand(pod)
        except InvalidQuantityError as error:
            log.warning(
                "pod has an invalid CPU request, not counting it",
                extra={"pod": key, "node": node_name, "error": str(error)},
            )
            self._forget_pod(key)
            return

        known = self._pods.get(key)
        if known is not None:
            bound_at = known.bound_at_seconds
        else:
            bound_at = scheduled_at_seconds(pod) or self._clock()
        record = BoundPod(
            node_name=str(node_name),
            tier=demand.tier,
            cpu_request_millicores=demand.cpu_request_millicores,
            bound_at_seconds=bound_at,
        )
        if record == known:
            return

        self._pods.put(key, record)
        if known is not None and known.node_name != record.node_name:
            self._refresh_capacity(known.node_name)
        self._refresh_capacity(record.node_name)

    def _forget_pod(self, key: str) -> None:
        removed = self._pods.remove(key)
        if removed is not None:
            self._refresh_capacity(removed.node_name)
