"""Training mode: watch a running process's threads and propose a profile for review.

The threads are read from procfs at a fixed interval for a set time. Each sample reads
``/proc/<pid>/task/<tid>/comm`` (the name) and ``stat`` (the start time, which tells a reused
thread id from the old thread). It also reads ``schedstat`` (time on CPU, time waiting on a
run queue, number of timeslices) and ``status`` (voluntary and involuntary context
switches). A thread seen only part of the time is measured over the part it was alive.

Threads are grouped by name with the trailing digits stripped (``ib_io_rd-1`` and
``ib_io_rd-12`` form the group ``ib_io_rd-``); the stripped name is the group's prefix, so it
matches every member. Digits inside a name stay (``C2 CompilerThre`` and ``C1 CompilerThre``
are different groups). Each group gets a proposal from its per-thread averages, checked in
this order (the thresholds are in :class:`Thresholds`):

1. ``exclusive``: the threads run at least 80 % of the time, near one full CPU each.
2. ``latency``: at least 20 timeslices per second, a mean slice of at most 1 ms, at least
   50 % voluntary context switches (the threads mostly block and wake rather than being
   preempted) and a mean run-queue delay of at least 20 us per slice (they wait for a CPU
   after waking).
3. ``yield``: the threads rarely run, under 1 % of a CPU and under 5 timeslices per second.
4. ``default`` otherwise.

The output is a profile file that passes the schema, with the numbers behind each proposal
as comments. It is a starting point for a person to review, not a verdict.
"""

import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agent.profiles.schema import (
    GLOB_CHARACTERS,
    MAX_NAME_LENGTH,
    ProfileError,
    Treatment,
    load_profile_text,
)
from temper.errors import TemperError

PROC = Path("/proc")
_TRAILING_DIGITS = re.compile(r"\d+$")


class TrainingError(TemperError):
    """The process or cgroup cannot be observed; the message names it and the cause."""


@dataclass(frozen=True)
class Thresholds:
    """Limits that turn a group's behaviour into a proposal; see the module docstring."""

    exclusive_min_cpu: float = 0.8
    latency_min_slices_per_second: float = 20.0
    latency_max_mean_slice_us: float = 1000.0
    latency_min_voluntary_ratio: float = 0.5
    latency_min_runq_delay_us: float = 20.0
    yield_max_cpu: float = 0.01
    yield_max_slices_per_second: float = 5.0


@dataclass(frozen=True)
class ThreadSample:
    """One reading of one thread's counters."""

    comm: str
    start_ticks: int
    run_ns: int
    wait_ns: int
    slices: int
    voluntary: int
    involuntary: int
    # CLOCK_BOOTTIME seconds when the sample was taken.
    sampled_at_s: float


@dataclass
class ThreadTrace:
    """First and last reading of one thread and when its observation window began."""

    first: ThreadSample
    last: ThreadSample
    # Start of the window: the observation start, or the thread's start if it came later.
    window_start_s: float
    # Counters at the window start (zero for threads started during the observation).
    baseline: ThreadSample


@dataclass
class GroupStats:
    """Per-thread averages of one thread group over the observation."""

    prefix: str
    comms: list[str] = field(default_factory=list)
    window_s: float = 0.0
    run_s: float = 0.0
    wait_s: float = 0.0
    slices: int = 0
    voluntary: int = 0
    involuntary: int = 0

    @property
    def threads(self) -> int:
        """Number of threads observed in the group."""
        return len(self.comms)

    @property
    def cpu(self) -> float:
        """Mean fraction of one CPU each thread used."""
        return self.run_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def slices_per_second(self) -> float:
        """Mean timeslices per second of each thread."""
        return self.slices / self.window_s if self.window_s > 0 else 0.0

    @property
    def mean_slice_us(self) -> float:
        """Mean length of a timeslice in microseconds."""
        return self.run_s * 1e6 / self.slices if self.slices else 0.0

    @property
    def runq_delay_us(self) -> float:
        """Mean run-queue delay per timeslice in microseconds."""
        return self.wait_s * 1e6 / self.slices if self.slices else 0.0

    @property
    def voluntary_ratio(self) -> float:
        """Share of context switches in which the threads blocked rather than were preempted."""
        switches = self.voluntary + self.involuntary
        return self.voluntary / switches if switches else 0.0


