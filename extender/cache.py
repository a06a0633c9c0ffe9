"""Watch-fed state of the extender: each Node's tier load and the pods bound since then.

The request handlers read only this cache and never call the API server. Two reflectors feed
it. The one on Nodes keeps the parsed ``temper.codes/tier-load`` value per node name. The one
on bound pods (``spec.nodeName!=``) records when each pod was bound, so the requests of pods
bound after a node's last tier-load value can be subtracted from that value.
"""

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from extender.scoring import pod_demand
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
            return TierLoad.decode(raw)
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

    def remove(self, key: str) -> None:
        """Forget a pod; unknown keys are ignored."""
        pod = self._pods.pop(key, None)
        if pod is None:
            return
        entries = self._by_node[pod.node_name]
        entries.remove((pod.bound_at_seconds, key))
        if not entries:
            del self._by_node[pod.node_name]

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
        self._loads: dict[str, TierLoad | None] = {}
        self._pods = BoundPodIndex()
        self._last_node_update_monotonic: float | None = None
        self._node_reflector = Reflector(
            client, "/api/v1/nodes", name="nodes", on_event=self._on_node_event
        )
        self._pod_reflector = Reflector(
            client,
            "/api/v1/pods",
            name="bound-pods",
            params={"fieldSelector": "spec.nodeName!="},
            on_event=self._on_pod_event,
        )

    async def run(self) -> None:
        """List and watch Nodes and bound pods until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._node_reflector.run(), name="extender/nodes")
            group.create_task(self._pod_reflector.run(), name="extender/bound-pods")

    def ready(self) -> bool:
        """True once both the Node list and the bound-pod list were loaded."""
        return self._node_reflector.synced.is_set() and self._pod_reflector.synced.is_set()

    def tier_load(self, node_name: str) -> TierLoad | None:
        """Return the node's last valid tier-load value; None if unknown, missing or invalid."""
        return self._loads.get(node_name)

    def decode_annotation(
        self, node_name: str, annotations: Mapping[str, Any] | None
    ) -> TierLoad | None:
        """Parse the tier-load value of a Node object received in a request."""
        return self._decoder.decode(node_name, annotations)

    def bound_since(self, node_name: str, timestamp_seconds: float) -> dict[Tier, int]:
        """Sum the CPU requests per tier of pods bound to the node after the timestamp."""
        return self._pods.bound_since(node_name, timestamp_seconds)

    def age_seconds(self) -> float | None:
        """Seconds since the node watch last delivered a change; None before the first one."""
        if self._last_node_update_monotonic is None:
            return None
        return time.monotonic() - self._last_node_update_monotonic

    def _on_node_event(self, event_type: str, node: JsonObject) -> None:
        self._last_node_update_monotonic = time.monotonic()
        metadata = node.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if event_type == "DELETED":
            self._loads.pop(name, None)
            self._decoder.forget(name)
            return
        self._loads[name] = self._decoder.decode(name, metadata.get("annotations"))

    def _on_pod_event(self, event_type: str, pod: JsonObject) -> None:
        key = object_key(pod)
        spec = pod.get("spec") or {}
        node_name = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if event_type == "DELETED" or not node_name or phase in TERMINATED_PHASES:
            self._pods.remove(key)
            return
        try:
            demand = pod_demand(pod)
        except InvalidQuantityError as error:
            log.warning(
                "pod has an invalid CPU request, not counting it",
                extra={"pod": key, "node": node_name, "error": str(error)},
            )
            self._pods.remove(key)
            return
        known = self._pods.get(key)
        if known is not None:
            bound_at = known.bound_at_seconds
        else:
            bound_at = scheduled_at_seconds(pod) or self._clock()
        self._pods.put(
            key,
            BoundPod(
                node_name=str(node_name),
                tier=demand.tier,
                cpu_request_millicores=demand.cpu_request_millicores,
                bound_at_seconds=bound_at,
            ),
        )
