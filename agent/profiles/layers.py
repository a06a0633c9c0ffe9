"""Translate the workload profiles of a node's pods into scx_layered layers.

The treatments of all pods on a node share three layers, one per kind, so profiles cost at
most three of the 16 layers whatever the number of pods:

- ``profile-exclusive``: Confined and protected, with ``exclusive: true`` so the SMT sibling
  of a CPU running one of its threads stays idle. It reserves one core and may grow to the
  profiled pods' CPU requests rounded up to whole cores. It is capped so that the critical
  layer's minimum and one more core stay outside it. When not even one core is left, the
  exclusive groups keep their tier layer.
- ``profile-latency``: Grouped, preempts at wake-up (``preempt: true``) and runs 1 ms
  slices. It sizes its own CPUs from the threads' use, up to the profiled pods' CPU requests,
  and its threads also run on idle CPUs beyond them.
- ``profile-yield``: Open with weight 1, below the background tier's 10, and its CPUs are
  always open to other layers and to preemption.

Each OR block ties one thread-name prefix to one pod:
``[{"CgroupPrefix": "<pod cgroup>/"}, {"CommPrefix": "ib_io_rd"}]``, plus one
``CommPrefixExclude`` per more specific prefix of an earlier group of the same profile.

Precedence rules:

1. The profile layers come before the ``-limited`` and tier layers. scx_layered puts a task
   in the first layer whose matches it satisfies. So a thread of a profiled pod whose name
   matches a group goes to that group's treatment layer, and every other thread of the pod
   stays in the pod's tier layer. scx_layered re-matches a thread when it renames itself, so
   threads that set their name after they start land in the right layer.
2. Within a profile the first group in file order whose prefix matches wins: the blocks of a
   later group exclude the longer prefixes of earlier groups, whatever the layer order.
3. A treatment never lifts a thread above its pod's tier. Where the table says "tier", the
   group's threads stay in the pod's tier layer:

   =========  =================  =================  ===============  ===============
   treatment  critical           high               normal           low, background
   =========  =================  =================  ===============  ===============
   exclusive  profile-exclusive  profile-exclusive  tier             tier
   latency    tier               profile-latency    profile-latency  tier
   yield      profile-yield      profile-yield      profile-yield    profile-yield
   default    tier               tier               tier             tier
   =========  =================  =================  ===============  ===============

   Latency threads of critical pods stay in the critical layer because it already preempts
   at wake-up, on fenced CPUs that the latency layer does not have.
4. Pods bounded by a ``-limited`` layer (a CPU limit, any tier but critical) get no
   treatments: threads that left that layer would no longer be bounded.
5. A layer holds at most 32 OR blocks. Pods are placed in key order, and a pod's blocks for
   one layer are placed all together or not at all; a pod that does not fit keeps those
   threads in its tier layer.

Every treatment that is not applied is returned in ``ProfileLayerPlan.skipped`` with the
reason, for the caller to report.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.cgroups import CgroupLayout
from agent.layers import BATCH_SLICE_US, NEVER_US, SizingPolicy, critical_cpu_range
from agent.podinfo import PodInfo
from agent.profiles.schema import Profile, Treatment
from agent.topology import Topology
from agent.validation import MAX_OR_BLOCKS
from temper.tiers import Tier

EXCLUSIVE_LAYER = "profile-exclusive"
LATENCY_LAYER = "profile-latency"
YIELD_LAYER = "profile-yield"
LAYER_NAMES = {
    Treatment.EXCLUSIVE: EXCLUSIVE_LAYER,
    Treatment.LATENCY: LATENCY_LAYER,
    Treatment.YIELD: YIELD_LAYER,
}
LATENCY_SLICE_US = 1000
YIELD_WEIGHT = 1
_COMMENTS = {
    Treatment.EXCLUSIVE: "profile threads that get cores of their own (SMT sibling idle)",
    Treatment.LATENCY: "profile threads that preempt at wake-up and run short slices",
    Treatment.YIELD: "profile housekeeping threads: lowest weight, yield to every layer",
}


@dataclass(frozen=True)
class ProfiledPod:
    """A pod and the profile selected for it."""

    pod: PodInfo
    profile: Profile


@dataclass(frozen=True)
class SkippedGroup:
    """A thread group whose treatment was not applied; its threads stay in the tier layer."""

    pod: str
    profile: str
    group: str
    treatment: Treatment
    reason: str
    # True when the treatment layer had no room left, as opposed to a precedence rule.
    layer_full: bool = False


@dataclass
class ProfileLayerPlan:
    """The profile layers to put first in the config, and what was left out."""

    layers: list[dict[str, Any]]
    # Pods with at least one OR block, and their profile.
    applied: dict[str, str] = field(default_factory=dict)
    skipped: list[SkippedGroup] = field(default_factory=list)


def _gate(treatment: Treatment, pod: PodInfo) -> str | None:
    """Why ``treatment`` does not apply to ``pod``, or None when it does."""
    tier = pod.tier
    if pod.cpu_limit_millicores is not None and tier is not Tier.CRITICAL:
        return (
            f"the pod's CPU limit is bounded by the {tier.value}-limited layer, and threads "
            "moved out of it would no longer be bounded"
        )
    if treatment is Treatment.EXCLUSIVE and tier not in (Tier.CRITICAL, Tier.HIGH):
        return f"treatment exclusive needs a critical or high tier pod, not {tier.value}"
    if treatment is Treatment.LATENCY and tier is Tier.CRITICAL:
        return "the critical layer already preempts at wake-up on fenced CPUs"
    if treatment is Treatment.LATENCY and tier.is_batch:
        return f"treatment latency needs a high or normal tier pod, not {tier.value}"
    return None


def _round_up_to_cores(cpus: int, topology: Topology) -> int:
    step = topology.threads_per_core
    return int(math.ceil(cpus / step) * step)


def _exclusive_kind(pods: Sequence[PodInfo], topology: Topology, cap: int) -> dict[str, Any]:
    requested = sum(
        _round_up_to_cores(max(1, math.ceil(p.cpu_request_millicores / 1000)), topology)
        for p in pods
    )
    upper = min(cap, requested)
    return {
        "Confined": {
            "util_range": [0.5, 0.8],
            "cpus_range": [min(topology.threads_per_core, upper), upper],
            "exclusive": True,
            "protected": True,
            "preempt": True,
            "slice_us": 5000,
            "weight": 1000,
            "growth_algo": "Sticky",
        }
    }


def _kind(
    treatment: Treatment, pods: Sequence[PodInfo], topology: Topology, exclusive_cap: int
) -> dict[str, Any]:
    if treatment is Treatment.EXCLUSIVE:
        return _exclusive_kind(pods, topology, exclusive_cap)
    if treatment is Treatment.LATENCY:
        # NOTE: Grouped rather than Open because scx_layered 1.1.2 failed to load its BPF
        # program (E2BIG from the verifier) when an Open layer that preempts sat next to Open
        # layers that do not, as the yield and batch tier layers are. Seen in the sched_ext VM.
        request = sum(p.cpu_request_millicores for p in pods)
        upper = min(topology.cpus, max(1, math.ceil(request / 1000)))
        return {
            "Grouped": {
                "util_range": [0.5, 0.8],
                "cpus_range": [0, upper],
                "preempt": True,
                "slice_us": LATENCY_SLICE_US,
                "weight": 400,
            }
        }
    return {
        "Open": {
            "weight": YIELD_WEIGHT,
            "slice_us": BATCH_SLICE_US,
            "disallow_open_after_us": NEVER_US,
            "disallow_preempt_after_us": NEVER_US,
        }
    }


def _pod_blocks(
    entry: ProfiledPod, layout: CgroupLayout, plan: ProfileLayerPlan, exclusive_cap: int
) -> dict[Treatment, list[tuple[str, list[dict[str, Any]]]]]:
    """Build the pod's OR blocks per treatment layer, each with its group name."""
    pod, profile = entry.pod, entry.profile
    cgroup = layout.layered_prefix(pod.cgroup_uid, pod.qos)
    blocks: dict[Treatment, list[tuple[str, list[dict[str, Any]]]]] = {t: [] for t in LAYER_NAMES}
    for index, group in enumerate(profile.groups):
        if group.treatment is Treatment.DEFAULT:
            continue
        reason = _gate(group.treatment, pod)
        if reason is None and group.treatment is Treatment.EXCLUSIVE and exclusive_cap < 1:
            reason = (
                "no core is left for exclusive threads besides the critical layer's fenced "
                "CPUs and the core kept for everything else"
            )
        if reason is not None:
            plan.skipped.append(
                SkippedGroup(pod.key, profile.name, group.name, group.treatment, reason)
            )
            continue
        for prefix in group.prefixes:
            block: list[dict[str, Any]] = [{"CgroupPrefix": cgroup}, {"CommPrefix": prefix}]
            block += [{"CommPrefixExclude": p} for p in profile.exclusions(index, prefix)]
            blocks[group.treatment].append((group.name, block))
    return blocks


