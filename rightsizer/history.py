"""Per-thread history of one container as dense arrays, the input of every analysis."""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ContainerKey:
    """Which container a history belongs to."""

    namespace: str
    pod: str
    pod_uid: str
    container: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """One thread: ids, its name and its name group (see :mod:`rightsizer.grouping`)."""

    tgid: int
    tid: int
    comm: str
    group: str


@dataclass(frozen=True)
class ContainerHistory:
    """N intervals by T threads of one container.

    ``end_seconds`` and ``seconds`` have shape (N,); every counter array has shape (N, T).
    CPU time and run-queue delay are seconds within the interval; a thread absent in an
    interval has zeros there.
    """

    key: ContainerKey
    end_seconds: FloatArray
    seconds: FloatArray
    threads: tuple[ThreadInfo, ...]
    cpu_seconds: FloatArray
    runq_delay_seconds: FloatArray
    timeslices: FloatArray
    voluntary_switches: FloatArray
    nonvoluntary_switches: FloatArray

    @property
    def intervals(self) -> int:
        """Number of intervals N."""
        return int(self.end_seconds.shape[0])

    @cached_property
    def usage(self) -> FloatArray:
        """CPU use of each thread in each interval, in cores (at most 1 per thread)."""
        return np.minimum(1.0, self.cpu_seconds / self.seconds[:, None])

    @cached_property
    def wait(self) -> FloatArray:
        """Run-queue delay of each thread in each interval, as a share of wall time."""
        return self.runq_delay_seconds / self.seconds[:, None]

    @cached_property
    def demand(self) -> FloatArray:
        """Time each thread wanted a CPU (ran or waited), in cores, capped at 1 per thread."""
        return np.minimum(1.0, self.usage + self.wait)

    @property
    def observed_seconds(self) -> float:
        """Seconds of wall time the intervals cover."""
        return float(self.seconds.sum())

    def between(self, start_seconds: float, end_seconds: float) -> "ContainerHistory":
        """Return the intervals ending in (start, end] as views, without copying."""
        first = int(np.searchsorted(self.end_seconds, start_seconds, side="right"))
        last = int(np.searchsorted(self.end_seconds, end_seconds, side="right"))
        rows = slice(first, last)
        window = ContainerHistory(
            key=self.key,
            end_seconds=self.end_seconds[rows],
            seconds=self.seconds[rows],
            threads=self.threads,
            cpu_seconds=self.cpu_seconds[rows],
            runq_delay_seconds=self.runq_delay_seconds[rows],
            timeslices=self.timeslices[rows],
            voluntary_switches=self.voluntary_switches[rows],
            nonvoluntary_switches=self.nonvoluntary_switches[rows],
        )
        # Rates are per interval, so a window can reuse the ones already computed.
        for name in ("usage", "wait", "demand"):
            if name in self.__dict__:
                window.__dict__[name] = self.__dict__[name][rows]
        return window
