"""Per-thread telemetry of every container thread, found through cgroup membership.

One pass per interval:

1. Read the thread list (``tasks`` on cgroup v1, ``cgroup.threads`` on v2) of each pod's
   container cgroups. With BPF this happens only when the kernel reported a fork or an exit
   of a tracked thread or a move into a cgroup since the last pass, or when the pod's
   periodic listing is due.
2. A thread seen for the first time gets a record (kept until the thread leaves, so records
   are not re-created each pass) with its procfs values as a baseline, and a slot in the BPF
   maps when BPF is loaded.
3. Without BPF, counters are read each pass from ``/proc/<tgid>/task/<tid>/schedstat``
   through a descriptor kept open. ``stat`` and ``status`` are re-read only when the thread ran
   since the previous pass (its timeslice count moved), because otherwise its context switches
   and last CPU cannot have changed. With BPF, the kernel keeps the counters in the thread's
   slot and the pass only copies the pods' delay histograms. Per-thread counters are read
   from the mmap-ed slots when a snapshot or a scrape requests them
   (:meth:`ThreadSampler.refresh`) and when a thread leaves.

CPU time is the kernel's ``sum_exec_runtime`` (schedstat field 1, nanoseconds), which is what
utime+stime approximate in clock ticks. Run-queue delay and timeslices are schedstat fields 2
and 3. Counters of a pod or tier stay monotonic: when a thread leaves, its last values move to
the pod's (and then the tier's) retired totals.
"""

import errno
import logging
import os
import resource
from collections.abc import Iterable
from pathlib import Path

from agent.cgroups import CgroupLayout
from agent.observe.bpfprobe import BpfProbe
from agent.observe.histogram import DELAY_SLOTS, quantile_us
from agent.observe.targets import PodTarget, tasks_file
from temper.tiers import Tier

log = logging.getLogger(__name__)

# Positions in a counter vector.
CPU_NS, RUN_DELAY_NS, TIMESLICES, VOLUNTARY, INVOLUNTARY = range(5)
COUNTER_FIELDS = 5
NO_CPU = -1
# Passes between two listings of a pod cgroup's container directories; a change of the pod
# object (a container started) triggers one at once.
RESCAN_PASSES = 10
EMPTY_HIST = (0,) * (DELAY_SLOTS + 2)


class ThreadRecord:
    """One tracked thread; mutated in place each pass."""

    __slots__ = (
        "base",
        "comm",
        "container",
        "counters",
        "fds",
        "last_cpu",
        "pod",
        "running",
        "seen",
        "slot",
        "tgid",
        "tid",
    )

    def __init__(self, tid: int, tgid: int, comm: str, pod: "PodState", container: str) -> None:
        self.tid = tid
        self.tgid = tgid
        self.comm = comm
        self.pod = pod
        self.container = container
        self.slot = -1
        self.fds: tuple[int, int, int] | None = None
        self.base = [0] * COUNTER_FIELDS
        self.counters = [0] * COUNTER_FIELDS
        self.last_cpu = NO_CPU
        self.running = False
        self.seen = 0


class PodState:
    """A pod being observed: its target, BPF group, retired counters and delay histogram."""

    def __init__(self, target: PodTarget, group: int) -> None:
        self.target = target
        self.group = group
        self.threads: dict[int, ThreadRecord] = {}
        self.retired = [0] * COUNTER_FIELDS
        self.totals = [0] * COUNTER_FIELDS
        # The BPF delay histogram (DELAY_SLOTS counts, sum_ns, count) at the last pass and at
        # the pass before, so that the last interval is their difference.
        self.hist_now: tuple[int, ...] = EMPTY_HIST
        self.hist_before: tuple[int, ...] = EMPTY_HIST
        self.runq_delay_p99_us: int | None = None
        self.seen = 0
        # (container key, path of its thread list), rescanned every RESCAN_PASSES passes.
        self.cgroups: list[tuple[str, str]] = []
        self.scanned_at = -RESCAN_PASSES


