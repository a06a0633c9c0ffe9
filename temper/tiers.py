"""The five Temper tiers, their PriorityClasses, and the pod-to-tier mapping.

A pod's tier comes from Kubernetes-native inputs only:

1. ``spec.priorityClassName`` when it names a Temper class (``temper-critical`` ...);
2. otherwise ``spec.priority`` against the Temper class values: the highest tier whose
   value is at most the pod's priority;
3. otherwise ``normal``.

Pods of the ``system-node-critical`` and ``system-cluster-critical`` classes are never
demoted: they map to ``high``, which preempts normal work but is not fenced, because fencing
node daemons (CNI, kube-proxy) onto the critical tier's few CPUs would starve them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

CLASS_PREFIX = "temper-"
SYSTEM_CLASSES = frozenset({"system-node-critical", "system-cluster-critical"})
# Kubernetes reserves priorities above one billion for the system classes.
SYSTEM_PRIORITY_MIN = 1_000_000_001


class Tier(StrEnum):
    """A CPU QoS tier, ordered from most to least protected."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    BACKGROUND = "background"

    @property
    def rank(self) -> int:
        """Position from 0 (critical) to 4 (background)."""
        return list(Tier).index(self)

    @property
    def priority_class(self) -> str:
        """Name of the PriorityClass that selects this tier."""
        return CLASS_PREFIX + self.value

    @property
    def is_batch(self) -> bool:
        """True for the tiers that only take idle CPU and never preempt in kube-scheduler."""
        return self in (Tier.LOW, Tier.BACKGROUND)


@dataclass(frozen=True)
class TierSpec:
    """PriorityClass fields of one tier."""

    tier: Tier
    value: int
    preemption_policy: str
    description: str


TIER_SPECS: Mapping[Tier, TierSpec] = {
    Tier.CRITICAL: TierSpec(
        Tier.CRITICAL,
        100_000,
        "PreemptLowerPriority",
        "Temper critical tier: fenced CPUs, preempts lower tiers on wake-up.",
    ),
    Tier.HIGH: TierSpec(
        Tier.HIGH, 10_000, "PreemptLowerPriority", "Temper high tier: grouped, preempts normal."
    ),
    Tier.NORMAL: TierSpec(
        Tier.NORMAL, 0, "PreemptLowerPriority", "Temper normal tier: grouped, the default."
    ),
    Tier.LOW: TierSpec(
        Tier.LOW, -1_000, "Never", "Temper low tier: batch on idle CPUs, preemptible."
    ),
    Tier.BACKGROUND: TierSpec(
        Tier.BACKGROUND,
        -10_000,
        "Never",
        "Temper background tier: lowest weight, first to yield.",
    ),
}

_BY_CLASS = {tier.priority_class: tier for tier in Tier}


def tier_for_class_name(name: str | None) -> Tier | None:
    """Return the tier a PriorityClass name selects, or None for a non-Temper class."""
    if not name:
        return None
    return _BY_CLASS.get(name)


def tier_for_priority(priority: int) -> Tier:
    """Map a priority value to the highest tier whose class value is at most ``priority``."""
    if priority >= SYSTEM_PRIORITY_MIN:
        return Tier.HIGH
    for tier in Tier:
        if priority >= TIER_SPECS[tier].value:
            return tier
    return Tier.BACKGROUND


def pod_tier(pod: Mapping[str, Any]) -> Tier:
    """Return the tier of a pod given as an API dict (``metadata``/``spec``)."""
    spec = pod.get("spec") or {}
    class_name = spec.get("priorityClassName")
    if class_name in SYSTEM_CLASSES:
        return Tier.HIGH
    by_class = tier_for_class_name(class_name)
    if by_class is not None:
        return by_class
    priority = spec.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        return tier_for_priority(priority)
    return Tier.NORMAL


def has_temper_class(pod: Mapping[str, Any]) -> bool:
    """True when the pod names one of the Temper PriorityClasses."""
    spec = pod.get("spec") or {}
    return tier_for_class_name(spec.get("priorityClassName")) is not None


def priority_class_manifests() -> list[dict[str, Any]]:
    """Return the five PriorityClass objects, batch classes with ``preemptionPolicy: Never``."""
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {
                "name": spec.tier.priority_class,
                "labels": {"app.kubernetes.io/part-of": "temper"},
            },
            "value": spec.value,
            "globalDefault": False,
            "preemptionPolicy": spec.preemption_policy,
            "description": spec.description,
        }
        for spec in TIER_SPECS.values()
    ]
