"""The NumPy columns of the extender against the list-based reference policy.

``score_free_capacities`` and ``filter_free_capacities`` state the policy one node at a time.
The handlers run ``score_columns`` and ``filter_columns`` on ``CapacityTable`` columns; these
tests check that both give the same scores and filter decisions on random caches.
"""

import math
import random

import numpy as np
import pytest

from extender.scoring import (
    MAX_FREE_MILLICORES,
    NodeCapacity,
    PodDemand,
    filter_columns,
    filter_free_capacities,
    free_capacities_millicores,
    score_columns,
    score_free_capacities,
)
from extender.table import MIN_STORED_FREE_MILLICORES, CapacityTable, columns_of
from temper.tiers import Tier

NOW = 1_800_000_000.0
MAX_AGE = 30.0


def random_free(generator: random.Random) -> int | None:
    """A free_t: missing tier, ordinary, negative, or at the edges of the stored range."""
    return generator.choice(
        [
            None,
            generator.randint(0, 8000),
            generator.randint(-3000, 3000),
            generator.choice([0, 1, MAX_FREE_MILLICORES, -(2**70), MIN_STORED_FREE_MILLICORES]),
        ]
    )


def random_capacity(generator: random.Random) -> NodeCapacity:
    age = generator.choice([generator.uniform(-5.0, MAX_AGE), MAX_AGE, MAX_AGE + 0.001, 1e9])
    return NodeCapacity(
        timestamp_seconds=NOW - age,
        free_millicores=tuple(random_free(generator) for _ in Tier),
    )


def random_request(generator: random.Random) -> int:
    return generator.choice(
        [
            generator.randint(0, 4000),
            generator.choice([0, 1, MAX_FREE_MILLICORES, MAX_FREE_MILLICORES + 1, 2**80]),
        ]
    )


def random_table(
    generator: random.Random, names: list[str]
) -> tuple[CapacityTable, dict[str, NodeCapacity]]:
    """Fill a table with puts, replacements and removals; return it and the expected content."""
    table = CapacityTable()
    expected: dict[str, NodeCapacity] = {}
    for _ in range(generator.randint(0, 3 * len(names))):
        name = generator.choice(names)
        if generator.random() < 0.25:
            table.remove(name)
            expected.pop(name, None)
        else:
            capacity = random_capacity(generator)
            table.put(name, capacity)
            expected[name] = capacity
    return table, expected


def assert_columns_match_reference(
    tier: Tier,
    table: CapacityTable,
    expected: dict[str, NodeCapacity],
    names: list[str],
    request: int,
    max_age: float,
) -> None:
    reference_free = free_capacities_millicores(tier, expected, names, NOW, max_age)
    columns = table.columns(tier, names)
    fresh = columns.fresh(NOW, max_age)
    assert fresh.tolist() == [free is not None for free in reference_free]

    scores = score_columns(request, fresh, columns.free_millicores)
    assert scores.tolist() == score_free_capacities(request, reference_free)

    demand = PodDemand(tier, request)
    decisions = filter_columns(demand, fresh, columns.free_millicores)
    reference = filter_free_capacities(demand, reference_free)
    assert decisions.rejected == reference.rejected
    assert {k: v for k, v in decisions.counts.items() if v} == {
        k: v for k, v in reference.counts.items() if v
    }


@pytest.mark.parametrize("max_age", [MAX_AGE, 0.0, math.inf])
def test_columns_match_reference_policy(max_age: float) -> None:
    generator = random.Random(17)
    for _ in range(400):
        names = [f"n{index}" for index in range(generator.randint(1, 40))]
        table, expected = random_table(generator, names)
        # Requests name cached nodes, removed ones, unknown ones and repeats, in any order.
        requested = [generator.choice([*names, "never-seen"]) for _ in range(len(names))]
        tier = generator.choice(list(Tier))
        assert_columns_match_reference(
            tier, table, expected, requested, random_request(generator), max_age
        )


def test_columns_of_request_capacities_match_reference() -> None:
    # Full-object mode builds the columns from the capacities of the received Node objects.
    generator = random.Random(19)
    for _ in range(400):
        capacities = [
            None if generator.random() < 0.2 else random_capacity(generator)
            for _ in range(generator.randint(0, 30))
        ]
        names = [f"n{index}" for index in range(len(capacities))]
        by_name = {
            name: capacity
            for name, capacity in zip(names, capacities, strict=True)
            if capacity is not None
        }
        tier = generator.choice(list(Tier))
        request = random_request(generator)
        reference_free = free_capacities_millicores(tier, by_name, names, NOW, MAX_AGE)
        columns = columns_of(tier, capacities)
        fresh = columns.fresh(NOW, MAX_AGE)
        assert fresh.tolist() == [free is not None for free in reference_free]
        scores = score_columns(request, fresh, columns.free_millicores)
        assert scores.tolist() == score_free_capacities(request, reference_free)


def test_score_columns_example_from_docs() -> None:
    # docs/extender.md: a 1000m pod and free 4000, 1500 and 600 score 3, 9 and 0.
    fresh = np.array([True, True, True, False])
    free = np.array([4000, 1500, 600, 0], dtype=np.int64)
    assert score_columns(1000, fresh, free).tolist() == [3, 9, 0, 5]


def test_table_grows_and_reuses_slots() -> None:
    table = CapacityTable()
    for index in range(1000):
        table.put(f"n{index}", NodeCapacity(NOW, (index, None, index, 0, 0)))
    for index in range(0, 1000, 2):
        table.remove(f"n{index}")
    table.put("late", NodeCapacity(NOW, (7, 7, 7, 7, 7)))
    assert len(table) == 501
    assert sorted(table)[:2] == ["late", "n1"]
    assert table["n999"].free_millicores[0] == 999

    columns = table.columns(Tier.CRITICAL, ["n999", "n998", "late", "never-seen"])
    assert columns.free_millicores.tolist()[0:3:2] == [999, 7]
    assert columns.fresh(NOW, MAX_AGE).tolist() == [True, False, True, False]
    # n999 has no entry for the high tier.
    assert table.columns(Tier.HIGH, ["n999"]).fresh(NOW, MAX_AGE).tolist() == [False]


def test_table_rejects_value_above_maximum() -> None:
    table = CapacityTable()
    table.put("n1", NodeCapacity(NOW, (100, 100, 100, 100, 100)))
    too_large = NodeCapacity(NOW, (MAX_FREE_MILLICORES + 1, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="exceeds"):
        table.put("n1", too_large)
    # The rejected value leaves the previous one in place.
    assert table["n1"].free_millicores[0] == 100
    assert table.columns(Tier.CRITICAL, ["n1"]).free_millicores.tolist() == [100]
    with pytest.raises(ValueError, match="exceeds"):
        columns_of(Tier.CRITICAL, [too_large])
