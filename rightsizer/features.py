"""Per-thread behaviour features over a window, the input of findings and grouping."""

from dataclasses import dataclass

import numpy as np

from rightsizer.history import ContainerHistory, FloatArray

# A thread "saturates a core" in an interval when it ran or waited this share of the time.
SATURATED_DEMAND = 0.85
# ...and it "dominates" the container when it has at least this share of the container's demand.
DOMINANT_SHARE = 0.4


@dataclass(frozen=True)
class ThreadFeatures:
    """One value per thread (arrays of shape (T,)) over the intervals of a window.

    Rates are per second of wall time; shares are fractions from 0 to 1.
    """

    mean_usage: FloatArray  # cores
    mean_demand: FloatArray  # cores (CPU plus run-queue delay, at most 1 per interval)
    hot_fraction: FloatArray  # share of intervals saturating a core while dominating
    saturated_fraction: FloatArray  # share of intervals saturating a core
    active_fraction: FloatArray  # share of intervals with any CPU time
    wait_share: FloatArray  # run-queue delay / (CPU time + run-queue delay)
    hot_wait_share: FloatArray  # the same, over the thread's hot intervals only
    slice_ms: FloatArray  # CPU time per timeslice, milliseconds
    wait_per_dispatch_us: FloatArray  # run-queue delay per timeslice, microseconds
    voluntary_rate: FloatArray  # voluntary context switches per second
    preemption_ratio: FloatArray  # nonvoluntary / all context switches


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def thread_features(history: ContainerHistory) -> ThreadFeatures:
    """Compute the features of every thread; an empty window gives zeros."""
    usage = history.usage
    demand = history.demand
    count = max(history.intervals, 1)
    container_demand = demand.sum(axis=1, keepdims=True)
    share = _ratio(demand, np.broadcast_to(container_demand, demand.shape).copy())
    saturated = demand >= SATURATED_DEMAND
    hot = saturated & (share >= DOMINANT_SHARE)
    cpu = history.cpu_seconds.sum(axis=0)
    runq = history.runq_delay_seconds.sum(axis=0)
    slices = history.timeslices.sum(axis=0)
    voluntary = history.voluntary_switches.sum(axis=0)
    switches = voluntary + history.nonvoluntary_switches.sum(axis=0)
    hot_cpu = (history.cpu_seconds * hot).sum(axis=0)
    hot_runq = (history.runq_delay_seconds * hot).sum(axis=0)
    empty = np.zeros(len(history.threads))
    return ThreadFeatures(
        mean_usage=usage.mean(axis=0) if history.intervals else empty,
        mean_demand=demand.mean(axis=0) if history.intervals else empty,
        hot_fraction=hot.sum(axis=0) / count,
        saturated_fraction=saturated.sum(axis=0) / count,
        active_fraction=(history.cpu_seconds > 0).sum(axis=0) / count,
        wait_share=_ratio(runq, cpu + runq),
        hot_wait_share=_ratio(hot_runq, hot_cpu + hot_runq),
        slice_ms=_ratio(cpu, slices) * 1e3,
        wait_per_dispatch_us=_ratio(runq, slices) * 1e6,
        voluntary_rate=voluntary / max(history.observed_seconds, 1e-9),
        preemption_ratio=_ratio(switches - voluntary, switches),
    )
