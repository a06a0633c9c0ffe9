"""Per-thread telemetry of every container thread, found through cgroup membership.

One pass per interval:

1. Read the thread list (``tasks`` on cgroup v1, ``cgroup.threads`` on v2) of each pod's
   container cgroups. With BPF this happens only when the kernel reported a fork or an exit
   of a tracked thread or a move into a cgroup since the last pass, or when the pod's
   periodic listing is due. Without BPF it happens once every ``listing_passes`` passes per
   pod, the pods taking turns. Threads that exit are still noticed at the next pass (step
   3). A pod whose lists read exactly as at its previous scan is not looked at further.
   Without BPF and with ``hold_lists``, the descriptors of the thread lists stay open and
   are read with ``pread``, which saves the path lookup, the open and the close. They are
   opened again at each listing of the pod's directories. On cgroup v1 a descriptor read
   again within a second returned the list of its previous read (measured on Linux 6.18).
   So the observer sets ``hold_lists`` there only when the reads are 2 s apart or more. A
   list read sooner after a relisting is then at most one listing late.
2. A thread seen for the first time gets a record (kept until the thread leaves, so records
   are not re-created each pass) with its procfs values as a baseline, and a slot in the BPF
   maps when BPF is loaded.
3. Without BPF, each pass reads one small file per thread, ``schedstat`` (CPU time, run-queue
   delay, timeslices), with ``pread`` on a descriptor kept open, and keeps its bytes. They
   are parsed when a snapshot or a scrape requests them and when the thread leaves.
   ``stat`` (name, state, last CPU) and ``status`` (context switches) are read again only
   for threads that ran since their last read (their ``schedstat`` changed), and only once
   every ``detail_passes`` passes, each thread in its own turn so that the reads spread over
   the passes. The threads of the tiers the placement linter samples get their ``stat`` each
   pass when they ran. A read that fails with ``ESRCH`` means that the thread has exited, so
   it leaves at once, with the values of its last read. With BPF, the kernel keeps the
   counters in the thread's slot and the pass only copies the pods' delay histograms.
   Per-thread counters are read from the mmap-ed slots when a snapshot or a scrape requests
   them (:meth:`ThreadSampler.refresh`) and when a thread leaves.

CPU time is the kernel's ``sum_exec_runtime`` (schedstat field 1, nanoseconds), which is what
utime+stime approximate in clock ticks. Run-queue delay and timeslices are schedstat fields 2
and 3. Counters of a pod or tier stay monotonic: when a thread leaves, its last values move to
the pod's (and then the tier's) retired totals.
"""

import errno
import logging
import operator
import os
import resource
from collections.abc import Iterable
from itertools import repeat
from pathlib import Path

from agent.cgroups import CgroupLayout
from agent.observe.bpfprobe import THREAD_ON_CPU, BpfProbe
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
# A schedstat line: three unsigned 64-bit numbers (at most 20 digits each), two spaces and a
# newline.
SCHEDSTAT_BYTES = 64


