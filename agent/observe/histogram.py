"""The run-queue delay histogram layout shared with ``bpf/sched_observe.bpf.c``.

Slots 0-3 count delays of 0, 1, 2 and 3 microseconds. From slot 4 on, each power of two is
split into four slots: slot ``s`` covers ``[(4 + s % 4) << (s // 4 - 1), (5 + s % 4) <<
(s // 4 - 1))`` microseconds, so a slot's upper bound is at most 25% above its lower bound.
"""

from collections.abc import Sequence

DELAY_SLOTS = 128


def slot_upper_us(slot: int) -> int:
    """Exclusive upper bound of a slot, in microseconds."""
    if slot < 4:
        return slot + 1
    exponent = slot // 4 + 1
    return (5 + slot % 4) << (exponent - 2)


def slot_for_us(us: int) -> int:
    """Return the slot of a delay of ``us`` microseconds (the C code's delay_slot)."""
    if us < 4:
        return us
    exponent = us.bit_length() - 1
    slot = 4 * (exponent - 1) + ((us >> (exponent - 2)) & 3)
    return min(slot, DELAY_SLOTS - 1)


def quantile_us(counts: Sequence[int], quantile: float) -> int | None:
    """Upper bound of the slot holding the ``quantile`` (0-1) of ``counts``; None when empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = quantile * total
    seen = 0
    for slot, count in enumerate(counts):
        seen += count
        if seen >= rank and count:
            return slot_upper_us(slot)
    return slot_upper_us(len(counts) - 1)


# Prometheus buckets: powers of two from 4 us to about 1 s, each a slot boundary.
BUCKET_BOUNDS_US = tuple(1 << power for power in range(2, 21))


def cumulative_buckets(counts: Sequence[int]) -> list[tuple[float, int]]:
    """(le in seconds, cumulative count) pairs for a Prometheus histogram, +Inf last."""
    buckets: list[tuple[float, int]] = []
    running = 0
    slot = 0
    for bound in BUCKET_BOUNDS_US:
        while slot < len(counts) and slot_upper_us(slot) <= bound:
            running += counts[slot]
            slot += 1
        buckets.append((bound / 1e6, running))
    buckets.append((float("inf"), sum(counts)))
    return buckets
