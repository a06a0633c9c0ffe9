"""How many Nodes a set of CPU requests needs, by first-fit decreasing packing.

The savings view counts the Nodes that the webhook's smaller requests free: it packs the
same pods once with their original requests and once with their current ones, and takes
the difference. Only CPU requests are packed. Memory, pod count limits, affinity, taints
and topology spread are ignored, so the counts are a CPU-only lower bound of what
kube-scheduler could achieve, not a placement it would make.
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bin:
    """One Node's CPU that movable pods may use: allocatable minus its fixed pods' requests."""

    name: str
    capacity_millicores: int


def nodes_needed(bins: Sequence[Bin], requests_millicores: Sequence[int]) -> int:
    """Return how many Nodes first-fit decreasing packing of ``requests_millicores`` uses.

    The real Nodes come first, largest capacity first. A request that fits none of them
    opens a new Node as large as the largest real one; a request larger than that gets a
    Node of its own. Requests of 0 fit anywhere and never make a Node needed.
    """
    ordered = sorted(bins, key=lambda b: (-b.capacity_millicores, b.name))
    free = [max(0, b.capacity_millicores) for b in ordered]
    used = [False] * len(free)
    largest = max(free, default=0)
    oversized = 0
    for request in sorted((r for r in requests_millicores if r > 0), reverse=True):
        for index, room in enumerate(free):
            if room >= request:
                free[index] = room - request
                used[index] = True
                break
        else:
            if request > largest:
                # No Node of this machine type can hold it: it needs one of its own.
                oversized += 1
            else:
                free.append(largest - request)
                used.append(True)
    return sum(used) + oversized
