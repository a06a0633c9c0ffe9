"""LimitRange constraints on CPU requests: parsing, combining, the index, LimitRanger's math."""

from decimal import Decimal
from typing import Any

import pytest

from webhook.limitranges import (
    NO_LIMIT_RANGE,
    CpuLimitRange,
    LimitRangeIndex,
    parse_limit_range,
    pod_cpu_total,
    ratio_exceeded,
    ratio_floor_millicores,
)


def limit_range(name: str, *items: dict[str, Any], namespace: str = "team-a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"limits": list(items)},
    }


@pytest.mark.parametrize(
    ("case", "items", "expected"),
    [
        ("empty", [], NO_LIMIT_RANGE),
        (
            "container min",
            [{"type": "Container", "min": {"cpu": "250m", "memory": "1Mi"}}],
            CpuLimitRange(container_min_millicores=250),
        ),
        (
            "container ratio",
            [{"type": "Container", "maxLimitRequestRatio": {"cpu": "1.5"}}],
            CpuLimitRange(container_max_limit_request_ratio=Decimal("1.5")),
        ),
        (
            "pod min and ratio",
            [{"type": "Pod", "min": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "4"}}],
            CpuLimitRange(pod_min_millicores=1000, pod_max_limit_request_ratio=Decimal(4)),
        ),
        (
            "largest min and smallest ratio",
            [
                {"type": "Container", "min": {"cpu": "100m"}, "maxLimitRequestRatio": {"cpu": 3}},
                {"type": "Container", "min": {"cpu": "0.3"}, "maxLimitRequestRatio": {"cpu": 2}},
            ],
            CpuLimitRange(
                container_min_millicores=300, container_max_limit_request_ratio=Decimal(2)
            ),
        ),
        ("memory only", [{"type": "Container", "min": {"memory": "1Gi"}}], NO_LIMIT_RANGE),
        (
            "claim type",
            [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}}],
            NO_LIMIT_RANGE,
        ),
        ("max ignored", [{"type": "Container", "max": {"cpu": "2"}}], NO_LIMIT_RANGE),
    ],
)
def test_limit_range_parsed(
    case: str, items: list[dict[str, Any]], expected: CpuLimitRange
) -> None:
    assert parse_limit_range(limit_range("limits", *items)) == expected, case


def test_index_combines_namespace_objects() -> None:
    index = LimitRangeIndex()
    index.observe("ADDED", limit_range("a", {"type": "Container", "min": {"cpu": "100m"}}))
    index.observe("ADDED", limit_range("b", {"type": "Container", "min": {"cpu": "200m"}}))
    assert index.for_namespace("team-a").container_min_millicores == 200


def test_index_follows_modify_and_delete() -> None:
    index = LimitRangeIndex()
    index.observe("ADDED", limit_range("a", {"type": "Container", "min": {"cpu": "100m"}}))
    index.observe("ADDED", limit_range("b", {"type": "Container", "min": {"cpu": "200m"}}))
    index.observe("MODIFIED", limit_range("b", {"type": "Container", "min": {"cpu": "50m"}}))
    assert index.for_namespace("team-a").container_min_millicores == 100
    index.observe("DELETED", limit_range("a"))
    assert index.for_namespace("team-a").container_min_millicores == 50
    index.observe("DELETED", limit_range("b"))
    assert index.for_namespace("team-a") == NO_LIMIT_RANGE


def test_index_keeps_namespaces_apart() -> None:
    index = LimitRangeIndex()
    index.observe("ADDED", limit_range("a", {"type": "Container", "min": {"cpu": "1"}}))
    assert index.for_namespace("team-b") == NO_LIMIT_RANGE


def test_index_ignores_invalid_quantity() -> None:
    index = LimitRangeIndex()
    index.observe("ADDED", limit_range("good", {"type": "Container", "min": {"cpu": "100m"}}))
    index.observe("ADDED", limit_range("bad", {"type": "Container", "min": {"cpu": "lots"}}))
    assert index.for_namespace("team-a").container_min_millicores == 100


@pytest.mark.parametrize(
    ("limit_millicores", "ratio", "expected"),
    [
        (1200, "1.5", 800),
        (1100, "1.1", 1000),
        (1000, "3", 334),
        (2000, "1", 2000),
        (1, "10", 1),
        # A ratio in millis rounds up, as Quantity.MilliValue does: 1.0004 counts as 1.001.
        (1001, "1.0004", 1000),
    ],
)
def test_ratio_floor(limit_millicores: int, ratio: str, expected: int) -> None:
    floor = ratio_floor_millicores(limit_millicores, Decimal(ratio))
    assert floor == expected
    assert not ratio_exceeded(limit_millicores, floor, Decimal(ratio))
    if floor > 1:
        assert ratio_exceeded(limit_millicores, floor - 1, Decimal(ratio))


@pytest.mark.parametrize(
    ("limit_millicores", "request_millicores", "ratio", "exceeded"),
    [
        (2000, 1000, "2", False),
        (2001, 1000, "2", True),
        (1000, 0, "2", True),
        (0, 1000, "2", True),
    ],
)
def test_ratio_exceeded(
    limit_millicores: int, request_millicores: int, ratio: str, exceeded: bool
) -> None:
    assert ratio_exceeded(limit_millicores, request_millicores, Decimal(ratio)) is exceeded


@pytest.mark.parametrize(
    ("case", "containers", "init_containers", "expected"),
    [
        ("containers add up", [100, 200], [], 300),
        ("init dominates", [100], [(500, False)], 500),
        ("sidecar before init", [100], [(50, True), (500, False)], 550),
        ("sidecar adds to sum", [1000], [(500, True), (200, False)], 1500),
        ("sidecar after init", [100], [(500, False), (50, True)], 500),
        ("only init sets cpu", [None], [(200, False)], 200),
        ("nothing set", [None], [(None, False)], None),
        ("no containers", [], [], None),
    ],
)
def test_pod_cpu_total(
    case: str,
    containers: list[int | None],
    init_containers: list[tuple[int | None, bool]],
    expected: int | None,
) -> None:
    assert pod_cpu_total(containers, init_containers) == expected, case
