"""The procfs source of the observation against real threads in real cgroup v1 ``cpu`` cgroups.

It checks what the sampler relies on: descriptors of ``/proc/<pid>/task/<tid>`` files kept open
return fresh values with ``pread``, and fail with ``ESRCH`` once the thread is gone. Then it
checks how the sampler uses them. Each thread keeps one descriptor set for its lifetime,
``stat`` and ``status`` are read on the thread's turn only, exited threads leave at the next
pass with their counters, and new threads are found at their pod's next listing. A test
checks that the layer check finds cgroups created or replaced between two counts although it
lists unchanged directories no more. The last ones check how the settings and the linter set
the sampler's periods and per-pass tiers.
"""

import errno
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.cgroups import CgroupLayout, CgroupVersion, pod_cgroup_relative_path
from agent.observe.layercheck import LayerCheck
from agent.observe.linter import PlacementLinter
from agent.observe.observer import Observer
from agent.observe.targets import PodTarget
from agent.observe.threads import CPU_NS, TIMESLICES, VOLUNTARY, ThreadSampler
from agent.podinfo import QosClass
from agent.settings import AgentSettings, CgroupDriver
from temper.tiers import Tier
from tests.cgrouphelpers import CPU_ROOT, cgroup_tree, is_root

needs_root = pytest.mark.skipif(not is_root(), reason="needs root for cgroups")

LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)

# Reads commands from stdin. "spawn S": start a thread that burns S seconds of CPU, then
# sleeps 1 ms at a time (a voluntary switch each time); print its tid. "stop TID": let that
# thread exit, join it, print "stopped". The main thread sleeps in the read meanwhile.
WORKER = """
import sys, threading, time
threads = {}
def spawn(burn):
    stop, ready, tids = threading.Event(), threading.Event(), []
    def run():
        tids.append(threading.get_native_id())
        end = time.thread_time() + burn
        while time.thread_time() < end:
            pass
        ready.set()
        while not stop.is_set():
            time.sleep(0.001)
    thread = threading.Thread(target=run)
    thread.start()
    ready.wait()
    threads[tids[0]] = (stop, thread)
    print(tids[0], flush=True)
for line in sys.stdin:
    command, _, argument = line.strip().partition(" ")
    if command == "spawn":
        spawn(float(argument))
    elif command == "stop":
        stop, thread = threads.pop(int(argument))
        stop.set()
        thread.join()
        print("stopped", flush=True)
"""


