"""The ``temper.codes/tier-load`` value of a node, from its pods and its layer plan.

Protection capacity, per tier, is the CPU a new pod of that tier could still get at the
tier's level of protection:

- critical: fenceable CPU (all CPUs but one core, see :mod:`agent.layers`) minus the
  critical requests;
- high and normal: allocatable CPU minus the requests of critical, high and normal pods;
- low and background: allocatable CPU minus the requests of every pod (the idle share).

Used CPU and run-queue delay come from the observation layer when it runs; until then they
are 0.
"""

import time
from collections.abc import Iterable

from agent.podinfo import PodInfo
from agent.topology import Topology
from temper.annotations import TierLoad, TierLoadEntry
from temper.tiers import Tier


def fenceable_millicores(topology: Topology) -> int:
    """CPU the critical layer may take at most: every CPU but one core."""
    return max(1, topology.cpus - topology.threads_per_core) * 1000


def compute_tier_load(
    pods: Iterable[PodInfo],
    topology: Topology,
    allocatable_millicores: int,
    *,
    used_millicores: dict[Tier, int] | None = None,
    runq_delay_p99_us: dict[Tier, int] | None = None,
    now_seconds: float | None = None,
) -> TierLoad:
    """Build the annotation value for every tier, in use or not."""
    requested = dict.fromkeys(Tier, 0)
    counts = dict.fromkeys(Tier, 0)
    for pod in pods:
        if pod.terminal:
            continue
        requested[pod.tier] += pod.cpu_request_millicores
        counts[pod.tier] += 1
    guaranteed_share = sum(requested[t] for t in (Tier.CRITICAL, Tier.HIGH, Tier.NORMAL))
    total = sum(requested.values())
    capacity = {
        Tier.CRITICAL: fenceable_millicores(topology) - requested[Tier.CRITICAL],
        Tier.HIGH: allocatable_millicores - guaranteed_share,
        Tier.NORMAL: allocatable_millicores - guaranteed_share,
        Tier.LOW: allocatable_millicores - total,
        Tier.BACKGROUND: allocatable_millicores - total,
    }
    used = used_millicores or {}
    delays = runq_delay_p99_us or {}
    return TierLoad(
        timestamp_seconds=time.time() if now_seconds is None else now_seconds,
        node_cpu_millicores=allocatable_millicores,
        tiers={
            tier: TierLoadEntry(
                requested_cpu_millicores=requested[tier],
                used_cpu_millicores=used.get(tier, 0),
                runq_delay_p99_us=delays.get(tier, 0),
                protection_capacity_millicores=max(0, capacity[tier]),
                pods=counts[tier],
            )
            for tier in Tier
        },
    )
