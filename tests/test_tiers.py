"""Pod-to-tier mapping and the PriorityClasses of the five tiers."""

from typing import Any

import pytest

from temper.tiers import TIER_SPECS, Tier, has_temper_class, pod_tier, priority_class_manifests


def pod(class_name: str | None = None, priority: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": []}
    if class_name is not None:
        spec["priorityClassName"] = class_name
    if priority is not None:
        spec["priority"] = priority
    return {"metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize(
    ("scenario", "class_name", "priority", "expected"),
    [
        ("critical-class", "temper-critical", 100_000, Tier.CRITICAL),
        ("high-class", "temper-high", None, Tier.HIGH),
        ("normal-class", "temper-normal", 0, Tier.NORMAL),
        ("low-class", "temper-low", -1_000, Tier.LOW),
        ("background-class", "temper-background", -10_000, Tier.BACKGROUND),
        ("class-wins-over-priority", "temper-background", 500_000, Tier.BACKGROUND),
        ("no-class-no-priority", None, None, Tier.NORMAL),
        ("no-class-priority-zero", None, 0, Tier.NORMAL),
        ("foreign-class-high-value", "team-gold", 200_000, Tier.CRITICAL),
        ("foreign-class-at-high", "team-silver", 10_000, Tier.HIGH),
        ("foreign-class-below-high", "team-bronze", 9_999, Tier.NORMAL),
        ("negative-priority", None, -1, Tier.LOW),
        ("very-negative-priority", None, -50_000, Tier.BACKGROUND),
        ("system-node-critical", "system-node-critical", 2_000_001_000, Tier.HIGH),
        ("system-cluster-critical", "system-cluster-critical", 2_000_000_000, Tier.HIGH),
        ("system-priority-without-class", None, 2_000_000_000, Tier.HIGH),
        ("garbage-priority-type", None, "high", Tier.NORMAL),
        ("boolean-priority", None, True, Tier.NORMAL),
    ],
)
def test_pod_tier(scenario: str, class_name: str | None, priority: Any, expected: Tier) -> None:
    assert pod_tier(pod(class_name, priority)) is expected, scenario


def test_pod_tier_without_spec_is_normal() -> None:
    assert pod_tier({"metadata": {"name": "bare"}}) is Tier.NORMAL


def test_system_classes_never_below_normal() -> None:
    for name in ("system-node-critical", "system-cluster-critical"):
        assert pod_tier(pod(name, -5)).rank <= Tier.NORMAL.rank


def test_has_temper_class() -> None:
    assert has_temper_class(pod("temper-low"))
    assert not has_temper_class(pod("team-gold", 200_000))
    assert not has_temper_class(pod())


def test_priority_classes_cover_every_tier_in_order() -> None:
    manifests = priority_class_manifests()
    assert [m["metadata"]["name"] for m in manifests] == [t.priority_class for t in Tier]
    values = [m["value"] for m in manifests]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("tier", list(Tier))
def test_batch_classes_never_preempt(tier: Tier) -> None:
    manifest = next(
        m for m in priority_class_manifests() if m["metadata"]["name"] == tier.priority_class
    )
    expected = "Never" if tier in (Tier.LOW, Tier.BACKGROUND) else "PreemptLowerPriority"
    assert manifest["preemptionPolicy"] == expected
    assert manifest["globalDefault"] is False


def test_class_values_map_back_to_their_tier() -> None:
    for tier, spec in TIER_SPECS.items():
        assert pod_tier(pod(None, spec.value)) is tier
