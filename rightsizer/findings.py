"""Findings that a container's average CPU hides, from per-thread behaviour.

- ``hot-thread``: one thread saturates a core (CPU time plus run-queue delay at least
  85% of the interval) while it has at least 40% of the container's demand, in at least
  20% of the intervals. Such a thread cannot use more than one core, and the container's
  average hides that it needs one whole core when it runs.
- ``burst-pool``: a group of at least 4 threads that run in the same intervals, each
  lightly (under 0.3 cores on average while active), and queue behind each other. Their
  run-queue delay is at least a quarter of their CPU time, and their delay per timeslice
  is at least twice that of the container's other threads. Together they want many CPUs
  at once for short moments, which a CPU limit throttles.
- ``wake-chain``: at least 2 threads that wake up often (50 or more voluntary switches a
  second), run short slices (1 ms or less) and spend at least a fifth of the time they
  want a CPU waiting for one. They need scheduling latency, not CPU quantity.

The comparison with the other threads keeps a node saturated by other work from making
every pool look like a burst pool, because there every thread waits about one scheduling
latency per timeslice (per CPU second, short-slice threads wait more). Interval counters
do not show whether the pool's threads ran at the same moment, so a pool on a saturated
node remains a known false positive when it is the container's only busy group, or when
the other threads run long slices and wait less per timeslice. The advice (no CPU limit)
is harmless there.

The thresholds are fixed rules. The benchmark compares the hot-thread rule with a learned
classifier, which did no better.
"""

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from rightsizer.features import ThreadFeatures, thread_features
from rightsizer.grouping import assign_groups, group_members
from rightsizer.history import ContainerHistory

HOT_FRACTION = 0.2
STARVED_WAIT_SHARE = 0.2
POOL_MIN_THREADS = 4
POOL_MAX_CORES_PER_ACTIVE_THREAD = 0.3
POOL_MIN_WAIT_RATIO = 0.25
POOL_MIN_DISPATCH_WAIT_OVER_REST = 2.0
CHAIN_MIN_THREADS = 2
CHAIN_MIN_WAKEUPS_PER_SECOND = 50.0
CHAIN_MAX_SLICE_MS = 1.0
CHAIN_MIN_WAIT_SHARE = 0.2


class FindingKind(StrEnum):
    """Kind of a finding."""

    HOT_THREAD = "hot-thread"
    BURST_POOL = "burst-pool"
    WAKE_CHAIN = "wake-chain"


@dataclass(frozen=True)
class Finding:
    """One finding about a thread group of a container; metrics are rounded numbers."""

    kind: FindingKind
    group: str
    tids: tuple[int, ...]
    metrics: dict[str, float]
    advice: str


def hot_thread_indices(features: ThreadFeatures) -> list[int]:
    """Return the indices of the threads the hot-thread rule flags."""
    return [int(i) for i in np.flatnonzero(features.hot_fraction >= HOT_FRACTION)]


def _hot_findings(
    history: ContainerHistory, groups: list[str], features: ThreadFeatures, hot: list[int]
) -> list[Finding]:
    by_group: dict[str, list[int]] = {}
    for index in hot:
        by_group.setdefault(groups[index], []).append(index)
    findings = []
    for group, indices in sorted(by_group.items()):
        selected = np.array(indices)
        wait_share = float(features.hot_wait_share[selected].max())
        advice = (
            "starved: it waits for a CPU while saturating one; a Guaranteed pod with integer "
            "CPUs under the static CPU manager gives it a core of its own (the application "
            "must pin the thread inside its cpuset)"
            if wait_share >= STARVED_WAIT_SHARE
            else "single-thread-bound: more than one core will not speed it up; parallelise "
            "or scale out, and keep the request one core above what the other threads need"
        )
        p95_demand = np.percentile(history.demand[:, selected], 95, axis=0)
        findings.append(
            Finding(
                kind=FindingKind.HOT_THREAD,
                group=group,
                tids=tuple(history.threads[i].tid for i in indices),
                metrics={
                    "threads": float(len(indices)),
                    "hot_fraction": round(float(features.hot_fraction[selected].max()), 3),
                    "p95_demand_cores": round(float(p95_demand.max()), 3),
                    "wait_share": round(wait_share, 3),
                },
                advice=advice,
            )
        )
    return findings


def _dispatch_wait_seconds(history: ContainerHistory, threads: np.ndarray) -> float:
    """Return the run-queue delay per timeslice of ``threads`` (a mask or indices), or 0."""
    slices = float(history.timeslices[:, threads].sum())
    return float(history.runq_delay_seconds[:, threads].sum()) / slices if slices > 0 else 0.0


