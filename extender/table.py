"""Every cached node's ``free_t`` and timestamp in NumPy arrays, one column per node.

A request names a few hundred of thousands of nodes. The table gives each node a slot (a
column of its arrays) when its data arrives. A request then costs one dict lookup per name,
run in C by ``map``, and NumPy gathers instead of a Python loop over ``NodeCapacity``
objects. ``extender.scoring.score_columns`` and ``filter_columns`` work on whole columns.

The table is also a ``Mapping[str, NodeCapacity]`` of the same data, for the metrics and
for code that reads one node.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import numpy.typing as npt

from extender.scoring import MAX_FREE_MILLICORES, NodeCapacity
from temper.tiers import Tier

# Column 0 stands for every name without a slot: its timestamps are NaN ("no data").
NO_DATA_SLOT = 0
# free_t below this is stored as this value. It is exact for every decision, because such a
# node cannot hold any request (requests are >= 0), and it keeps the arithmetic in int64.
MIN_STORED_FREE_MILLICORES = -(2**62)
_INITIAL_SLOTS = 256
_RANK = {tier: tier.rank for tier in Tier}


@dataclass(frozen=True)
class NodeColumns:
    """``ts(n)`` and ``free_t(n)`` of the requested nodes for one tier, in request order.

    ``timestamps_seconds`` is NaN for a node without data for the tier (unknown node, or no
    entry for the tier), which no freshness test passes. ``free_millicores`` is clamped
    below at ``MIN_STORED_FREE_MILLICORES``, and never above ``MAX_FREE_MILLICORES``.
    """

    timestamps_seconds: npt.NDArray[np.float64]
    free_millicores: npt.NDArray[np.int64]

    def fresh(self, now_seconds: float, max_age_seconds: float) -> npt.NDArray[np.bool_]:
        """Return the freshness test of ``extender.scoring.is_fresh`` for every node."""
        # The same float64 subtraction and comparison as is_fresh, so the results agree.
        age = now_seconds - self.timestamps_seconds
        return age <= max_age_seconds


def _stored_free(free: int) -> int:
    """Return ``free`` as stored in the arrays; raise ValueError above the int64-safe range."""
    if free > MAX_FREE_MILLICORES:
        # NodeCache rejects such tier-load values; a caller that skips that check gets this.
        raise ValueError(f"free_t {free} exceeds {MAX_FREE_MILLICORES} millicores")
    return max(free, MIN_STORED_FREE_MILLICORES)


def columns_of(tier: Tier, capacities: Sequence[NodeCapacity | None]) -> NodeColumns:
    """Build the columns of one tier from capacities given in request order (None: no data)."""
    rank = _RANK[tier]
    free_values = [None if c is None else c.free_millicores[rank] for c in capacities]
    timestamps = [
        np.nan if free is None or capacity is None else capacity.timestamp_seconds
        for capacity, free in zip(capacities, free_values, strict=True)
    ]
    free = [0 if value is None else _stored_free(value) for value in free_values]
    return NodeColumns(
        timestamps_seconds=np.array(timestamps, dtype=np.float64),
        free_millicores=np.array(free, dtype=np.int64),
    )


class CapacityTable(Mapping[str, NodeCapacity]):
    """``NodeCapacity`` per node name, mirrored into arrays with one column per node.

    Rows are tier ranks. A column is reused after its node is removed, and the arrays double
    when every column is taken. Not thread-safe: the event loop is the only writer and reader.
    """

    def __init__(self) -> None:
        self._capacities: dict[str, NodeCapacity] = {}
        self._slots: dict[str, int] = {}
        self._free_slots: list[int] = []
        self._next_slot = NO_DATA_SLOT + 1
        self._timestamps = np.full((len(Tier), _INITIAL_SLOTS), np.nan)
        self._free = np.zeros((len(Tier), _INITIAL_SLOTS), dtype=np.int64)

    def __getitem__(self, name: str) -> NodeCapacity:
        return self._capacities[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._capacities)

    def __len__(self) -> int:
        return len(self._capacities)

    def put(self, name: str, capacity: NodeCapacity) -> None:
        """Add or replace a node's capacity.

        Raises ValueError when a ``free_t`` exceeds ``MAX_FREE_MILLICORES``; the node then
        keeps its previous data.
        """
        # Convert every value first, so an invalid one leaves the table unchanged.
        column = [None if free is None else _stored_free(free) for free in capacity.free_millicores]
        slot = self._slots.get(name)
        if slot is None:
            slot = self._take_slot()
            self._slots[name] = slot
        self._capacities[name] = capacity
        for rank, free in enumerate(column):
            self._timestamps[rank, slot] = np.nan if free is None else capacity.timestamp_seconds
            self._free[rank, slot] = 0 if free is None else free

    def remove(self, name: str) -> None:
        """Forget a node; unknown names are ignored."""
        self._capacities.pop(name, None)
        slot = self._slots.pop(name, None)
        if slot is None:
            return
        self._timestamps[:, slot] = np.nan
        self._free[:, slot] = 0
        self._free_slots.append(slot)

    def columns(self, tier: Tier, names: Sequence[str]) -> NodeColumns:
        """Return the columns of ``tier`` for the named nodes, in the order of ``names``."""
        slots = np.fromiter(
            map(self._slots.get, names, repeat(NO_DATA_SLOT)), dtype=np.intp, count=len(names)
        )
        rank = _RANK[tier]
        return NodeColumns(
            timestamps_seconds=self._timestamps[rank].take(slots),
            free_millicores=self._free[rank].take(slots),
        )

    def _take_slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        slot = self._next_slot
        if slot == self._timestamps.shape[1]:
            grown = 2 * slot
            timestamps = np.full((len(Tier), grown), np.nan)
            timestamps[:, :slot] = self._timestamps
            free = np.zeros((len(Tier), grown), dtype=np.int64)
            free[:, :slot] = self._free
            self._timestamps, self._free = timestamps, free
        self._next_slot = slot + 1
        return slot
