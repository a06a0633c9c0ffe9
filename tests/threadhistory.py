"""Build small per-thread histories by hand for the rightsizer's unit tests."""

from dataclasses import dataclass

import numpy as np

from rightsizer.history import ContainerHistory, ContainerKey, ThreadInfo
from rightsizer.names import name_group

KEY = ContainerKey("shop", "web-1", "uid-web-1", "app")


@dataclass
class Thread:
    """One thread: CPU use and run-queue wait per interval in cores, and its switching.

    ``slice_ms`` is CPU time per timeslice; every timeslice ends in a voluntary switch
    when ``voluntary`` is true, otherwise in a preemption.
    """

    comm: str
    usage: list[float] | float
    wait: list[float] | float = 0.0
    slice_ms: float = 4.0
    voluntary: bool = True


def history(threads: list[Thread], intervals: int = 60, seconds: float = 10.0) -> ContainerHistory:
    """Return ``intervals`` intervals of ``seconds`` each, the last ending at N x seconds."""

    def column(value: list[float] | float) -> np.ndarray:
        array = np.broadcast_to(np.asarray(value, dtype=float), (intervals,))
        return array.astype(float)

    usage = np.stack([column(t.usage) for t in threads], axis=1)
    wait = np.stack([column(t.wait) for t in threads], axis=1)
    cpu = usage * seconds
    slices = np.ceil(cpu / (np.array([t.slice_ms for t in threads]) / 1000))
    voluntary_mask = np.array([t.voluntary for t in threads], dtype=float)
    return ContainerHistory(
        key=KEY,
        end_seconds=(np.arange(intervals) + 1) * seconds,
        seconds=np.full(intervals, seconds),
        threads=tuple(
            ThreadInfo(tgid=100, tid=100 + i, comm=t.comm, group=name_group(t.comm))
            for i, t in enumerate(threads)
        ),
        cpu_seconds=cpu,
        runq_delay_seconds=wait * seconds,
        timeslices=slices,
        voluntary_switches=slices * voluntary_mask,
        nonvoluntary_switches=slices * (1 - voluntary_mask),
    )