def _pool_finding(history: ContainerHistory, group: str, members: np.ndarray) -> Finding | None:
    if len(members) < POOL_MIN_THREADS or history.intervals == 0:
        return None

    cpu = history.cpu_seconds[:, members]
    active = cpu > 0
    coactive = float(np.percentile(active.sum(axis=1), 90))
    active_seconds = float((active * history.seconds[:, None]).sum())
    cpu_total = float(cpu.sum())
    runq_total = float(history.runq_delay_seconds[:, members].sum())
    if coactive < POOL_MIN_THREADS or cpu_total <= 0 or active_seconds <= 0:
        return None
    cores_per_active_thread = cpu_total / active_seconds
    wait_ratio = runq_total / cpu_total
    if cores_per_active_thread >= POOL_MAX_CORES_PER_ACTIVE_THREAD:
        return None
    if wait_ratio < POOL_MIN_WAIT_RATIO:
        return None

    # Node-wide contention makes every thread wait; only a pool that waits longer per
    # timeslice than its neighbours queues behind itself.
    rest = np.ones(len(history.threads), dtype=bool)
    rest[members] = False
    pool_wait = _dispatch_wait_seconds(history, members)
    rest_wait = _dispatch_wait_seconds(history, rest)
    if pool_wait < POOL_MIN_DISPATCH_WAIT_OVER_REST * rest_wait:
        return None

    return Finding(
        kind=FindingKind.BURST_POOL,
        group=group,
        tids=tuple(history.threads[i].tid for i in members),
        metrics={
            "threads": float(len(members)),
            "coactive_threads_p90": round(coactive, 1),
            "cores_per_active_thread": round(cores_per_active_thread, 3),
            "wait_ratio": round(wait_ratio, 3),
            "wait_per_dispatch_us": round(pool_wait * 1e6, 1),
            "other_threads_wait_per_dispatch_us": round(rest_wait * 1e6, 1),
        },
        advice=f"its threads run together and queue for CPUs; leave the CPU limit unset or "
        f"at least {int(np.ceil(coactive))} cores, because a CFS quota below the burst width "
        "throttles the whole container each period",
    )


def _chain_findings(
    history: ContainerHistory, groups: list[str], features: ThreadFeatures
) -> list[Finding]:
    chained = np.flatnonzero(
        (features.voluntary_rate >= CHAIN_MIN_WAKEUPS_PER_SECOND)
        & (features.slice_ms <= CHAIN_MAX_SLICE_MS)
        & (features.slice_ms > 0)
        & (features.wait_share >= CHAIN_MIN_WAIT_SHARE)
    )
    if len(chained) < CHAIN_MIN_THREADS:
        return []
    by_group: dict[str, list[int]] = {}
    for index in chained:
        by_group.setdefault(groups[index], []).append(int(index))
    findings = []
    for group, indices in sorted(by_group.items()):
        selected = np.array(indices)
        findings.append(
            Finding(
                kind=FindingKind.WAKE_CHAIN,
                group=group,
                tids=tuple(history.threads[i].tid for i in indices),
                metrics={
                    "threads": float(len(indices)),
                    "wakeups_per_second": round(float(features.voluntary_rate[selected].sum()), 1),
                    "slice_ms": round(float(np.median(features.slice_ms[selected])), 3),
                    "wait_per_dispatch_us": round(
                        float(np.median(features.wait_per_dispatch_us[selected])), 1
                    ),
                },
                advice="latency-sensitive: these threads wait for a CPU on every wake-up; a "
                "higher tier (temper-high or temper-critical) or cpu.weight cuts the wait, "
                "more CPU request barely does",
            )
        )
    return findings


@dataclass(frozen=True)
class Analysis:
    """Features, groups, hot threads and findings of one container over one window."""

    features: ThreadFeatures
    groups: list[str]
    hot_threads: list[int]
    findings: list[Finding] = field(default_factory=list)


def analyse(history: ContainerHistory) -> Analysis:
    """Compute features and groups, then apply every finding rule."""
    features = thread_features(history)
    groups = assign_groups(history, features)
    hot = hot_thread_indices(features)
    findings = _hot_findings(history, groups, features, hot)
    hot_set = set(hot)
    for group, members in sorted(group_members(groups).items()):
        pool = np.array([i for i in members if i not in hot_set], dtype=int)
        finding = _pool_finding(history, group, pool)
        if finding is not None:
            findings.append(finding)
    findings.extend(_chain_findings(history, groups, features))
    return Analysis(features=features, groups=groups, hot_threads=hot, findings=findings)
