"""Placement policy of the extender: pack pods by per-tier protection capacity.

For a pod of tier ``t`` that requests ``r`` CPU millicores, on a candidate node ``n`` whose
``temper.codes/tier-load`` value is fresh (at most three publish intervals old)::

    inflight_t(n) = CPU requests of the pods bound to n after the value's timestamp,
                    counting pods of tier t and of every more protected tier
    free_t(n)     = protection_capacity_millicores of tier t on n - inflight_t(n)
    leftover(n)   = free_t(n) - r
    scale         = max(1, largest free_t(m) among the fresh candidates m that fit the pod)
    score(n)      = 10 - round_half_up(9 * leftover(n) / scale)   when leftover(n) >= 0: 1..10
    score(n)      = 0                                               when leftover(n) < 0

The less CPU a node would have left after the pod, the higher it scores (10 for an exact
fit), so nodes fill up one after another. A node that cannot hold the pod scores 0.

A node has no fresh data for tier ``t`` when its value is missing, unparsable, older than
three publish intervals, or has no entry for the tier. Such a node scores the neutral 5 and
always passes the filter, so missing data never makes the extender reject a node.

A pod of a less protected tier cannot take CPU from a more protected one (it is preempted),
which is why ``inflight_t`` counts only pods of tier ``t`` and above.

Filter: only critical pods are filtered. A node with fresh data whose critical ``free_t``
is below the pod's request is reported as unresolvable, so kube-scheduler's preemption does
not evict pods there for a node this filter would reject again.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from temper.annotations import TierLoad
from temper.quantity import cpu_millicores
from temper.tiers import Tier, pod_tier

MIN_SCORE = 0
MAX_SCORE = 10
NEUTRAL_SCORE = 5
# A tier-load value older than this many publish intervals counts as missing.
STALE_AFTER_INTERVALS = 3
# Tier.rank builds a list on every call; this lookup keeps the per-node work small.
_RANK = {tier: tier.rank for tier in Tier}
CRITICAL_CAPACITY_EXCEEDED = (
    "critical-tier protection capacity of the node cannot hold the pod's CPU request"
)


@dataclass(frozen=True)
class PodDemand:
    """The tier of the pod being scheduled and its effective CPU request."""

    tier: Tier
    cpu_request_millicores: int


@dataclass(frozen=True)
class NodeLoad:
    """Tier-load value of one node and the CPU requests bound to it since then.

    ``bound_since_millicores`` maps a tier to the summed CPU requests of the pods of that
    tier bound to the node after ``tier_load.timestamp_seconds``.
    """

    tier_load: TierLoad | None
    bound_since_millicores: Mapping[Tier, int] = field(default_factory=dict)


NO_DATA = NodeLoad(tier_load=None)


class FilterOutcome(StrEnum):
    """Filter decision for one node."""

    PASSED = "passed"
    PASSED_WITHOUT_DATA = "passed_without_data"
    REJECTED = "rejected"


def _requests_of(containers: Iterable[Any]) -> list[tuple[int, bool]]:
    """Return (CPU request in millicores, is a sidecar) for each container dict."""
    result = []
    for container in containers:
        if not isinstance(container, dict):
            continue
        requests = (container.get("resources") or {}).get("requests") or {}
        raw = requests.get("cpu")
        millicores = cpu_millicores(raw) if raw is not None else 0
        result.append((millicores, container.get("restartPolicy") == "Always"))
    return result


def pod_cpu_request_millicores(pod: Mapping[str, Any]) -> int:
    """Compute a pod's effective CPU request the way kube-scheduler does.

    A pod-level ``spec.resources.requests.cpu`` wins. Otherwise the request is the larger of
    (app containers + sidecars) and the peak of the init sequence, where each regular init
    container runs next to the sidecars started before it. ``spec.overhead`` is added.
    Raise InvalidQuantityError for a CPU quantity that does not parse.
    """
    spec = pod.get("spec") or {}
    overhead_raw = (spec.get("overhead") or {}).get("cpu")
    overhead = cpu_millicores(overhead_raw) if overhead_raw is not None else 0
    pod_level = ((spec.get("resources") or {}).get("requests") or {}).get("cpu")
    if pod_level is not None:
        return cpu_millicores(pod_level) + overhead

    app_total = sum(request for request, _ in _requests_of(spec.get("containers") or []))
    sidecars_total = 0
    init_peak = 0
    for request, is_sidecar in _requests_of(spec.get("initContainers") or []):
        if is_sidecar:
            sidecars_total += request
            init_peak = max(init_peak, sidecars_total)
        else:
            init_peak = max(init_peak, sidecars_total + request)
    return max(app_total + sidecars_total, init_peak) + overhead


def pod_demand(pod: Mapping[str, Any]) -> PodDemand:
    """Return the tier and effective CPU request of a pod given as an API dict."""
    return PodDemand(tier=pod_tier(pod), cpu_request_millicores=pod_cpu_request_millicores(pod))


def is_fresh(tier_load: TierLoad, now_seconds: float, max_age_seconds: float) -> bool:
    """True when the value is at most ``max_age_seconds`` old (values from the future count)."""
    return now_seconds - tier_load.timestamp_seconds <= max_age_seconds


def free_capacity_millicores(
    tier: Tier, node: NodeLoad, now_seconds: float, max_age_seconds: float
) -> int | None:
    """Return the CPU still free for ``tier`` on the node, or None without fresh data."""
    load = node.tier_load
    if load is None or not is_fresh(load, now_seconds, max_age_seconds):
        return None
    entry = load.tiers.get(tier)
    if entry is None:
        return None
    inflight = sum(
        millicores
        for bound_tier, millicores in node.bound_since_millicores.items()
        if _RANK[bound_tier] <= _RANK[tier]
    )
    return entry.protection_capacity_millicores - inflight


def scores_from_free_capacity(
    request_millicores: int, free_by_node: Mapping[str, int | None]
) -> dict[str, int]:
    """Map each node's free capacity (None: no fresh data) to an integer score in 0..10."""
    fitting = [free for free in free_by_node.values() if free is not None]
    fitting = [free for free in fitting if free >= request_millicores]
    scale = max([1, *fitting])
    scores: dict[str, int] = {}
    for name, free in free_by_node.items():
        if free is None:
            scores[name] = NEUTRAL_SCORE
        elif free < request_millicores:
            scores[name] = MIN_SCORE
        else:
            leftover = free - request_millicores
            # Integer round-half-up of 9 * leftover / scale; leftover <= scale keeps it in 0..9.
            penalty = (18 * leftover + scale) // (2 * scale)
            scores[name] = MAX_SCORE - penalty
    return scores


def score_nodes(
    demand: PodDemand,
    nodes: Mapping[str, NodeLoad],
    now_seconds: float,
    max_age_seconds: float,
) -> dict[str, int]:
    """Score every candidate node for the pod by the packing formula of this module."""
    free_by_node = {
        name: free_capacity_millicores(demand.tier, node, now_seconds, max_age_seconds)
        for name, node in nodes.items()
    }
    return scores_from_free_capacity(demand.cpu_request_millicores, free_by_node)


def filter_node(
    demand: PodDemand, node: NodeLoad, now_seconds: float, max_age_seconds: float
) -> FilterOutcome:
    """Decide whether the node may run the pod; only critical pods are ever rejected."""
    free = free_capacity_millicores(demand.tier, node, now_seconds, max_age_seconds)
    if free is None:
        return FilterOutcome.PASSED_WITHOUT_DATA
    if demand.tier is Tier.CRITICAL and free < demand.cpu_request_millicores:
        return FilterOutcome.REJECTED
    return FilterOutcome.PASSED
