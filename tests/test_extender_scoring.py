"""Extender policy: packing by tier capacity, fail-open without data, critical filtering."""

import logging
import random
from collections.abc import Mapping
from typing import Any

import pytest

from extender.cache import AnnotationDecoder, BoundPod, BoundPodIndex, scheduled_at_seconds
from extender.scoring import (
    MAX_FREE_MILLICORES,
    NEUTRAL_SCORE,
    FilterOutcome,
    NodeLoad,
    PodDemand,
    filter_free_capacities,
    filter_node,
    filter_outcome,
    free_capacities_millicores,
    free_capacity_millicores,
    node_capacity,
    pod_cpu_request_millicores,
    score_nodes,
    scores_from_free_capacity,
)
from temper.annotations import TIER_LOAD, TierLoad, TierLoadEntry
from temper.tiers import Tier

NOW = 1_800_000_000.0
MAX_AGE = 30.0
NORMAL_1000 = PodDemand(Tier.NORMAL, 1000)
CRITICAL_1000 = PodDemand(Tier.CRITICAL, 1000)


def tier_load(age_seconds: float = 1.0, **capacity_millicores: int) -> TierLoad:
    """A tier-load value ``age_seconds`` old with the given capacity per tier name."""
    return TierLoad(
        timestamp_seconds=NOW - age_seconds,
        node_cpu_millicores=4000,
        tiers={
            Tier(name): TierLoadEntry(protection_capacity_millicores=millicores)
            for name, millicores in capacity_millicores.items()
        },
    )


def fresh(normal: int, critical: int = 0, bound: Mapping[Tier, int] | None = None) -> NodeLoad:
    """A node with a fresh value and ``bound`` millicores per tier bound since then."""
    return NodeLoad(
        tier_load=tier_load(normal=normal, critical=critical),
        bound_since_millicores=bound or {},
    )


def scores(demand: PodDemand, nodes: Mapping[str, NodeLoad]) -> dict[str, int]:
    return score_nodes(demand, nodes, NOW, MAX_AGE)


@pytest.mark.parametrize(
    ("free_by_node", "request_millicores", "expected_order"),
    [
        # Tightest fit first, nodes that cannot hold the pod last.
        ({"a": 4000, "b": 1500, "c": 600}, 1000, ["b", "a", "c"]),
        ({"a": 1000, "b": 3000}, 1000, ["a", "b"]),
        ({"a": 2000, "b": 8000, "c": 1100}, 1000, ["c", "a", "b"]),
        # A pod without a request still packs onto the fullest node.
        ({"a": 500, "b": 3500}, 0, ["a", "b"]),
    ],
)
def test_packing_prefers_tightest_fit(
    free_by_node: dict[str, int], request_millicores: int, expected_order: list[str]
) -> None:
    nodes = {name: fresh(normal=free) for name, free in free_by_node.items()}
    result = scores(PodDemand(Tier.NORMAL, request_millicores), nodes)
    ranked = sorted(result, key=lambda name: result[name], reverse=True)
    assert ranked == expected_order
    assert len(set(result.values())) == len(result), f"scores tie: {result}"


@pytest.mark.parametrize(
    ("free", "request_millicores", "expected"),
    [
        (1000, 1000, 10),  # exact fit
        (999, 1000, 0),  # does not fit
        (0, 0, 10),
        (-500, 100, 0),  # pods bound since the value took more than the capacity
    ],
)
def test_score_of_single_node(free: int, request_millicores: int, expected: int) -> None:
    assert scores_from_free_capacity(request_millicores, {"n": free}) == {"n": expected}


@pytest.mark.parametrize(
    ("case", "node"),
    [
        ("no annotation", NodeLoad(tier_load=None)),
        ("stale", NodeLoad(tier_load=tier_load(age_seconds=MAX_AGE + 1, normal=100))),
        ("tier missing", NodeLoad(tier_load=tier_load(critical=5000))),
    ],
)
def test_node_without_fresh_data_is_neutral(case: str, node: NodeLoad) -> None:
    # The fresh node "full" cannot hold the pod and scores 0; the other stays neutral.
    result = scores(NORMAL_1000, {"x": node, "full": fresh(normal=100)})
    assert result["x"] == NEUTRAL_SCORE, case
    assert result["full"] == 0


