"""Thread groups: name groups, split by behaviour where names do not tell threads apart.

Runtimes that do not name their threads (Go, most Python and C++ programs) give every
thread the process name, so one name group would mix the event loop, the workers and the
idle runtime threads. Such a group (at least ``MIN_SPLIT_THREADS`` threads sharing one
exact name) is split into behaviour classes by fixed rules. The benchmark compares these
rules with clustering, which did no better (see docs/rightsizer.md).
"""

from collections import defaultdict

import numpy as np

from rightsizer.features import ThreadFeatures
from rightsizer.history import ContainerHistory

MIN_SPLIT_THREADS = 4
HOT_FRACTION = 0.2
WAKEUP_RATE_PER_SECOND = 50.0
WAKEUP_SLICE_MS = 1.0
BUSY_CORES = 0.005


def behaviour_class(features: ThreadFeatures, index: int) -> str:
    """Return ``hot``, ``wakeup``, ``busy`` or ``idle`` for one thread."""
    if features.hot_fraction[index] >= HOT_FRACTION:
        return "hot"
    if (
        features.voluntary_rate[index] >= WAKEUP_RATE_PER_SECOND
        and features.slice_ms[index] <= WAKEUP_SLICE_MS
    ):
        return "wakeup"
    if features.mean_usage[index] >= BUSY_CORES:
        return "busy"
    return "idle"


def assign_groups(history: ContainerHistory, features: ThreadFeatures) -> list[str]:
    """Return the group of each thread of ``history``, in thread order."""
    members: dict[str, list[int]] = defaultdict(list)
    for index, thread in enumerate(history.threads):
        members[thread.group].append(index)
    groups = [thread.group for thread in history.threads]
    for name, indices in members.items():
        comms = {history.threads[i].comm for i in indices}
        if len(indices) < MIN_SPLIT_THREADS or len(comms) != 1:
            continue
        for i in indices:
            groups[i] = f"{name}~{behaviour_class(features, i)}"
    return groups


def group_members(groups: list[str]) -> dict[str, np.ndarray]:
    """Return the thread indices of each group."""
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    return {group: np.array(indices) for group, indices in members.items()}
