"""Turn successive snapshots of one agent into per-thread deltas over each interval."""

import logging
from dataclasses import dataclass, field

from rightsizer.snapshot import Snapshot, ThreadSample

log = logging.getLogger(__name__)

# A thread runs or waits at most the interval's length. The agent reads the counters a
# little apart from the snapshot's timestamp, so 10% more is tolerated.
MAX_TIME_SHARE = 1.1


@dataclass(frozen=True, slots=True)
class ThreadDelta:
    """CPU time, run-queue delay and switches of one thread in one interval (seconds, counts)."""

    tgid: int
    tid: int
    comm: str
    cpu_seconds: float
    runq_delay_seconds: float
    timeslices: int
    voluntary_switches: int
    nonvoluntary_switches: int

    @property
    def idle(self) -> bool:
        """True when the thread neither ran, waited nor switched during the interval."""
        return (
            self.cpu_seconds == 0
            and self.runq_delay_seconds == 0
            and self.timeslices == 0
            and self.voluntary_switches == 0
            and self.nonvoluntary_switches == 0
        )


@dataclass(frozen=True, slots=True)
class ContainerInterval:
    """One container's threads over one interval that ends at ``end_seconds``."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    node: str
    end_seconds: float
    seconds: float
    threads_present: int
    deltas: tuple[ThreadDelta, ...]


@dataclass
class _NodeState:
    timestamp_seconds: float
    containers: set[tuple[str, str]] = field(default_factory=set)
    counters: dict[tuple[str, str, int], ThreadSample] = field(default_factory=dict)


def _counters(sample: ThreadSample) -> tuple[float, float, int, int, int]:
    return (
        sample.cpu_seconds_total,
        sample.runq_delay_seconds_total,
        sample.timeslices_total,
        sample.voluntary_ctxt_switches_total,
        sample.nonvoluntary_ctxt_switches_total,
    )


def _delta(
    previous: ThreadSample | None, current: ThreadSample, seconds: float
) -> ThreadDelta | None:
    """Return what the thread did in an interval of ``seconds``, or None if that is unknown.

    A thread without a previous sample was born in the interval, so its whole count
    belongs to the interval. So does a thread whose counters went backwards: its tid was
    reused by a new thread. A thread that renamed itself keeps its counters, so the
    difference applies. A thread that ran and waited longer than the interval (one the
    agent missed before, or a tid reused with larger counters) is skipped.
    """
    now = _counters(current)
    before = (0.0, 0.0, 0, 0, 0) if previous is None else _counters(previous)
    values = tuple(a - b for a, b in zip(now, before, strict=True))
    if min(values) < 0:
        values = now
    if values[0] + values[1] > seconds * MAX_TIME_SHARE:
        return None
    return ThreadDelta(
        tgid=current.tgid,
        tid=current.tid,
        comm=current.comm,
        cpu_seconds=float(values[0]),
        runq_delay_seconds=float(values[1]),
        timeslices=int(values[2]),
        voluntary_switches=int(values[3]),
        nonvoluntary_switches=int(values[4]),
    )


class DeltaTracker:
    """Keeps the last snapshot of each node and returns the intervals since then.

    The first snapshot of a node only sets the baseline, and so does the first snapshot
    that lists a container, because its threads' counters hold everything since the
    container started. A gap longer than ``max_gap_seconds`` (a missed agent, a restart)
    also resets the baseline, because an average over a long gap would smear peaks.
    """

    def __init__(self, max_gap_seconds: float) -> None:
        self._max_gap_seconds = max_gap_seconds
        self._nodes: dict[str, _NodeState] = {}

    def update(self, snapshot: Snapshot) -> list[ContainerInterval]:
        """Record ``snapshot`` and return one interval per container seen before."""
        previous = self._nodes.get(snapshot.node)
        state = _NodeState(snapshot.timestamp_seconds)
        for pod in snapshot.pods:
            for container in pod.containers:
                state.containers.add((pod.uid, container.name))
                for thread in container.threads:
                    state.counters[(pod.uid, container.name, thread.tid)] = thread
        self._nodes[snapshot.node] = state
        if previous is None:
            return []

        seconds = snapshot.timestamp_seconds - previous.timestamp_seconds
        if seconds <= 0:
            log.warning(
                "snapshot is not newer than the previous one, skipped",
                extra={"node": snapshot.node, "ts": snapshot.timestamp_seconds},
            )
            self._nodes[snapshot.node] = previous
            return []
        if seconds > self._max_gap_seconds:
            log.info(
                "gap between snapshots too long, baseline reset",
                extra={"node": snapshot.node, "gap_seconds": round(seconds, 1)},
            )
            return []

        intervals: list[ContainerInterval] = []
        for pod in snapshot.pods:
            for container in pod.containers:
                if (pod.uid, container.name) not in previous.containers:
                    continue
                deltas: list[ThreadDelta] = []
                for thread in container.threads:
                    before = previous.counters.get((pod.uid, container.name, thread.tid))
                    delta = _delta(before, thread, seconds)
                    if delta is not None:
                        deltas.append(delta)
                intervals.append(
                    ContainerInterval(
                        namespace=pod.namespace,
                        pod=pod.name,
                        pod_uid=pod.uid,
                        container=container.name,
                        node=snapshot.node,
                        end_seconds=snapshot.timestamp_seconds,
                        seconds=seconds,
                        threads_present=len(container.threads),
                        deltas=tuple(deltas),
                    )
                )
        return intervals