def test_value_from_future_counts_as_fresh() -> None:
    node = NodeLoad(tier_load=tier_load(age_seconds=-5.0, normal=1000))
    assert free_capacity_millicores(Tier.NORMAL, node, NOW, MAX_AGE) == 1000


def test_scores_are_integers_in_range() -> None:
    generator = random.Random(7)
    for _ in range(500):
        nodes: dict[str, NodeLoad] = {}
        for index in range(generator.randint(1, 8)):
            kind = generator.choice(["fresh", "stale", "missing"])
            capacity = generator.randint(-2000, 64000)
            if kind == "missing":
                nodes[f"n{index}"] = NodeLoad(tier_load=None)
            else:
                age = 1.0 if kind == "fresh" else MAX_AGE * 2
                bound = {Tier.HIGH: generator.randint(0, 3000)}
                load = tier_load(age_seconds=age, high=capacity, normal=capacity)
                nodes[f"n{index}"] = NodeLoad(tier_load=load, bound_since_millicores=bound)
        demand = PodDemand(generator.choice(list(Tier)), generator.randint(0, 16000))
        for name, score in scores(demand, nodes).items():
            assert type(score) is int, (name, score)
            assert 0 <= score <= 10, (name, score, demand)


def random_nodes(generator: random.Random) -> dict[str, NodeLoad]:
    """Nodes without data, with stale data and with fresh data, with random bound pods."""
    nodes: dict[str, NodeLoad] = {}
    for index in range(generator.randint(0, 12)):
        kind = generator.choice(["fresh", "stale", "missing"])
        if kind == "missing":
            nodes[f"n{index}"] = NodeLoad(tier_load=None)
            continue
        age = generator.uniform(-5.0, MAX_AGE) if kind == "fresh" else MAX_AGE + 1
        tiers = generator.sample([tier.value for tier in Tier], generator.randint(0, 5))
        load = tier_load(age, **{tier: generator.randint(0, 8000) for tier in tiers})
        bound = {tier: generator.randint(0, 3000) for tier in Tier if generator.random() < 0.4}
        nodes[f"n{index}"] = NodeLoad(tier_load=load, bound_since_millicores=bound)
    return nodes


def test_precomputed_capacity_matches_formula() -> None:
    # The handlers use node_capacity computed in the cache; it must give free_t exactly.
    generator = random.Random(11)
    for _ in range(300):
        nodes = random_nodes(generator)
        capacities = {
            name: node_capacity(node.tier_load, node.bound_since_millicores)
            for name, node in nodes.items()
            if node.tier_load is not None
        }
        names = [*nodes, "never-seen"]
        for tier in Tier:
            expected = [
                free_capacity_millicores(tier, nodes[name], NOW, MAX_AGE) if name in nodes else None
                for name in names
            ]
            assert free_capacities_millicores(tier, capacities, names, NOW, MAX_AGE) == expected


def test_filter_of_list_matches_single_node() -> None:
    generator = random.Random(13)
    for _ in range(300):
        free = [generator.choice([None, generator.randint(-500, 3000)]) for _ in range(10)]
        demand = PodDemand(generator.choice(list(Tier)), generator.randint(0, 2000))
        outcomes = [filter_outcome(demand, node_free) for node_free in free]
        decisions = filter_free_capacities(demand, free)
        rejected = {i for i, outcome in enumerate(outcomes) if outcome is FilterOutcome.REJECTED}
        assert decisions.rejected == rejected
        for outcome in FilterOutcome:
            assert decisions.counts.get(outcome, 0) == outcomes.count(outcome), outcome