class Worker:
    """A process with threads started and stopped on command, in a container cgroup."""

    def __init__(self, cgroup: Path | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(self.process.pid))

    @property
    def pid(self) -> int:
        return self.process.pid

    def command(self, line: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def spawn(self, burn_seconds: float = 0.0) -> int:
        return int(self.command(f"spawn {burn_seconds}"))

    def stop(self, tid: int) -> None:
        assert self.command(f"stop {tid}") == "stopped"
        # join() returns a moment before the kernel has released the thread.
        wait_until(lambda: not Path(f"/proc/{self.pid}/task/{tid}").exists())

    def kill(self) -> None:
        """Kill the process and reap it."""
        self.process.kill()
        self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def wait_until(predicate: Callable[[], bool], timeout_seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pod() -> Iterator[tuple[PodTarget, Path]]:
    """A pod cgroup with one container cgroup, and the pod's observation target."""
    uid = str(uuid.uuid4())
    relative = pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS)
    container = uuid.uuid4().hex
    with cgroup_tree([f"{relative}/{container}"], {}) as (container_dir,):
        target = PodTarget(uid, "test", "worker", Tier.NORMAL, f"{relative}/", container_dir.parent)
        yield target, container_dir


@pytest.fixture
def worker(pod: tuple[PodTarget, Path]) -> Iterator[Worker]:
    started = Worker(pod[1])
    try:
        yield started
    finally:
        started.close()


@pytest.mark.root
@needs_root
def test_held_task_files_stay_fresh() -> None:
    worker = Worker(None)
    try:
        tid = worker.spawn()
        task = f"/proc/{worker.pid}/task/{tid}"
        fds = [os.open(f"{task}/{name}", os.O_RDONLY) for name in ("schedstat", "status")]
        try:
            slices_before = int(os.pread(fds[0], 128, 0).split()[2])
            status_before = os.pread(fds[1], 4096, 0)
            time.sleep(0.2)  # about 200 sleeps of 1 ms, each a switch
            slices_after = int(os.pread(fds[0], 128, 0).split()[2])
            status_after = os.pread(fds[1], 4096, 0)
            assert slices_after > slices_before
            assert b"voluntary_ctxt_switches" in status_after
            assert status_after != status_before

            worker.stop(tid)
            for fd in fds:
                with pytest.raises(ProcessLookupError) as raised:
                    os.pread(fd, 128, 0)
                assert raised.value.errno == errno.ESRCH
            with pytest.raises(FileNotFoundError):
                os.open(f"{task}/schedstat", os.O_RDONLY)
        finally:
            for fd in fds:
                os.close(fd)
    finally:
        worker.close()


@pytest.mark.root
@needs_root
def test_sampler_keeps_one_descriptor_set_per_thread(
    pod: tuple[PodTarget, Path], worker: Worker
) -> None:
    target, _ = pod
    tid = worker.spawn()
    sampler = ThreadSampler(LAYOUT, None, 64)
    try:
        sampler.sample([target])
        record = sampler.records[tid]
        assert record.fds is not None
        fds = record.fds
        descriptors = open_descriptors()
        slices = []
        for _ in range(3):
            time.sleep(0.05)
            sampler.sample([target])
            sampler.refresh()
            slices.append(sampler.records[tid].counters[TIMESLICES])
        assert sampler.records[tid] is record
        assert record.fds == fds  # the same descriptors, read again
        assert open_descriptors() == descriptors
        assert slices[0] < slices[1] < slices[2]
        assert set(sampler.records) == {worker.pid, tid}
    finally:
        sampler.close()
    assert open_descriptors() == descriptors - 6  # both threads' descriptors are closed


@pytest.mark.root
@needs_root
def test_details_read_on_thread_turn(pod: tuple[PodTarget, Path], worker: Worker) -> None:
    target, _ = pod
    tid = worker.spawn()
    sampler = ThreadSampler(LAYOUT, None, 64, detail_passes=3)
    try:
        sampler.sample([target])
        record = sampler.records[tid]
        previous_slices = record.counters[TIMESLICES]
        previous_voluntary = record.counters[VOLUNTARY]
        turns = 0
        for _ in range(6):
            time.sleep(0.05)  # about 50 switches
            sampler.sample([target])
            sampler.refresh()
            slices, voluntary = record.counters[TIMESLICES], record.counters[VOLUNTARY]
            assert slices > previous_slices  # schedstat: every pass
            if sampler.generation % 3 == record.phase:
                turns += 1
                assert voluntary > previous_voluntary  # status: on its turn
            else:
                assert voluntary == previous_voluntary
            previous_slices, previous_voluntary = slices, voluntary
        assert turns == 2
    finally:
        sampler.close()


@pytest.mark.root
@needs_root
def test_exited_threads_leave_next_pass(pod: tuple[PodTarget, Path], worker: Worker) -> None:
    target, _ = pod
    tid = worker.spawn(burn_seconds=0.2)
    # The thread lists are read at the first pass only: exits are noticed without them.
    sampler = ThreadSampler(LAYOUT, None, 64, listing_passes=9)
    try:
        sampler.sample([target])
        assert set(sampler.records) == {worker.pid, tid}
        sampler.sample([target])
        sampler.refresh()
        cpu_ns = sampler.pods[target.uid].totals[CPU_NS]
        assert cpu_ns >= 0.19e9
        descriptors = open_descriptors()

        worker.stop(tid)
        sampler.sample([target])
        sampler.refresh()
        assert set(sampler.records) == {worker.pid}
        assert sampler.exited_threads == 1
        assert open_descriptors() == descriptors - 3
        # Its CPU time stays in the pod's total.
        assert sampler.pods[target.uid].totals[CPU_NS] >= cpu_ns

        worker.kill()  # the whole process exits and is reaped
        sampler.sample([target])
        assert sampler.records == {}
        assert sampler.exited_threads == 2
        assert open_descriptors() == descriptors - 6
    finally:
        sampler.close()


@pytest.mark.root
@needs_root
def test_new_threads_are_found_at_their_pods_listing(
    pod: tuple[PodTarget, Path], worker: Worker
) -> None:
    target, _ = pod
    sampler = ThreadSampler(LAYOUT, None, 64, listing_passes=3)
    try:
        sampler.sample([target])  # pass 1 lists the new pod
        assert set(sampler.records) == {worker.pid}
        tid = worker.spawn()
        sampler.sample([target])  # pass 2: not the pod's turn
        assert tid not in sampler.records
        sampler.sample([target])  # pass 3: its turn
        assert set(sampler.records) == {worker.pid, tid}
    finally:
        sampler.close()


@pytest.mark.root
@needs_root
def test_held_thread_lists(pod: tuple[PodTarget, Path], worker: Worker) -> None:
    target, container_dir = pod
    before = open_descriptors()
    sampler = ThreadSampler(LAYOUT, None, 64, hold_lists=True)
    try:
        sampler.sample([target])
        assert set(sampler.records) == {worker.pid}
        list_fds = sampler.pods[target.uid].list_fds
        assert list(list_fds) == [f"{container_dir}/tasks"]
        fd = list_fds[f"{container_dir}/tasks"]
        tid = worker.spawn()
        # On cgroup v1 a descriptor read again within a second returns its previous list.
        time.sleep(1.2)
        sampler.sample([target])
        assert set(sampler.records) == {worker.pid, tid}
        assert sampler.pods[target.uid].list_fds == {f"{container_dir}/tasks": fd}
        assert open_descriptors() == before + 1 + 2 * 3  # the list, and three files a thread
    finally:
        sampler.close()
    assert open_descriptors() == before


def remove_cgroup(directory: Path) -> None:
    """Remove a cgroup directory once the killed processes in it have left."""
    if directory.exists():
        wait_until(lambda: not (directory / "tasks").read_text().split())
        directory.rmdir()


@pytest.mark.root
@needs_root
def test_layer_check_finds_new_cgroups(pod: tuple[PodTarget, Path]) -> None:
    target, container_dir = pod
    config: list[dict[str, Any]] = [
        {"name": "pods", "matches": [[{"CgroupPrefix": target.cgroup}]], "kind": {"Open": {}}},
        {"name": "normal", "matches": [[]], "kind": {"Open": {}}},
    ]
    check = LayerCheck(LAYOUT)
    layers = check.layers(config)

    def pod_threads() -> tuple[int, set[str]]:
        counts = check.count(1, layers, [target])
        return counts.settled["pods"] + counts.unsettled["pods"], set(counts.cgroups.values())

    def cgroup(directory: Path) -> str:
        return f"{directory.relative_to(CPU_ROOT)}/"

    workers = [Worker(container_dir)]
    nested = container_dir / "nested"
    replacement = container_dir.parent / uuid.uuid4().hex
    try:
        assert pod_threads() == (1, {cgroup(container_dir)})
        # Again, from the directories it listed before.
        assert pod_threads() == (1, {cgroup(container_dir)})

        # A cgroup below the container's, which had no subdirectory before.
        nested.mkdir()
        workers.append(Worker(nested))
        assert pod_threads() == (2, {cgroup(container_dir), cgroup(nested)})

        # The container's cgroup replaced by another: the pod directory keeps its link count.
        for started in workers:
            started.close()
        remove_cgroup(nested)
        remove_cgroup(container_dir)
        replacement.mkdir()
        workers = [Worker(replacement)]
        assert pod_threads() == (1, {cgroup(replacement)})
    finally:
        for started in workers:
            started.close()
        remove_cgroup(nested)
        remove_cgroup(replacement)
        container_dir.mkdir(exist_ok=True)  # the fixture removes it


def test_linter_asks_for_the_states_it_can_use() -> None:
    assert PlacementLinter({}, []).sampled_tiers() == frozenset()
    # smt_collision: critical against batch threads on SMT siblings.
    assert PlacementLinter({0: 1, 1: 0}, []).sampled_tiers() == {
        Tier.CRITICAL, Tier.LOW, Tier.BACKGROUND,
    }  # fmt: skip
    # protected_fallback: any thread but critical ones on a protected CPU.
    assert PlacementLinter({}, [1]).sampled_tiers() == {
        Tier.HIGH, Tier.NORMAL, Tier.LOW, Tier.BACKGROUND,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "version", "detail_passes", "listing_passes", "hold_lists"),
    [
        ({}, CgroupVersion.V1, 30, 2, True),
        ({"observe_interval_seconds": 0.5}, CgroupVersion.V1, 60, 4, True),
        (
            {
                "observe_interval_seconds": 5.0,
                "observe_procfs_detail_interval_seconds": 1.0,
                "observe_procfs_listing_interval_seconds": 0.5,
            },
            CgroupVersion.V1,
            1,
            1,
            True,
        ),
        # Lists read 1 s apart: cgroup v1 could serve the same list again, v2 does not.
        ({"observe_procfs_listing_interval_seconds": 1.0}, CgroupVersion.V1, 30, 1, False),
        ({"observe_procfs_listing_interval_seconds": 1.0}, CgroupVersion.V2, 30, 1, True),
    ],
)
def test_procfs_periods_come_from_the_settings(
    tmp_path: Path,
    settings: dict[str, Any],
    version: CgroupVersion,
    detail_passes: int,
    listing_passes: int,
    hold_lists: bool,
) -> None:
    sysfs = tmp_path / "sys"
    (sysfs / "devices/system/cpu").mkdir(parents=True)  # no CPU listed: no SMT siblings
    values: dict[str, Any] = {
        "node_name": "node-a",
        "sysfs_root": sysfs,
        "state_dir": tmp_path / "state",
        "observe_protected_cpus": "1",
        **settings,
    }
    layout = CgroupLayout(Path("/sys/fs/cgroup"), version, CgroupDriver.CGROUPFS)
    observer = Observer(AgentSettings(**values), layout, list)
    try:
        sampler = observer.sampler
        assert (sampler.detail_passes, sampler.listing_passes) == (detail_passes, listing_passes)
        assert sampler.hold_lists is hold_lists
        assert sampler.state_tiers == {Tier.HIGH, Tier.NORMAL, Tier.LOW, Tier.BACKGROUND}
    finally:
        observer.close()


def test_invalid_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="detail_passes is 0; it must be 1 or more"):
        ThreadSampler(LAYOUT, None, 64, detail_passes=0)
    values: dict[str, Any] = {"node_name": "node-a", "observe_procfs_listing_interval_seconds": 0}
    with pytest.raises(ValidationError, match="observe_procfs_listing_interval_seconds"):
        AgentSettings(**values)
