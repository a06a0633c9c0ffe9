"""Compute the scx_layered layer config from the pods on the node and its topology.

One layer per tier in use, pods grouped into their tier's layer (never one layer per pod):

- ``critical``: Confined and protected. Its CPU range comes from the sum of critical CPU
  requests: the minimum is the requests rounded up to whole CPUs, the maximum adds
  ``critical_headroom_fraction``; both are rounded up to whole cores on SMT machines and capped
  so that at least one core stays for everything else.
- ``high``: Grouped with a utilisation band, preempts at wake-up.
- ``low`` and ``background``: Open, lower weight, short slices (``BATCH_SLICE_US``), and very
  large ``disallow_*_after_us`` values so their CPUs always stay open to preemption.
- ``normal``: the catch-all, always last, matching ``[[]]``: normal-tier pods, pods without a
  Temper class and every other task on the node. Its large ``disallow_preempt_after_us`` lets
  the critical and high layers preempt it.

CPU limits: while a sched_ext scheduler runs, the kernel does not enforce cgroup ``cpu.max``
or ``cpu.weight``. Non-critical pods with a CPU limit therefore go to a ``<tier>-limited``
layer placed before the tier layers: Confined (its tasks run only on the layer's CPUs), with
at most as many CPUs as the pods' summed CPU limits rounded up. The bound is in whole CPUs,
so a pod limited to 500m may still use up to one CPU.

Pods are matched by the ``CgroupPrefix`` of their pod cgroup. A tier with more pods than a
layer has OR blocks (32) is matched with ``CgroupRegex`` alternations instead.

Workload profiles: the caller may pass ``profile_layers`` (from
``agent.profiles.layers.compute_profile_layers``). They go first, before the ``-limited``
layers, so the threads they match leave their tier layer; that module states the rules.
"""

import copy
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.cgroups import CgroupLayout
from agent.podinfo import PodInfo
from agent.topology import Topology
from agent.validation import MAX_CGROUP_REGEXES, MAX_CGROUP_STRING_BYTES, MAX_OR_BLOCKS
from temper.tiers import Tier

# A "never" for disallow_*_after_us: one hour in microseconds.
NEVER_US = 3_600_000_000
# Slice of the batch layers (low, background and profiled yield threads). It bounds how long a
# batch task keeps a CPU that a critical task wakes up for. In scx_layered 1.1.2 a task of
# another layer that got onto a protected CPU can stay there, because keep_running() refreshes
# its full slice (fixed upstream after 1.1.2, sched-ext/scx pull request 3710). In the
# emulated colocation benchmark, memcached's p99 beside two fillers was 111 ms with 40-ms
# slices and 21 ms with 2-ms slices, at the same batch throughput (docs/benchmarks.md).
BATCH_SLICE_US = 2000
LAYER_ORDER = (Tier.CRITICAL, Tier.HIGH, Tier.LOW, Tier.BACKGROUND)
# Tiers whose pods with a CPU limit get a "<tier>-limited" layer. Critical pods stay on their
# fenced CPUs, which already bound them.
LIMITED_ORDER = (Tier.HIGH, Tier.NORMAL, Tier.LOW, Tier.BACKGROUND)


@dataclass(frozen=True)
class SizingPolicy:
    """Knobs of the synthesis; defaults suit general-purpose nodes."""

    critical_headroom_fraction: float = 0.25
    critical_util_range: tuple[float, float] = (0.5, 0.8)
    high_util_range: tuple[float, float] = (0.6, 0.85)
    normal_util_range: tuple[float, float] = (0.6, 0.9)


@dataclass
class LayerPlan:
    """The config and the facts behind it, for tier-load, metrics and reports."""

    config: list[dict[str, Any]]
    critical_cpus_min: int = 0
    critical_cpus_max: int = 0
    critical_request_millicores: int = 0
    # Pods that matched no tier layer because the layer ran out of OR blocks and regexes.
    unmatched_pods: list[str] = field(default_factory=list)
    # Pods whose CPU limit is bounded by a "-limited" layer instead of cpu.max.
    limited_pods: list[str] = field(default_factory=list)

    @property
    def critical_overcommitted(self) -> bool:
        """True when critical requests exceed the CPUs that can be fenced."""
        return self.critical_request_millicores > self.critical_cpus_max * 1000


