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

The handlers run :func:`score_columns` and :func:`filter_columns` on NumPy columns of many
nodes. The list-based functions (:func:`score_free_capacities`,
:func:`filter_free_capacities`) state the same policy one node at a time and serve as the
reference that tests/test_extender_table.py compares the columns against.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

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
# Largest protection capacity (and so free_t) the extender accepts, about 9 * 10^12 cores.
# It keeps score_columns' arithmetic inside int64: 18 * MAX_FREE_MILLICORES < 2^63.
MAX_FREE_MILLICORES = 2**53
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


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """A node's ``free_t`` for every tier, computed once per change of its data.

    ``free_millicores[tier.rank]`` is ``free_t`` of the module formula, or None when the
    tier-load value has no entry for that tier. Freshness depends on the time of the request,
    so it is checked against ``timestamp_seconds`` at request time.
    """

    timestamp_seconds: float
    free_millicores: tuple[int | None, ...]


def node_capacity(tier_load: TierLoad, bound_since_millicores: Mapping[Tier, int]) -> NodeCapacity:
    """Compute ``free_t`` for every tier from a tier-load value and the pods bound since."""
    inflight = 0
    free: list[int | None] = []
    # Tier iterates from the most protected tier down, so ``inflight`` is the running sum
    # over tier t and every more protected tier.
    for tier in Tier:
        inflight += bound_since_millicores.get(tier, 0)
        entry = tier_load.tiers.get(tier)
        free.append(None if entry is None else entry.protection_capacity_millicores - inflight)
    return NodeCapacity(timestamp_seconds=tier_load.timestamp_seconds, free_millicores=tuple(free))


def free_capacities_millicores(
    tier: Tier,
    capacities: Mapping[str, NodeCapacity],
    node_names: Sequence[str],
    now_seconds: float,
    max_age_seconds: float,
) -> list[int | None]:
    """Return ``free_t`` of each named node in order; None for a node without fresh data.

    The handlers read the same values from ``extender.table.CapacityTable.columns``.
    """
    rank = _RANK[tier]
    return [
        None
        if capacity is None or now_seconds - capacity.timestamp_seconds > max_age_seconds
        else capacity.free_millicores[rank]
        for capacity in map(capacities.get, node_names)
    ]


def free_capacity_millicores(
    tier: Tier, node: NodeLoad, now_seconds: float, max_age_seconds: float
) -> int | None:
    """Return the CPU still free for ``tier`` on the node, or None without fresh data."""
    load = node.tier_load
    if load is None or not is_fresh(load, now_seconds, max_age_seconds):
        return None
    return node_capacity(load, node.bound_since_millicores).free_millicores[_RANK[tier]]


def score_free_capacities(
    request_millicores: int, free_millicores: Sequence[int | None]
) -> list[int]:
    """Map each node's ``free_t`` (None: no fresh data) to an integer score in 0..10."""
    # scale: the largest free_t among the nodes that fit the pod, at least 1.
    scale = 1
    for free in free_millicores:
        if free is not None and free >= request_millicores and free > scale:
            scale = free
    scores: list[int] = []
    for free in free_millicores:
        if free is None:
            scores.append(NEUTRAL_SCORE)
        elif free < request_millicores:
            scores.append(MIN_SCORE)
        else:
            # Integer round-half-up of 9 * leftover / scale; leftover <= scale keeps it in 0..9.
            penalty = (18 * (free - request_millicores) + scale) // (2 * scale)
            scores.append(MAX_SCORE - penalty)
    return scores


def scores_from_free_capacity(
    request_millicores: int, free_by_node: Mapping[str, int | None]
) -> dict[str, int]:
    """Map each node's free capacity (None: no fresh data) to an integer score in 0..10."""
    scores = score_free_capacities(request_millicores, list(free_by_node.values()))
    return dict(zip(free_by_node, scores, strict=True))


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


def is_filtered(demand: PodDemand) -> bool:
    """True when the filter may reject nodes for the pod: only critical pods are filtered."""
    return demand.tier is Tier.CRITICAL