@pytest.mark.parametrize(
    ("demand", "node", "expected"),
    [
        (CRITICAL_1000, fresh(normal=9000, critical=500), FilterOutcome.REJECTED),
        (CRITICAL_1000, fresh(normal=0, critical=1000), FilterOutcome.PASSED),
        # Critical pods bound since the value count against the capacity, others do not.
        (
            CRITICAL_1000,
            fresh(normal=0, critical=1500, bound={Tier.CRITICAL: 800}),
            FilterOutcome.REJECTED,
        ),
        (
            CRITICAL_1000,
            fresh(normal=0, critical=1500, bound={Tier.HIGH: 800}),
            FilterOutcome.PASSED,
        ),
        # Without fresh data the filter fails open.
        (CRITICAL_1000, NodeLoad(tier_load=None), FilterOutcome.PASSED_WITHOUT_DATA),
        (
            CRITICAL_1000,
            NodeLoad(tier_load=tier_load(age_seconds=MAX_AGE + 1, critical=0)),
            FilterOutcome.PASSED_WITHOUT_DATA,
        ),
        # Other tiers are never filtered, even when they do not fit.
        (NORMAL_1000, fresh(normal=0), FilterOutcome.PASSED),
        (PodDemand(Tier.LOW, 5000), fresh(normal=0), FilterOutcome.PASSED),
        (NORMAL_1000, NodeLoad(tier_load=None), FilterOutcome.PASSED),
    ],
)
def test_filter_rejects_only_critical(
    demand: PodDemand, node: NodeLoad, expected: FilterOutcome
) -> None:
    assert filter_node(demand, node, NOW, MAX_AGE) is expected


@pytest.mark.parametrize(
    ("pod_tier", "bound", "expected_free"),
    [
        (Tier.NORMAL, {}, 1500),
        (Tier.NORMAL, {Tier.NORMAL: 1000}, 500),
        # A more protected pod takes CPU from the normal tier too.
        (Tier.NORMAL, {Tier.CRITICAL: 200, Tier.HIGH: 300}, 1000),
        # A less protected pod is preempted, so it takes nothing from the normal tier.
        (Tier.NORMAL, {Tier.LOW: 700, Tier.BACKGROUND: 100}, 1500),
        (Tier.LOW, {Tier.NORMAL: 700, Tier.LOW: 100}, 700),
    ],
)
def test_free_capacity_subtracts_bound_pods(
    pod_tier: Tier, bound: dict[Tier, int], expected_free: int
) -> None:
    node = NodeLoad(tier_load=tier_load(normal=1500, low=1500), bound_since_millicores=bound)
    assert free_capacity_millicores(pod_tier, node, NOW, MAX_AGE) == expected_free


def test_bound_pods_move_packing_to_next_node() -> None:
    before = scores(NORMAL_1000, {"a": fresh(normal=4000), "b": fresh(normal=1500)})
    after = scores(
        NORMAL_1000,
        {"a": fresh(normal=4000), "b": fresh(normal=1500, bound={Tier.NORMAL: 1000})},
    )
    assert before["b"] > before["a"]
    assert after["b"] == 0
    assert after["a"] > after["b"]


def bound_pod(node: str, bound_at: float, millicores: int, tier: Tier = Tier.NORMAL) -> BoundPod:
    return BoundPod(
        node_name=node, tier=tier, cpu_request_millicores=millicores, bound_at_seconds=bound_at
    )


def test_bound_pod_index_counts_pods_after_timestamp() -> None:
    index = BoundPodIndex()
    index.put("ns/old", bound_pod("n1", NOW - 20, 100))
    index.put("ns/same-second", bound_pod("n1", NOW - 10, 200))
    index.put("ns/new", bound_pod("n1", NOW - 5, 400))
    index.put("ns/new-high", bound_pod("n1", NOW - 1, 800, Tier.HIGH))
    index.put("ns/other-node", bound_pod("n2", NOW - 1, 1600))
    assert index.bound_since("n1", NOW - 10) == {Tier.NORMAL: 400, Tier.HIGH: 800}
    assert index.bound_since("n1", NOW) == {}
    assert index.bound_since("unknown", 0.0) == {}


def test_bound_pod_index_forgets_removed_pods() -> None:
    index = BoundPodIndex()
    index.put("ns/a", bound_pod("n1", NOW, 100))
    index.put("ns/a", bound_pod("n1", NOW, 300))  # resized in place: replaced, not added
    index.put("ns/b", bound_pod("n1", NOW, 500))
    index.remove("ns/b")
    index.remove("ns/never-seen")
    assert index.bound_since("n1", 0.0) == {Tier.NORMAL: 300}
    assert len(index) == 1