class ThreadRecord:
    """One tracked thread; mutated in place each pass."""

    __slots__ = (
        "base",
        "comm",
        "container",
        "counters",
        "fds",
        "index",
        "last_cpu",
        "parsed",
        "phase",
        "pod",
        "running",
        "schedstat",
        "seen",
        "slot",
        "stale",
        "state_each_pass",
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
        # schedstat, stat and status, opened once (procfs source).
        self.fds: tuple[int, int, int] | None = None
        self.base = [0] * COUNTER_FIELDS
        self.counters = [0] * COUNTER_FIELDS
        self.last_cpu = NO_CPU
        self.running = False
        self.seen = 0
        # procfs source: the last schedstat bytes read, and the bytes ``counters`` hold.
        self.schedstat = b""
        self.parsed = b""
        # procfs source: whether it ran since stat and status were last read, the pass
        # (modulo the detail period) at which they are read, and whether the linter needs
        # its stat at each pass in which it ran.
        self.stale = False
        self.phase = 0
        self.state_each_pass = False
        # procfs source: position in the sampler's arrays of held descriptors, or -1.
        self.index = -1


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
        # The bytes of each thread list at the last scan. Emptied when a thread of the pod
        # exited or could not be tracked, so that the next scan looks at every thread.
        self.listings: dict[str, bytes] = {}
        # Descriptors of the thread lists kept open (``hold_lists``), by path.
        self.list_fds: dict[str, int] = {}
        # procfs source: the pass (modulo the listing period) at which the lists are read.
        self.phase = 0
        # Threads of the last scan left out because max_threads was reached.
        self.untracked = 0


def _read_all(path: str) -> bytes:
    """Read a whole file; return ``b""`` when it cannot be read (the cgroup is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return _pread_all(fd)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _pread_all(fd: int) -> bytes:
    """Read a whole file from its start through a descriptor kept open."""
    chunks = [os.pread(fd, 65536, 0)]
    offset = len(chunks[0])
    while len(chunks[-1]) == 65536:
        chunks.append(os.pread(fd, 65536, offset))
        offset += len(chunks[-1])
    return b"".join(chunks)


def _parse_schedstat(data: bytes) -> tuple[int, int, int]:
    """(CPU ns, run-queue delay ns, timeslices) from a ``schedstat`` line."""
    cpu_ns, delay_ns, slices = data.split()[:3]
    return int(cpu_ns), int(delay_ns), int(slices)


def _parse_stat(data: bytes) -> tuple[str, bool, int]:
    """(comm, running, last CPU) from a ``stat`` line."""
    close = data.rfind(b")")
    comm = data[data.find(b"(") + 1 : close].decode(errors="replace")
    fields = data[close + 2 :].split(maxsplit=37)
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
    """Scans the pod cgroups and keeps per-thread, per-pod and per-tier counters.

    ``detail_passes``, ``state_tiers`` and ``listing_passes`` concern the procfs source only.
    ``stat`` and ``status`` of a thread that ran are read once every ``detail_passes`` passes.
    ``stat`` of a thread of a tier in ``state_tiers`` is read at each pass in which it ran.
    The thread lists of a pod are read once every ``listing_passes`` passes and at each
    listing of its directories. ``hold_lists`` keeps their descriptors open between reads
    (procfs source only; see the module's docstring for when that is safe on cgroup v1).
    """

    def __init__(
        self,
        layout: CgroupLayout,
        probe: BpfProbe | None,
        max_threads: int,
        proc_root: Path = Path("/proc"),
        *,
        detail_passes: int = 1,
        state_tiers: Iterable[Tier] = (),
        listing_passes: int = 1,
        hold_lists: bool = False,
    ) -> None:
        for name, value in (("detail_passes", detail_passes), ("listing_passes", listing_passes)):
            if value < 1:
                raise ValueError(f"{name} is {value}; it must be 1 or more")
        self.layout = layout
        self.probe = probe
        self.max_threads = max_threads
        self.proc_root = proc_root
        self.detail_passes = detail_passes
        self.listing_passes = listing_passes
        self.state_tiers = frozenset(state_tiers)
        self.hold_lists = hold_lists and probe is None
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
        # Threads of the pods' last scans left out because max_threads was reached.
        self.untracked_threads = 0
        # Threads that left because a read of their procfs files failed with ESRCH.
        self.exited_threads = 0
        self._membership_changes = -1
        self._next_phase = 0
        self._next_pod_phase = 0
        # procfs source, threads with held descriptors: the records in a fixed order and, in
        # the same order, their schedstat descriptors, last schedstat bytes and whether they
        # ran since stat and status were read. They are laid out again when a thread comes or
        # goes. A pass reads every schedstat with one map() over the descriptors, without a
        # Python-level loop over the threads.
        self._order: list[ThreadRecord] = []
        self._order_fds: list[int] = []
        self._last: list[bytes] = []
        self._stale = bytearray()
        # Positions in that order by phase, and of the threads whose stat is read each pass.
        self._phase_positions: list[list[int]] = [[] for _ in range(detail_passes)]
        self._state_positions: list[int] = []
        # Threads without held descriptors (out of descriptors), read by path.
        self._unheld: list[ThreadRecord] = []
        self._order_dirty = False
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
        procfs = self.probe is None
        for target in targets:
            pod = self._pod_state(target)
            pod.seen = generation
            due = (generation + pod.phase) % self.listing_passes == 0 if procfs else changed
            if due or not pod.cgroups or generation - pod.scanned_at >= RESCAN_PASSES:
                self._scan_pod(pod, generation)
        for uid in [uid for uid, pod in self.pods.items() if pod.seen != generation]:
            self._drop_pod(self.pods.pop(uid))
        self.untracked_threads = sum(pod.untracked for pod in self.pods.values())
        if self.probe is None:
            self._sample_procfs(generation)
        else:
            for pod in self.pods.values():
                if pod.group >= 0:
                    pod.hist_before = pod.hist_now
                    pod.hist_now = self.probe.read_hist(pod.group)

    def refresh(self) -> None:
        """Bring thread counters (BPF slots, last schedstat reads), totals and p99s up to date."""
        if self.probe is not None:
            for record in self.records.values():
                if record.slot >= 0:
                    self._refresh_thread_bpf(record, self.probe)
            self._fold_histograms()
        else:
            for record, data in zip(self._order, self._last, strict=True):
                record.schedstat = data
            for record in self.records.values():
                self._apply_schedstat(record)
        self._aggregate()

    def _pod_state(self, target: PodTarget) -> PodState:
        pod = self.pods.get(target.uid)
        if pod is None:
            group = -1
            if self.probe is not None and self._free_groups:
                group = self._free_groups.pop()
                self.probe.reset_group(group)
            pod = PodState(target, group)
            pod.phase = self._next_pod_phase
            self._next_pod_phase = (self._next_pod_phase + 1) % self.listing_passes
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
        cgroups = [("", pod_tasks)] if _read_all(pod_tasks).strip() else []
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
        self._close_lists(pod)  # reopened at the next read, which returns a fresh list

    def _read_list(self, pod: PodState, path: str) -> bytes:
        """Read a thread list, through a held descriptor with ``hold_lists``."""
        fd = pod.list_fds.get(path)
        if fd is None:
            if not self.hold_lists or self._fd_budget < 1:
                return _read_all(path)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return b""  # the cgroup is gone
            pod.list_fds[path] = fd
            self._fd_budget -= 1
        try:
            return _pread_all(fd)
        except OSError:
            # ENODEV: the cgroup was removed. It may come back under the same path.
            os.close(pod.list_fds.pop(path))
            self._fd_budget += 1
            return b""

    def _close_lists(self, pod: PodState) -> None:
        for fd in pod.list_fds.values():
            os.close(fd)
        self._fd_budget += len(pod.list_fds)
        pod.list_fds.clear()

    def _scan_pod(self, pod: PodState, generation: int) -> None:
        if not pod.cgroups or generation - pod.scanned_at >= RESCAN_PASSES:
            self._list_cgroups(pod)
        listings = {tasks: self._read_list(pod, tasks) for _, tasks in pod.cgroups}
        if listings == pod.listings:
            return  # the same threads in the same cgroups as at the last scan
        pod.listings = listings
        pod.untracked = 0
        records = self.records
        for container, tasks in pod.cgroups:
            for tid in map(int, listings[tasks].split()):
                record = records.get(tid)
                if record is not None and (record.pod is not pod or record.container != container):
                    self._drop_thread(records.pop(tid))
                    record = None
                if record is None:
                    record = self._new_thread(tid, pod, container)
                    if record is None:
                        pod.listings = {}  # not tracked: look at every thread next time
                        continue
                record.seen = generation
        for tid in [tid for tid, record in pod.threads.items() if record.seen != generation]:
            self._drop_thread(self.records.pop(tid))

    # -- thread life cycle ----------------------------------------------------------------

    def _new_thread(self, tid: int, pod: PodState, container: str) -> ThreadRecord | None:
        if len(self.records) >= self.max_threads:
            pod.untracked += 1
            return None
        try:
            status = (self.proc_root / str(tid) / "status").read_bytes()
            tgid = _parse_tgid(status)
            task = self.proc_root / str(tgid) / "task" / str(tid)
            schedstat = (task / "schedstat").read_bytes()
            cpu_ns, delay_ns, slices = _parse_schedstat(schedstat)
            comm, running, last_cpu = _parse_stat((task / "stat").read_bytes())
        except (OSError, ValueError, IndexError):
            return None  # the thread exited while we looked

        record = ThreadRecord(tid, tgid, comm, pod, container)
        voluntary, involuntary = _parse_switches(status)
        record.base = [cpu_ns, delay_ns, slices, voluntary, involuntary]
        record.counters = list(record.base)
        record.schedstat = record.parsed = schedstat
        record.running = running
        record.last_cpu = last_cpu
        record.phase = self._next_phase
        self._next_phase = (self._next_phase + 1) % self.detail_passes
        record.state_each_pass = pod.target.tier in self.state_tiers

        tier_code = pod.target.tier.rank + 1
        if self.probe is not None and self._free_slots and pod.group >= 0:
            slot = self._free_slots.pop()
            if self.probe.track(
                tid, slot, pod.group, tier_code, runtime_ns=cpu_ns, run_delay_ns=delay_ns
            ):
                record.slot = slot
            else:
                self._free_slots.append(slot)
        if record.slot < 0:
            self._open_files(record, task)
        self.records[tid] = record
        pod.threads[tid] = record
        self._order_dirty = True
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
        elif record.slot < 0:
            index = record.index
            if 0 <= index < len(self._order) and self._order[index] is record:
                record.schedstat = self._last[index]
            self._apply_schedstat(record)  # the values of its last read
            self._order_dirty = True
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

    def _drop_exited(self, record: ThreadRecord) -> None:
        """Retire a thread whose procfs reads failed with ESRCH or ENOENT: it has exited."""
        if self.records.get(record.tid) is record:
            del self.records[record.tid]
        self._drop_thread(record)
        # Its tid may come back in a list that otherwise reads the same.
        record.pod.listings = {}
        self.exited_threads += 1

    def _drop_pod(self, pod: PodState) -> None:
        self._close_lists(pod)
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
        runtime, delay, slices, voluntary, involuntary, *_, last_cpu, _, _, flags = (
            probe.read_thread(record.slot)
        )
        base = record.base
        counters = record.counters
        counters[CPU_NS] = base[CPU_NS] + runtime
        counters[RUN_DELAY_NS] = base[RUN_DELAY_NS] + delay
        counters[TIMESLICES] = base[TIMESLICES] + slices
        if voluntary or involuntary:
            # The task's own counts as of its last switch-out, which includes that switch.
            counters[VOLUNTARY] = voluntary
            counters[INVOLUNTARY] = involuntary
        if slices:
            record.last_cpu = last_cpu
            record.running = bool(flags & THREAD_ON_CPU)

    @staticmethod
    def _apply_schedstat(record: ThreadRecord) -> None:
        """Parse the last schedstat bytes read into the counters, once per change."""
        data = record.schedstat
        if data is record.parsed:
            return
        record.parsed = data
        try:
            cpu_ns, delay_ns, slices = _parse_schedstat(data)
        except (ValueError, IndexError):
            return  # not a schedstat line: keep the previous values
        counters = record.counters
        counters[CPU_NS] = cpu_ns
        counters[RUN_DELAY_NS] = delay_ns
        counters[TIMESLICES] = slices

    def _rebuild_order(self) -> None:
        """Lay out the arrays of held descriptors again after threads came or went."""
        for record, data, stale in zip(self._order, self._last, self._stale, strict=True):
            record.schedstat = data
            record.stale = bool(stale)
            record.index = -1
        order = [record for record in self.records.values() if record.fds is not None]
        self._order = order
        self._order_fds = [record.fds[0] for record in order if record.fds is not None]
        self._last = [record.schedstat for record in order]
        self._stale = bytearray(record.stale for record in order)
        buckets: list[list[int]] = [[] for _ in range(self.detail_passes)]
        for index, record in enumerate(order):
            record.index = index
            buckets[record.phase].append(index)
        self._phase_positions = buckets
        self._state_positions = [i for i, record in enumerate(order) if record.state_each_pass]
        self._unheld = [record for record in self.records.values() if record.fds is None]
        self._order_dirty = False

    def _sample_procfs(self, generation: int) -> None:
        """Read each thread's schedstat; stat and status of the threads whose turn it is."""
        if self._order_dirty:
            self._rebuild_order()
        order, last = self._order, self._last
        exited: list[ThreadRecord] = []

        # One schedstat read per thread. A read that fails stops map() only for that
        # thread: the next extend() goes on with the following descriptor.
        now: list[bytes] = []
        reads = map(os.pread, self._order_fds, repeat(SCHEDSTAT_BYTES), repeat(0))
        while True:
            try:
                now.extend(reads)
                break
            except OSError as error:
                index = len(now)
                now.append(last[index])
                self._read_failed(order[index], error, exited)
        ran = list(map(operator.ne, now, last))
        self._last = now
        stale = self._stale = bytearray(map(operator.or_, self._stale, ran))

        # stat and status of the threads whose turn it is, if they ran since their last read.
        # Then stat of the threads the linter samples, if they ran since the previous pass.
        due = generation % self.detail_passes
        for index in self._phase_positions[due]:
            if stale[index]:
                record = order[index]
                if self._read_details(record, record.fds, exited):
                    stale[index] = 0
        for index in self._state_positions:
            if ran[index] and order[index].phase != due:
                record = order[index]
                self._read_state(record, record.fds, exited)

        for record in self._unheld:
            if not self._sample_by_path(record, due):
                exited.append(record)

        for record in exited:
            if self.records.get(record.tid) is record:
                self._drop_exited(record)

    def _read_details(
        self, record: ThreadRecord, fds: tuple[int, int, int] | None, exited: list[ThreadRecord]
    ) -> bool:
        """Read stat and status through the held descriptors; False when that failed."""
        if fds is None:
            return False
        try:
            stat = os.pread(fds[1], 1024, 0)
            status = os.pread(fds[2], 4096, 0)
            record.comm, record.running, record.last_cpu = _parse_stat(stat)
            counters = record.counters
            counters[VOLUNTARY], counters[INVOLUNTARY] = _parse_switches(status)
        except OSError as error:
            self._read_failed(record, error, exited)
            return False
        except (ValueError, IndexError):
            log.debug("unexpected procfs content", extra={"tid": record.tid})
            return False
        return True

    def _read_state(
        self, record: ThreadRecord, fds: tuple[int, int, int] | None, exited: list[ThreadRecord]
    ) -> None:
        """Read stat (name, state, last CPU) through the held descriptor."""
        if fds is None:
            return
        try:
            record.comm, record.running, record.last_cpu = _parse_stat(os.pread(fds[1], 1024, 0))
        except OSError as error:
            self._read_failed(record, error, exited)
        except (ValueError, IndexError):
            log.debug("unexpected procfs content", extra={"tid": record.tid})

    @staticmethod
    def _read_failed(record: ThreadRecord, error: OSError, exited: list[ThreadRecord]) -> None:
        if error.errno in (errno.ESRCH, errno.ENOENT):
            exited.append(record)  # the thread has exited
        else:
            log.debug("cannot read thread", extra={"tid": record.tid, "error": str(error)})

    def _sample_by_path(self, record: ThreadRecord, due: int) -> bool:
        """Sample a thread without held descriptors by path; return False if it has exited."""
        task = f"{self.proc_root}/{record.tgid}/task/{record.tid}"
        try:
            data = (Path(task) / "schedstat").read_bytes()
            ran = data != record.schedstat
            if ran:
                record.schedstat = data
                record.stale = True
            due_now = record.stale and record.phase == due
            if due_now or (ran and record.state_each_pass):
                record.comm, record.running, record.last_cpu = _parse_stat(
                    (Path(task) / "stat").read_bytes()
                )
            if due_now:
                counters = record.counters
                counters[VOLUNTARY], counters[INVOLUNTARY] = _parse_switches(
                    (Path(task) / "status").read_bytes()
                )
                record.stale = False
        except OSError as error:
            return error.errno not in (errno.ESRCH, errno.ENOENT)
        except (ValueError, IndexError):
            log.debug("unexpected procfs content", extra={"tid": record.tid})
        return True

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
        """Release every thread's slot and descriptors, and the held thread lists."""
        for record in self.records.values():
            self._drop_thread(record)
        for pod in self.pods.values():
            self._close_lists(pod)
        self.records.clear()
        self.pods.clear()