def _read_ints(path: str) -> list[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
    except OSError:
        return []
    finally:
        os.close(fd)
    return [int(tid) for tid in b"".join(chunks).split()]


def _parse_stat(data: bytes) -> tuple[str, bool, int]:
    """(comm, running, last CPU) from a ``stat`` line."""
    close = data.rfind(b")")
    comm = data[data.find(b"(") + 1 : close].decode(errors="replace")
    fields = data[close + 2 :].split()
    return comm, fields[0] == b"R", int(fields[36])


def _parse_switches(data: bytes) -> tuple[int, int]:
    """(voluntary, involuntary) context switches from a ``status`` file."""
    involuntary_at = data.rfind(b"nonvoluntary_ctxt_switches:")
    voluntary_at = data.rfind(b"\nvoluntary_ctxt_switches:", 0, involuntary_at)
    voluntary = int(data[voluntary_at + 25 : data.find(b"\n", voluntary_at + 1)])
    involuntary = int(data[involuntary_at + 27 : data.find(b"\n", involuntary_at)])
    return voluntary, involuntary


def _parse_tgid(data: bytes) -> int:
    start = data.find(b"\nTgid:") + 6
    return int(data[start : data.find(b"\n", start)])


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (procfs mode keeps 3 files per thread)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class ThreadSampler:
    """Scans the pod cgroups and keeps per-thread, per-pod and per-tier counters."""

    def __init__(
        self,
        layout: CgroupLayout,
        probe: BpfProbe | None,
        max_threads: int,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.layout = layout
        self.probe = probe
        self.max_threads = max_threads
        self.proc_root = proc_root
        self.tasks_file = tasks_file(layout)
        self.pods: dict[str, PodState] = {}
        self.records: dict[int, ThreadRecord] = {}
        self.generation = 0
        self.tier_retired = {tier: [0] * COUNTER_FIELDS for tier in Tier}
        self.tier_totals = {tier: [0] * COUNTER_FIELDS for tier in Tier}
        self.tier_hist_retired = {tier: [0] * (DELAY_SLOTS + 2) for tier in Tier}
        self.tier_hist = {tier: [0] * DELAY_SLOTS for tier in Tier}
        self.tier_hist_sum_ns = dict.fromkeys(Tier, 0)
        self.tier_runq_delay_p99_us: dict[Tier, int | None] = dict.fromkeys(Tier)
        # Threads of the last full scan left out because max_threads was reached.
        self.untracked_threads = 0
        self._membership_changes = -1
        self._free_slots = list(range(probe.config.max_threads - 1, -1, -1)) if probe else []
        self._free_groups = list(range(probe.config.max_groups - 1, -1, -1)) if probe else []
        self._fd_budget = raise_open_file_limit() - 512 if probe is None else 0

    # -- one pass -------------------------------------------------------------------------

    def sample(self, targets: Iterable[PodTarget]) -> None:
        """Refresh membership; without BPF also the per-thread counters; fold histograms."""
        self.generation += 1
        generation = self.generation
        # With BPF, thread lists are read again only after the kernel reported a fork or an
        # exit of a tracked thread or a move into a cgroup, and when a pod's listing is due.
        changed = True
        if self.probe is not None:
            changes = self.probe.membership_changes()
            changed = changes != self._membership_changes
            self._membership_changes = changes
        if changed:
            self.untracked_threads = 0
        for target in targets:
            pod = self._pod_state(target)
            pod.seen = generation
            if changed or not pod.cgroups or generation - pod.scanned_at >= RESCAN_PASSES:
                self._scan_pod(pod, generation)
        for uid in [uid for uid, pod in self.pods.items() if pod.seen != generation]:
            self._drop_pod(self.pods.pop(uid))
        if self.probe is None:
            for record in self.records.values():
                self._refresh_thread_procfs(record)
        else:
            for pod in self.pods.values():
                if pod.group >= 0:
                    pod.hist_before = pod.hist_now
                    pod.hist_now = self.probe.read_hist(pod.group)

    def refresh(self) -> None:
        """Bring per-thread counters (from BPF slots), pod and tier totals and p99s up to date."""
        if self.probe is not None:
            for record in self.records.values():
                if record.slot >= 0:
                    self._refresh_thread_bpf(record, self.probe)
            self._fold_histograms()
        self._aggregate()

    def _pod_state(self, target: PodTarget) -> PodState:
        pod = self.pods.get(target.uid)
        if pod is None:
            group = -1
            if self.probe is not None and self._free_groups:
                group = self._free_groups.pop()
                self.probe.reset_group(group)
            pod = PodState(target, group)
            self.pods[target.uid] = pod
        elif pod.target != target:
            pod.target = target
            pod.scanned_at = -RESCAN_PASSES
        return pod

    def _list_cgroups(self, pod: PodState) -> None:
        directory = str(pod.target.directory)
        pod_tasks = f"{directory}/{self.tasks_file}"
        # The kubelet puts no thread in the pod cgroup itself: it is read each pass only when
        # it had threads at the last listing.
        cgroups = [("", pod_tasks)] if _read_ints(pod_tasks) else []
        try:
            with os.scandir(directory) as entries:
                cgroups += [
                    (entry.name, f"{entry.path}/{self.tasks_file}")
                    for entry in entries
                    if entry.is_dir(follow_symlinks=False)
                ]
        except OSError:
            cgroups = []  # the pod's cgroup is not there (yet, or any more)
        pod.cgroups = cgroups
        pod.scanned_at = self.generation

    def _scan_pod(self, pod: PodState, generation: int) -> None:
        if not pod.cgroups or generation - pod.scanned_at >= RESCAN_PASSES:
            self._list_cgroups(pod)
        records = self.records
        for container, tasks in pod.cgroups:
            for tid in _read_ints(tasks):
                record = records.get(tid)
                if record is not None and (record.pod is not pod or record.container != container):
                    self._drop_thread(records.pop(tid))
                    record = None
                if record is None:
                    record = self._new_thread(tid, pod, container)
                    if record is None:
                        continue
                record.seen = generation
        for tid in [tid for tid, record in pod.threads.items() if record.seen != generation]:
            self._drop_thread(self.records.pop(tid))

    # -- thread life cycle ----------------------------------------------------------------

    def _new_thread(self, tid: int, pod: PodState, container: str) -> ThreadRecord | None:
        if len(self.records) >= self.max_threads:
            self.untracked_threads += 1
            return None
        try:
            status = (self.proc_root / str(tid) / "status").read_bytes()
            tgid = _parse_tgid(status)
            task = self.proc_root / str(tgid) / "task" / str(tid)
            schedstat = (task / "schedstat").read_bytes().split()
            comm, running, last_cpu = _parse_stat((task / "stat").read_bytes())
        except (OSError, ValueError, IndexError):
            return None  # the thread exited while we looked

        record = ThreadRecord(tid, tgid, comm, pod, container)
        voluntary, involuntary = _parse_switches(status)
        record.base = [int(schedstat[0]), int(schedstat[1]), int(schedstat[2]), voluntary,
                       involuntary]  # fmt: skip
        record.counters = list(record.base)
        record.running = running
        record.last_cpu = last_cpu

        tier_code = pod.target.tier.rank + 1
        if self.probe is not None and self._free_slots and pod.group >= 0:
            slot = self._free_slots.pop()
            if self.probe.track(tid, slot, pod.group, tier_code):
                record.slot = slot
            else:
                self._free_slots.append(slot)
        if record.slot < 0:
            self._open_files(record, task)
        self.records[tid] = record
        pod.threads[tid] = record
        return record

    def _open_files(self, record: ThreadRecord, task: Path) -> None:
        if self._fd_budget < 3:
            return
        opened: list[int] = []
        try:
            for name in ("schedstat", "stat", "status"):
                opened.append(os.open(task / name, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as error:
            for fd in opened:
                os.close(fd)
            if error.errno == errno.EMFILE:
                self._fd_budget = 0
            return
        record.fds = (opened[0], opened[1], opened[2])
        self._fd_budget -= 3

    def _drop_thread(self, record: ThreadRecord) -> None:
        if record.slot >= 0 and self.probe is not None:
            self._refresh_thread_bpf(record, self.probe)  # its final values
        pod = record.pod
        pod.threads.pop(record.tid, None)
        retired = pod.retired
        for index, value in enumerate(record.counters):
            retired[index] += value
        if record.slot >= 0 and self.probe is not None:
            self.probe.untrack(record.tid)
            self._free_slots.append(record.slot)
            record.slot = -1
        if record.fds is not None:
            for fd in record.fds:
                os.close(fd)
            self._fd_budget += 3
            record.fds = None

    def _drop_pod(self, pod: PodState) -> None:
        for record in list(pod.threads.values()):
            self.records.pop(record.tid, None)
            self._drop_thread(record)
        retired = self.tier_retired[pod.target.tier]
        for index, value in enumerate(pod.retired):
            retired[index] += value
        hist_retired = self.tier_hist_retired[pod.target.tier]
        for index, value in enumerate(pod.hist_now):
            hist_retired[index] += value
        if pod.group >= 0:
            self._free_groups.append(pod.group)

    # -- counters -------------------------------------------------------------------------

    @staticmethod
    def _refresh_thread_bpf(record: ThreadRecord, probe: BpfProbe) -> None:
        runtime, delay, slices, voluntary, involuntary, _, last_in, last_cpu, *_ = (
            probe.read_thread(record.slot)
        )
        base = record.base
        counters = record.counters
        counters[CPU_NS] = base[CPU_NS] + runtime
        counters[RUN_DELAY_NS] = base[RUN_DELAY_NS] + delay
        counters[TIMESLICES] = base[TIMESLICES] + slices
        counters[VOLUNTARY] = base[VOLUNTARY] + voluntary
        counters[INVOLUNTARY] = base[INVOLUNTARY] + involuntary
        if slices:
            record.last_cpu = last_cpu
            record.running = last_in != 0

    def _refresh_thread_procfs(self, record: ThreadRecord) -> None:
        counters = record.counters
        try:
            if record.fds is None:
                task = self.proc_root / str(record.tgid) / "task" / str(record.tid)
                schedstat = (task / "schedstat").read_bytes().split()
            else:
                schedstat = os.pread(record.fds[0], 128, 0).split()
            slices = int(schedstat[2])
            counters[CPU_NS] = int(schedstat[0])
            counters[RUN_DELAY_NS] = int(schedstat[1])
            if slices == counters[TIMESLICES]:
                return  # it did not run: switches and last CPU are unchanged
            counters[TIMESLICES] = slices
            if record.fds is None:
                stat = (task / "stat").read_bytes()
                status = (task / "status").read_bytes()
            else:
                stat = os.pread(record.fds[1], 1024, 0)
                status = os.pread(record.fds[2], 4096, 0)
            record.comm, record.running, record.last_cpu = _parse_stat(stat)
            counters[VOLUNTARY], counters[INVOLUNTARY] = _parse_switches(status)
        except (OSError, ValueError, IndexError):
            record.running = False  # exited; the next scan drops it

    def _aggregate(self) -> None:
        for tier in Tier:
            self.tier_totals[tier] = list(self.tier_retired[tier])
        for pod in self.pods.values():
            totals = list(pod.retired)
            for record in pod.threads.values():
                for index, value in enumerate(record.counters):
                    totals[index] += value
            pod.totals = totals
            tier_totals = self.tier_totals[pod.target.tier]
            for index, value in enumerate(totals):
                tier_totals[index] += value

    def _fold_histograms(self) -> None:
        interval_by_tier = {tier: [0] * DELAY_SLOTS for tier in Tier}
        cumulative_by_tier = {tier: list(self.tier_hist_retired[tier]) for tier in Tier}
        for pod in self.pods.values():
            now, before = pod.hist_now, pod.hist_before
            cumulative = cumulative_by_tier[pod.target.tier]
            for index, value in enumerate(now):
                cumulative[index] += value
            if now[-1] == before[-1]:
                pod.runq_delay_p99_us = None  # no wake-up of its threads ended in the interval
                continue
            interval = [
                after - prior for after, prior in zip(now[:DELAY_SLOTS], before, strict=False)
            ]
            pod.runq_delay_p99_us = quantile_us(interval, 0.99)
            tier_interval = interval_by_tier[pod.target.tier]
            for slot, count in enumerate(interval):
                tier_interval[slot] += count
        for tier in Tier:
            self.tier_runq_delay_p99_us[tier] = quantile_us(interval_by_tier[tier], 0.99)
            self.tier_hist[tier] = cumulative_by_tier[tier][:DELAY_SLOTS]
            self.tier_hist_sum_ns[tier] = cumulative_by_tier[tier][DELAY_SLOTS]

    def close(self) -> None:
        """Release every thread's slot and descriptors."""
        for record in self.records.values():
            self._drop_thread(record)
        self.records.clear()
        self.pods.clear()