def boottime_seconds() -> float:
    """CLOCK_BOOTTIME, the clock of the start times in /proc/<pid>/stat."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def read_thread(pid: int, tid: int, proc: Path = PROC) -> ThreadSample | None:
    """Read one thread's counters; None when it has exited meanwhile."""
    task = proc / str(pid) / "task" / str(tid)
    try:
        sampled_at = boottime_seconds()
        comm = (task / "comm").read_text().rstrip("\n")
        stat = (task / "stat").read_text()
        schedstat = (task / "schedstat").read_text().split()
        status = (task / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name in stat is in parentheses and may contain spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    switches = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            switches[key] = int(value)
    return ThreadSample(
        comm=comm,
        start_ticks=int(fields[19]),
        run_ns=int(schedstat[0]),
        wait_ns=int(schedstat[1]),
        slices=int(schedstat[2]),
        voluntary=switches.get("voluntary_ctxt_switches", 0),
        involuntary=switches.get("nonvoluntary_ctxt_switches", 0),
        sampled_at_s=sampled_at,
    )


def cgroup_pids(directory: Path) -> list[int]:
    """Processes in the cgroup ``directory`` and its descendants (v1 or v2)."""
    pids: set[int] = set()
    for root, _, _ in os.walk(directory):
        try:
            text = (Path(root) / "cgroup.procs").read_text()
        except FileNotFoundError:
            continue
        pids.update(int(line) for line in text.split())
    return sorted(pids)


def _thread_ids(pid: int, proc: Path) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(proc / str(pid) / "task"))
    except (FileNotFoundError, ProcessLookupError):
        return []


def observe(
    pids: Callable[[], Sequence[int]],
    seconds: float,
    interval_seconds: float = 1.0,
    proc: Path = PROC,
) -> list[ThreadTrace]:
    """Sample every thread of the processes ``pids()`` returns, for ``seconds``."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    start = boottime_seconds()
    deadline = start + seconds
    traces: dict[tuple[int, int], ThreadTrace] = {}
    while True:
        for pid in pids():
            for tid in _thread_ids(pid, proc):
                sample = read_thread(pid, tid, proc)
                if sample is None:
                    continue
                key = (tid, sample.start_ticks)
                trace = traces.get(key)
                if trace is not None:
                    trace.last = sample
                    continue
                born = sample.start_ticks / ticks_per_second
                if born <= start:
                    traces[key] = ThreadTrace(sample, sample, sample.sampled_at_s, sample)
                else:
                    zero = ThreadSample(sample.comm, sample.start_ticks, 0, 0, 0, 0, 0, born)
                    traces[key] = ThreadTrace(sample, sample, born, zero)
        now = boottime_seconds()
        if now >= deadline:
            break
        time.sleep(min(interval_seconds, deadline - now))
    return list(traces.values())


def group_key(comm: str) -> str:
    """Strip the trailing digits of a thread name, which leaves its group prefix."""
    return _TRAILING_DIGITS.sub("", comm)


def group_threads(traces: Iterable[ThreadTrace]) -> tuple[list[GroupStats], list[str]]:
    """Groups by prefix, and the thread names that cannot form a prefix."""
    groups: dict[str, GroupStats] = {}
    unusable: set[str] = set()
    for trace in traces:
        comm = trace.last.comm
        prefix = group_key(comm)
        if not prefix or any(character in prefix for character in GLOB_CHARACTERS):
            unusable.add(comm)
            continue
        stats = groups.setdefault(prefix, GroupStats(prefix))
        stats.comms.append(comm)
        stats.window_s += max(trace.last.sampled_at_s - trace.window_start_s, 1e-3)
        stats.run_s += (trace.last.run_ns - trace.baseline.run_ns) / 1e9
        stats.wait_s += (trace.last.wait_ns - trace.baseline.wait_ns) / 1e9
        stats.slices += trace.last.slices - trace.baseline.slices
        stats.voluntary += trace.last.voluntary - trace.baseline.voluntary
        stats.involuntary += trace.last.involuntary - trace.baseline.involuntary
    # Longer prefixes first: no group then shadows a later one, which the schema requires.
    ordered = sorted(groups.values(), key=lambda g: (-len(g.prefix), g.prefix))
    return ordered, sorted(unusable)


def propose(stats: GroupStats, thresholds: Thresholds) -> Treatment:
    """Propose the treatment a group's behaviour suggests (see the module docstring)."""
    if stats.cpu >= thresholds.exclusive_min_cpu:
        return Treatment.EXCLUSIVE
    if (
        stats.slices_per_second >= thresholds.latency_min_slices_per_second
        and stats.mean_slice_us <= thresholds.latency_max_mean_slice_us
        and stats.voluntary_ratio >= thresholds.latency_min_voluntary_ratio
        and stats.runq_delay_us >= thresholds.latency_min_runq_delay_us
    ):
        return Treatment.LATENCY
    if (
        stats.cpu < thresholds.yield_max_cpu
        and stats.slices_per_second < thresholds.yield_max_slices_per_second
    ):
        return Treatment.YIELD
    return Treatment.DEFAULT