def filter_outcome(demand: PodDemand, free_millicores: int | None) -> FilterOutcome:
    """Decide from ``free_t`` (None: no fresh data) whether a node may run the pod.

    Pods that are not filtered pass every node, with or without data.
    """
    if not is_filtered(demand):
        return FilterOutcome.PASSED
    if free_millicores is None:
        return FilterOutcome.PASSED_WITHOUT_DATA
    if free_millicores < demand.cpu_request_millicores:
        return FilterOutcome.REJECTED
    return FilterOutcome.PASSED


@dataclass(frozen=True)
class FilterDecisions:
    """Filter decisions for a list of nodes: the rejected positions and a count per outcome."""

    rejected: frozenset[int]
    counts: Mapping[FilterOutcome, int]


def pass_all(node_count: int) -> FilterDecisions:
    """Return the decisions for a pod that is not filtered: every node passes."""
    return FilterDecisions(rejected=frozenset(), counts={FilterOutcome.PASSED: node_count})


def filter_free_capacities(
    demand: PodDemand, free_millicores: Sequence[int | None]
) -> FilterDecisions:
    """Apply :func:`filter_outcome` to every node's ``free_t``, in one pass."""
    if not is_filtered(demand):
        return pass_all(len(free_millicores))
    request = demand.cpu_request_millicores
    rejected = frozenset(
        index for index, free in enumerate(free_millicores) if free is not None and free < request
    )
    without_data = free_millicores.count(None)
    counts = {
        FilterOutcome.PASSED_WITHOUT_DATA: without_data,
        FilterOutcome.PASSED: len(free_millicores) - without_data - len(rejected),
        FilterOutcome.REJECTED: len(rejected),
    }
    return FilterDecisions(rejected=rejected, counts=counts)


def filter_node(
    demand: PodDemand, node: NodeLoad, now_seconds: float, max_age_seconds: float
) -> FilterOutcome:
    """Decide whether the node may run the pod; only critical pods are ever rejected."""
    free = free_capacity_millicores(demand.tier, node, now_seconds, max_age_seconds)
    return filter_outcome(demand, free)


def _clamped_request(request_millicores: int) -> int:
    # Every stored free_t is at most MAX_FREE_MILLICORES, so a larger request fits nowhere
    # either way; clamping keeps the comparison inside int64.
    return min(request_millicores, MAX_FREE_MILLICORES + 1)


def score_columns(
    request_millicores: int,
    fresh: npt.NDArray[np.bool_],
    free_millicores: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Score nodes as :func:`score_free_capacities` does, on NumPy columns.

    ``fresh`` marks the nodes with fresh data. ``free_millicores`` contains their ``free_t``
    (at most ``MAX_FREE_MILLICORES``) and is ignored where ``fresh`` is False.
    """
    request = _clamped_request(request_millicores)
    fits = fresh & (free_millicores >= request)
    scores = np.where(fresh, np.int64(MIN_SCORE), np.int64(NEUTRAL_SCORE))
    fitting = free_millicores[fits]
    if fitting.size:
        scale = max(1, int(fitting.max()))
        # Integer round-half-up as in score_free_capacities; leftover <= scale keeps 0..9,
        # and 18 * leftover stays below 2^63 because free_t <= MAX_FREE_MILLICORES.
        penalty = (18 * (fitting - request) + scale) // (2 * scale)
        scores[fits] = MAX_SCORE - penalty
    return scores


def filter_columns(
    demand: PodDemand,
    fresh: npt.NDArray[np.bool_],
    free_millicores: npt.NDArray[np.int64],
) -> FilterDecisions:
    """Decide the filter as :func:`filter_free_capacities` does, on NumPy columns."""
    if not is_filtered(demand):
        return pass_all(len(fresh))
    rejected_mask = fresh & (free_millicores < _clamped_request(demand.cpu_request_millicores))
    rejected = frozenset(np.flatnonzero(rejected_mask).tolist())
    without_data = len(fresh) - int(np.count_nonzero(fresh))
    counts = {
        FilterOutcome.PASSED_WITHOUT_DATA: without_data,
        FilterOutcome.PASSED: len(fresh) - without_data - len(rejected),
        FilterOutcome.REJECTED: len(rejected),
    }
    return FilterDecisions(rejected=rejected, counts=counts)