def compute_profile_layers(
    profiled: Iterable[ProfiledPod],
    layout: CgroupLayout,
    topology: Topology,
    *,
    critical_request_millicores: int = 0,
) -> ProfileLayerPlan:
    """Build the profile layers for the node's profiled pods (see the module docstring).

    ``critical_request_millicores`` is the sum of the CPU requests of the node's critical pods,
    from which the critical layer reserves its minimum.
    """
    plan = ProfileLayerPlan(layers=[])
    critical_min, _ = critical_cpu_range(critical_request_millicores, topology, SizingPolicy())
    # CPUs the exclusive layer may take: zero or less when not even one core is free.
    exclusive_cap = topology.cpus - topology.threads_per_core - critical_min
    if exclusive_cap < topology.threads_per_core:
        exclusive_cap = 0
    matches: dict[Treatment, list[list[dict[str, Any]]]] = {t: [] for t in LAYER_NAMES}
    members: dict[Treatment, list[PodInfo]] = {t: [] for t in LAYER_NAMES}
    for entry in sorted(profiled, key=lambda e: e.pod.key):
        if entry.pod.terminal:
            continue
        for treatment, blocks in _pod_blocks(entry, layout, plan, exclusive_cap).items():
            if not blocks:
                continue
            if len(matches[treatment]) + len(blocks) > MAX_OR_BLOCKS:
                reason = (
                    f"layer {LAYER_NAMES[treatment]} has no room for the pod's {len(blocks)} "
                    f"OR blocks (at most {MAX_OR_BLOCKS} per layer)"
                )
                for group in dict.fromkeys(name for name, _ in blocks):
                    plan.skipped.append(
                        SkippedGroup(
                            entry.pod.key, entry.profile.name, group, treatment, reason, True
                        )
                    )
                continue
            matches[treatment] += [block for _, block in blocks]
            members[treatment].append(entry.pod)
            plan.applied[entry.pod.key] = entry.profile.name
    for treatment, name in LAYER_NAMES.items():
        if matches[treatment]:
            plan.layers.append(
                {
                    "name": name,
                    "comment": _COMMENTS[treatment],
                    "matches": matches[treatment],
                    "kind": _kind(treatment, members[treatment], topology, exclusive_cap),
                }
            )
    return plan