def _group_name(prefix: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", prefix.lower())[: MAX_NAME_LENGTH - 4].strip("-")
    base = base or "threads"
    name, counter = base, 2
    while name in used:
        name, counter = f"{base}-{counter}", counter + 1
    used.add(name)
    return name


def describe(stats: GroupStats) -> str:
    """Summarise the numbers behind a proposal in one line."""
    return (
        f"{stats.threads} thread(s), {stats.cpu:.1%} of a CPU each, "
        f"{stats.slices_per_second:.0f} slices/s, mean slice {stats.mean_slice_us:.0f} us, "
        f"{stats.voluntary_ratio:.0%} voluntary switches, run-queue delay "
        f"{stats.runq_delay_us:.0f} us per slice"
    )


@dataclass(frozen=True)
class Proposal:
    """The proposed profile text and the groups behind it."""

    text: str
    groups: list[tuple[str, GroupStats, Treatment]]
    unusable: list[str]


def render_profile(
    name: str,
    description: str,
    *,
    images: Sequence[str],
    groups: Sequence[GroupStats],
    unusable: Sequence[str],
    thresholds: Thresholds,
) -> Proposal:
    """Render the profile YAML with one comment line of numbers per group."""
    lines = [
        "# Proposed by `temper profile train`. Review every treatment before use: the",
        "# numbers above each group are per-thread averages over the observation.",
    ]
    if unusable:
        lines.append(f"# Threads left out (no usable name prefix): {', '.join(unusable)}")
    header = {"name": name, "description": description, "match": {"images": list(images)}}
    lines.append(yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip())
    lines.append("groups:")
    used: set[str] = set()
    chosen = []
    for stats in groups:
        treatment = propose(stats, thresholds)
        group_name = _group_name(stats.prefix, used)
        chosen.append((group_name, stats, treatment))
        entry = {"name": group_name, "threads": [stats.prefix], "treatment": treatment.value}
        body = yaml.safe_dump(
            [entry], sort_keys=False, allow_unicode=True, default_flow_style=None
        ).rstrip()
        lines.append(f"  # {describe(stats)}")
        lines.extend(f"  {line}" for line in body.splitlines())
    return Proposal("\n".join(lines) + "\n", chosen, list(unusable))


def train(
    pids: Callable[[], Sequence[int]],
    *,
    target: str,
    seconds: float,
    interval_seconds: float,
    name: str,
    images: Sequence[str] = (),
    thresholds: Thresholds | None = None,
) -> Proposal:
    """Observe the processes, group their threads and return a validated proposal."""
    if not pids():
        raise TrainingError(f"{target}: no process found; check the PID or the cgroup path")
    traces = observe(pids, seconds, interval_seconds)
    groups, unusable = group_threads(traces)
    if not groups:
        raise TrainingError(
            f"{target}: no thread with a usable name was seen in {seconds:g} s; observe longer "
            "or pick the process that runs the workload"
        )
    description = f"Proposed from {seconds:g} s of observing {target}"
    proposal = render_profile(
        name,
        description,
        images=images,
        groups=groups,
        unusable=unusable,
        thresholds=thresholds or Thresholds(),
    )
    try:
        load_profile_text(proposal.text, "proposal")
    except ProfileError as error:
        raise TrainingError(f"{target}: the proposed profile is invalid: {error}") from error
    return proposal