def _round_up_to_cores(cpus: int, topology: Topology) -> int:
    step = topology.threads_per_core
    return int(math.ceil(cpus / step) * step)


def critical_cpu_range(
    request_millicores: int, topology: Topology, policy: SizingPolicy
) -> tuple[int, int]:
    """Return (min, max) CPUs of the critical layer."""
    if request_millicores <= 0:
        return 0, 0
    # Leave at least one core to the other layers and the node's own daemons.
    cap = max(1, topology.cpus - topology.threads_per_core)
    minimum = _round_up_to_cores(math.ceil(request_millicores / 1000), topology)
    with_headroom = request_millicores * (1 + policy.critical_headroom_fraction) / 1000
    maximum = _round_up_to_cores(math.ceil(with_headroom), topology)
    return min(minimum, cap), min(maximum, cap)


def _prefix_blocks(prefixes: Sequence[str]) -> list[list[dict[str, Any]]]:
    return [[{"CgroupPrefix": prefix}] for prefix in prefixes]


def _regex_blocks(
    prefixes: Sequence[str], cgroup_root: str, budget: int
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """Pack prefixes into as few CgroupRegex rules as fit; return blocks and leftovers."""
    blocks: list[list[dict[str, Any]]] = []
    root = re.escape(cgroup_root.rstrip("/"))
    head, tail = f"^{root}/(", ")(/.*)?$"
    current: list[str] = []
    leftovers: list[str] = []

    def flush() -> None:
        if current:
            blocks.append([{"CgroupRegex": head + "|".join(current) + tail}])
            current.clear()

    for prefix in prefixes:
        part = re.escape(prefix.rstrip("/"))
        if len(head) + len(tail) + len("|".join([*current, part])) > MAX_CGROUP_STRING_BYTES:
            flush()
        if not current and len(blocks) >= budget:
            leftovers.append(prefix)
            continue
        current.append(part)
    flush()
    return blocks, leftovers


def _tier_kind(
    tier: Tier, pods: Sequence[PodInfo], topology: Topology, policy: SizingPolicy, plan: LayerPlan
) -> dict[str, Any]:
    if tier is Tier.CRITICAL:
        request = sum(p.cpu_request_millicores for p in pods)
        low, high = critical_cpu_range(request, topology, policy)
        plan.critical_cpus_min, plan.critical_cpus_max = low, high
        plan.critical_request_millicores = request
        body: dict[str, Any] = {
            "util_range": list(policy.critical_util_range),
            "cpus_range": [max(1, low), max(1, high)],
            "protected": True,
            "preempt": True,
            "slice_us": 5000,
            "weight": 1000,
            "growth_algo": "Sticky",
        }
        per_llc = topology.cpus // topology.llcs
        if topology.llcs > 1 and high <= per_llc:
            # The whole fence fits in one last-level cache: keep it there for locality.
            body["llcs"] = [0]
        return {"Confined": body}
    if tier is Tier.HIGH:
        request = sum(p.cpu_request_millicores for p in pods)
        upper = min(topology.cpus, max(1, math.ceil(request / 1000)))
        return {
            "Grouped": {
                "util_range": list(policy.high_util_range),
                "cpus_range": [0, upper],
                "preempt": True,
                "slice_us": 10000,
                "weight": 400,
            }
        }
    weight = 50 if tier is Tier.LOW else 10
    return {
        "Open": {
            "weight": weight,
            "slice_us": BATCH_SLICE_US,
            "disallow_open_after_us": NEVER_US,
            "disallow_preempt_after_us": NEVER_US,
        }
    }


_COMMENTS = {
    Tier.CRITICAL: "critical tier: fenced, protected CPUs sized from CPU requests",
    Tier.HIGH: "high tier: grouped, preempts normal and below",
    Tier.LOW: "low tier: idle CPUs only, always preemptible",
    Tier.BACKGROUND: "background tier: lowest weight, first to yield",
}


def _limited_kind(tier: Tier, pods: Sequence[PodInfo], topology: Topology) -> dict[str, Any]:
    """A Confined layer whose CPU count bounds the pods' summed CPU limits."""
    limit = sum(p.cpu_limit_millicores or 0 for p in pods)
    upper = min(topology.cpus, max(1, math.ceil(limit / 1000)))
    weights = {Tier.HIGH: 400, Tier.NORMAL: 100, Tier.LOW: 50, Tier.BACKGROUND: 10}
    body: dict[str, Any] = {
        "util_range": [0.8, 0.95],
        "cpus_range": [0, upper],
        "weight": weights[tier],
    }
    if tier is Tier.HIGH:
        body["preempt"] = True
    else:
        body["disallow_preempt_after_us"] = NEVER_US
    return {"Confined": body}


def _match_blocks(
    members: Sequence[PodInfo], layout: CgroupLayout, plan: LayerPlan, regex_budget: int
) -> tuple[list[list[dict[str, Any]]], int]:
    """OR blocks matching the pods' cgroups, and the CgroupRegex rules they used."""
    prefixes = [layout.layered_prefix(p.cgroup_uid, p.qos) for p in members]
    if len(prefixes) <= MAX_OR_BLOCKS:
        return _prefix_blocks(prefixes), 0
    matches, leftovers = _regex_blocks(prefixes, str(layout.root), min(regex_budget, MAX_OR_BLOCKS))
    plan.unmatched_pods += [
        p.key for p, prefix in zip(members, prefixes, strict=True) if prefix in leftovers
    ]
    return matches, len(matches)


def compute_layer_plan(
    pods: Iterable[PodInfo],
    layout: CgroupLayout,
    topology: Topology,
    policy: SizingPolicy | None = None,
    profile_layers: Sequence[Mapping[str, Any]] = (),
) -> LayerPlan:
    """Build the layer config for the running pods of this node, profile layers first."""
    policy = policy or SizingPolicy()
    by_tier: dict[Tier, list[PodInfo]] = {tier: [] for tier in Tier}
    for pod in sorted(pods, key=lambda p: p.key):
        if not pod.terminal:
            by_tier[pod.tier].append(pod)
    plan = LayerPlan(config=[])
    plan.config.extend(copy.deepcopy(dict(layer)) for layer in profile_layers)
    regex_budget = MAX_CGROUP_REGEXES
    for tier in LIMITED_ORDER:
        # scx_layered ignores cpu.max: a Confined layer with as many CPUs as the pods' summed
        # CPU limits (rounded up to whole CPUs) is what bounds them instead.
        limited = [p for p in by_tier[tier] if p.cpu_limit_millicores is not None]
        by_tier[tier] = [p for p in by_tier[tier] if p.cpu_limit_millicores is None]
        if not limited:
            continue
        matches, used = _match_blocks(limited, layout, plan, regex_budget)
        regex_budget -= used
        plan.limited_pods += [p.key for p in limited]
        if matches:
            plan.config.append(
                {
                    "name": f"{tier.value}-limited",
                    "comment": f"{tier.value} tier pods with CPU limits, bounded by the CPU count",
                    "matches": matches,
                    "kind": _limited_kind(tier, limited, topology),
                }
            )
    for tier in LAYER_ORDER:
        members = by_tier[tier]
        if not members:
            continue
        matches, used = _match_blocks(members, layout, plan, regex_budget)
        regex_budget -= used
        if not matches:
            continue
        plan.config.append(
            {
                "name": tier.value,
                "comment": _COMMENTS[tier],
                "matches": matches,
                "kind": _tier_kind(tier, members, topology, policy, plan),
            }
        )
    plan.config.append(
        {
            "name": Tier.NORMAL.value,
            "comment": "normal tier and everything else on the node (catch-all)",
            "matches": [[]],
            "kind": {
                "Grouped": {
                    "util_range": list(policy.normal_util_range),
                    "weight": 100,
                    "disallow_preempt_after_us": NEVER_US,
                }
            },
        }
    )
    return plan