def scheduled_pod(transition: Any, status: str = "True") -> dict[str, Any]:
    condition = {"type": "PodScheduled", "status": status, "lastTransitionTime": transition}
    return {"status": {"conditions": [{"type": "Ready", "status": "False"}, condition]}}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        # One-second resolution: the pod counts as bound at the end of that second.
        (scheduled_pod("2027-01-15T08:00:00Z"), 1_800_000_001.0),
        (scheduled_pod("2027-01-15T08:00:00Z", status="False"), None),
        (scheduled_pod("yesterday"), None),
        (scheduled_pod(None), None),
        ({"status": {}}, None),
    ],
)
def test_scheduled_at_from_condition(pod: dict[str, Any], expected: float | None) -> None:
    assert scheduled_at_seconds(pod) == expected


def container(cpu: str | None, *, sidecar: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"name": "c", "resources": {"requests": {"cpu": cpu}} if cpu else {}}
    if sidecar:
        result["restartPolicy"] = "Always"
    return result


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [container("250m"), container("1")]}, 1250),
        ({"containers": [container(None)]}, 0),
        ({}, 0),
        # A regular init container runs alone: the larger of it and the app wins.
        ({"containers": [container("500m")], "initContainers": [container("2")]}, 2000),
        ({"containers": [container("500m")], "initContainers": [container("100m")]}, 500),
        # A sidecar keeps running next to the app and the later init containers.
        (
            {
                "containers": [container("500m")],
                "initContainers": [container("200m", sidecar=True), container("1")],
            },
            1200,
        ),
        ({"containers": [container("500m")], "overhead": {"cpu": "100m"}}, 600),
        ({"containers": [container("500m")], "resources": {"requests": {"cpu": "3"}}}, 3000),
    ],
)
def test_pod_cpu_request(spec: dict[str, Any], expected: int) -> None:
    assert pod_cpu_request_millicores({"spec": spec}) == expected


GOOD_VALUE = tier_load(normal=1000).encode()


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"v": 99, "ts": 1, "cpu_m": 1, "tiers": {}}',
        "[1, 2]",
        '{"v": 1, "ts": 1, "cpu_m": 1, "tiers": {"normal": {"req_m": -1}}}',
        '{"v": 1, "ts": "noon", "cpu_m": 1, "tiers": {}}',
    ],
)
def test_decoder_treats_garbage_as_missing(value: str) -> None:
    assert AnnotationDecoder().decode("n1", {TIER_LOAD: value}) is None


def test_decoder_parses_valid_value() -> None:
    decoded = AnnotationDecoder().decode("n1", {TIER_LOAD: GOOD_VALUE})
    assert decoded is not None
    assert decoded.tiers[Tier.NORMAL].protection_capacity_millicores == 1000


def test_decoder_rejects_capacity_above_maximum(caplog: pytest.LogCaptureFixture) -> None:
    too_large = MAX_FREE_MILLICORES + 1
    value = TierLoad(
        timestamp_seconds=NOW,
        node_cpu_millicores=4000,
        tiers={Tier.NORMAL: TierLoadEntry(protection_capacity_millicores=too_large)},
    ).encode()
    with caplog.at_level(logging.WARNING, logger="extender.cache"):
        assert AnnotationDecoder().decode("n1", {TIER_LOAD: value}) is None
    error = caplog.records[0].error  # type: ignore[attr-defined]
    assert f"cap_m={too_large}" in error
    assert str(MAX_FREE_MILLICORES) in error


def test_decoder_without_annotation_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    assert AnnotationDecoder().decode("n1", {}) is None
    assert AnnotationDecoder().decode("n1", None) is None
    assert caplog.records == []


def test_decoder_logs_once_per_node_and_value(caplog: pytest.LogCaptureFixture) -> None:
    decoder = AnnotationDecoder()
    with caplog.at_level(logging.WARNING, logger="extender.cache"):
        for node, value in [("n1", "bad"), ("n1", "bad"), ("n1", "worse"), ("n2", "bad")]:
            decoder.decode(node, {TIER_LOAD: value})
    logged = [(record.node, record.value) for record in caplog.records]  # type: ignore[attr-defined]
    assert logged == [("n1", "bad"), ("n1", "worse"), ("n2", "bad")]
