"""The layer_mismatch check: pod threads per layer against scx_layered's task counts.

The first tests use a FAKE cgroup tree and a FAKE /proc in a temporary directory, to step
through the rules deterministically. The last one runs real processes and threads in real
cgroups (cgroup v1 ``cpu`` hierarchy of this host, as root). It compares them with the
counts that the real scx_layered reported in the sched_ext VM for the same situations
(``tests/data/scx_layered-1.1.2-stats.json``). There a sleeper from before the attach was
counted in no layer, and an exited child that was not reaped yet still counted in its layer.
"""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.layers import compute_layer_plan
from agent.observe.layercheck import LayerCheck, LayerCheckError, compile_config
from agent.observe.linter import LinterCounts
from agent.observe.targets import PodTarget
from agent.podinfo import PodInfo, QosClass
from agent.settings import CgroupDriver
from agent.topology import Topology
from temper.tiers import Tier
from tests.cgrouphelpers import cgroup_tree, is_root, stop_all

NORMAL: dict[str, Any] = {"name": "normal", "matches": [[]], "kind": {"Open": {}}}


def prefix_layer(name: str, *prefixes: str) -> dict[str, Any]:
    matches = [[{"CgroupPrefix": prefix}] for prefix in prefixes]
    return {"name": name, "matches": matches, "kind": {"Open": {}}}


class FakeNode:
    """A FAKE cgroup v2 tree and a FAKE /proc: threads are files the test writes."""

    def __init__(self, root: Path) -> None:
        self.cgroups = root / "cgroup"
        self.proc = root / "proc"
        self.cgroups.mkdir(parents=True)
        (self.cgroups / "cgroup.controllers").write_text("cpu\n")
        self.layout = CgroupLayout(self.cgroups, CgroupVersion.V2, CgroupDriver.CGROUPFS)
        self.threads: dict[int, Path] = {}

    def pod(self, name: str) -> PodTarget:
        relative = f"kubepods/pod{name}"
        directory = self.cgroups / relative
        directory.mkdir(parents=True, exist_ok=True)
        return PodTarget(name, "ns", name, Tier.NORMAL, f"{relative}/", directory)

    def thread(self, pod: PodTarget, tid: int, comm: str, container: str = "c1") -> None:
        directory = pod.directory / container
        directory.mkdir(exist_ok=True)
        listing = directory / "cgroup.threads"
        existing = listing.read_text().split() if listing.exists() else []
        listing.write_text("\n".join([*existing, str(tid)]) + "\n")
        (self.proc / str(tid)).mkdir(parents=True)
        (self.proc / str(tid) / "comm").write_text(comm + "\n")
        self.threads[tid] = directory
        self.run(tid, 0)

    def run(self, tid: int, timeslices: int) -> None:
        (self.proc / str(tid) / "schedstat").write_text(f"1000 10 {timeslices}\n")

    def zombie(self, pid: int, cgroup: str, parent: int = 1) -> None:
        """An exited, unreaped process: procfs keeps its stat, name and (v2) cgroup."""
        (self.proc / str(pid)).mkdir(parents=True)
        (self.proc / str(pid) / "stat").write_text(f"{pid} (app) Z {parent} {pid} 0 0\n")
        (self.proc / str(pid) / "comm").write_text("app\n")
        (self.proc / str(pid) / "cgroup").write_text(f"0::/{cgroup.rstrip('/')}\n")

    def exit(self, tid: int) -> None:
        listing = self.threads.pop(tid) / "cgroup.threads"
        listing.write_text(
            "\n".join(t for t in listing.read_text().split() if t != str(tid)) + "\n"
        )
        for entry in (self.proc / str(tid)).iterdir():
            entry.unlink()
        (self.proc / str(tid)).rmdir()


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path)


def test_unsupported_matches_are_named() -> None:
    nice = {"name": "nice", "matches": [[{"NiceAbove": 0}]], "kind": {"Open": {}}}
    config: list[dict[str, Any]] = [nice, NORMAL]
    with pytest.raises(LayerCheckError, match=r"layer 'nice'.*NiceAbove"):
        compile_config(config)


def test_layers_without_cgroup_match_are_open() -> None:
    comm_only = {"name": "io", "matches": [[{"CommPrefix": "io_"}]], "kind": {"Open": {}}}
    layers = compile_config([prefix_layer("critical", "kubepods/poda/"), comm_only, NORMAL])
    assert [layer.pod_bound for layer in layers] == [True, False, False]


def test_settled_threads_bound_the_count(node: FakeNode) -> None:
    a, b = node.pod("a"), node.pod("b")
    config = [prefix_layer("critical", a.cgroup), NORMAL]
    for tid in (101, 102, 103):
        node.thread(a, tid, "app")
    node.thread(b, 201, "app")
    counts = LinterCounts()
    check = LayerCheck(node.layout, counts, proc_root=node.proc)
    layers = check.layers(config)

    # The first count of a scheduler is the baseline: nothing has run since it.
    baseline = check.count("scheduler-1", layers, [a, b])
    assert baseline.settled == {"critical": 0, "normal": 0}
    assert baseline.unsettled == {"critical": 3, "normal": 1}
    result = check.compare(layers, baseline, baseline, {"critical": 0, "normal": 9}, 1.0)
    assert result.layers["critical"].expected_min == 0
    assert result.layers["critical"].expected_max == 3
    assert result.mismatch == 0  # sleeping threads may not be in any layer yet

    # Two threads ran; a new thread started (it runs at once, so it has its layer).
    node.run(101, 5)
    node.run(201, 1)
    node.thread(a, 104, "app")
    counts_now = check.count("scheduler-1", layers, [a, b])
    assert counts_now.settled == {"critical": 2, "normal": 1}
    assert counts_now.unsettled == {"critical": 2, "normal": 0}
    assert check.compare(layers, counts_now, counts_now, {"critical": 2, "normal": 50}, 2.0)
    # One settled critical thread is missing from the critical layer.
    result = check.compare(layers, counts_now, counts_now, {"critical": 1, "normal": 50}, 3.0)
    assert result.layers["critical"].mismatch == 1
    # More tasks than the pods have: some task that is not a pod thread is in the layer.
    result = check.compare(layers, counts_now, counts_now, {"critical": 5, "normal": 50}, 4.0)
    assert result.layers["critical"].mismatch == 1
    # The catch-all contains every other task on the node: only a shortfall counts.
    result = check.compare(layers, counts_now, counts_now, {"critical": 4, "normal": 0}, 5.0)
    assert result.layers["normal"].expected_max is None
    assert result.layers["normal"].mismatch == 1
    assert counts.events["layer_mismatch"] == 3

    # A new scheduler instance starts a new baseline.
    again = check.count("scheduler-2", layers, [a, b])
    assert again.settled == {"critical": 0, "normal": 0}


def test_threads_changing_during_the_read_do_not_count(node: FakeNode) -> None:
    a = node.pod("a")
    config = [prefix_layer("critical", a.cgroup), NORMAL]
    node.thread(a, 101, "app")
    check = LayerCheck(node.layout, proc_root=node.proc)
    layers = check.layers(config)
    check.count(1, layers, [a])
    node.run(101, 1)
    before = check.count(1, layers, [a])
    node.thread(a, 102, "app")  # starts while scx_layered responds
    after = check.count(1, layers, [a])
    for reported in (1, 2):
        assert check.compare(layers, before, after, {"critical": reported, "normal": 1}, 1.0)
        assert check.result is not None and check.result.mismatch == 0
    node.exit(101)
    node.exit(102)
    after_exit = check.count(1, layers, [a])
    assert check.compare(layers, after, after_exit, {"critical": 0, "normal": 1}, 2.0).mismatch == 0


def test_zombies_in_pod_cgroups_raise_the_bound(node: FakeNode) -> None:
    a = node.pod("a")
    config = [prefix_layer("critical", a.cgroup), NORMAL]
    node.thread(a, 101, "app")
    check = LayerCheck(node.layout, proc_root=node.proc)
    layers = check.layers(config)
    check.count(1, layers, [a])
    node.run(101, 1)
    counts = check.count(1, layers, [a])
    reported = {"critical": 2, "normal": 30}
    assert check.compare(layers, counts, counts, reported, 1.0).mismatch == 1

    # An exited process of the pod, reparented outside it and not reaped yet: scx_layered
    # still counts it in the layer of its cgroup. A zombie of the host does not count.
    node.zombie(300, f"{a.cgroup}c1/")
    node.zombie(301, "system.slice/cron.service/")
    result = check.compare(layers, counts, counts, reported, 2.0)
    assert result.layers["critical"].expected_max == 2
    assert result.mismatch == 0


def test_first_matching_layer_wins_with_names_and_regexes(node: FakeNode) -> None:
    a, b = node.pod("a"), node.pod("b")
    regex = f"^{node.cgroups}/(kubepods/podb)(/.*)?$"
    config = [
        {
            "name": "profile",
            "matches": [
                [{"CgroupPrefix": a.cgroup}, {"CommPrefix": "io_"}, {"CommPrefixExclude": "io_x"}]
            ],
            "kind": {"Open": {}},
        },
        prefix_layer("critical", a.cgroup),
        {"name": "low", "matches": [[{"CgroupRegex": regex}]], "kind": {"Open": {}}},
        NORMAL,
    ]
    node.thread(a, 101, "io_read")
    node.thread(a, 102, "io_xfer")
    node.thread(a, 103, "main")
    node.thread(b, 201, "io_read", container="nested")
    check = LayerCheck(node.layout, proc_root=node.proc)
    counts = check.count(1, check.layers(config), [a, b])
    assert counts.unsettled == {"profile": 1, "critical": 2, "low": 1, "normal": 0}


def test_layers_that_differ_from_the_config_are_reported(node: FakeNode) -> None:
    a = node.pod("a")
    check = LayerCheck(node.layout, proc_root=node.proc)
    layers = check.layers([prefix_layer("critical", a.cgroup), NORMAL])
    counts = check.count(1, layers, [a])
    result = check.compare(layers, counts, counts, {"high": 1, "normal": 3}, 1.0)
    assert "reports the layers ['high', 'normal']" in result.detail
    assert result.layers == {}


# -- real processes in real cgroups -----------------------------------------------------------

THREADS = """
import ctypes, sys, threading, time
libc = ctypes.CDLL(None)
def loop(name):
    libc.prctl(15, name.encode(), 0, 0, 0)
    while True:
        time.sleep(0.01)
for name in sys.argv[1:]:
    threading.Thread(target=loop, args=(name,), daemon=True).start()
while True:
    time.sleep(0.01)
"""

LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)


def pod(tier: Tier, qos: QosClass) -> PodInfo:
    uid = str(uuid.uuid4())
    return PodInfo(
        key=f"test/{tier.value}",
        uid=uid,
        cgroup_uid=uid,
        tier=tier,
        temper_class=True,
        qos=qos,
        cpu_request_millicores=500,
        cpu_limit_millicores=None,
        phase="Running",
    )


def target(info: PodInfo) -> PodTarget:
    return PodTarget(
        info.uid,
        "test",
        info.tier.value,
        info.tier,
        LAYOUT.layered_prefix(info.cgroup_uid, info.qos),
        LAYOUT.pod_directory(info.cgroup_uid, info.qos),
    )


def start(directory: Path, *command: str) -> subprocess.Popen[bytes]:
    script = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
    return subprocess.Popen(["sh", "-c", script, "sh", str(directory), *command])


def task_count(directory: Path) -> int:
    return len((directory / "tasks").read_text().split())


@pytest.fixture
def pods() -> Iterator[tuple[dict[Tier, PodInfo], list[Path]]]:
    infos = {
        Tier.CRITICAL: pod(Tier.CRITICAL, QosClass.GUARANTEED),
        Tier.HIGH: pod(Tier.HIGH, QosClass.BURSTABLE),
        Tier.LOW: pod(Tier.LOW, QosClass.BEST_EFFORT),
        Tier.NORMAL: pod(Tier.NORMAL, QosClass.BURSTABLE),
    }
    relatives = []
    for info in infos.values():
        relative = str(
            LAYOUT.pod_directory(info.cgroup_uid, info.qos).relative_to("/sys/fs/cgroup/cpu")
        )
        relatives += [f"{relative}/c1", f"{relative}/c2"]
    with cgroup_tree(relatives, {}) as directories:
        yield infos, directories


def wait_until(predicate: "object", timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.root
@pytest.mark.skipif(not is_root(), reason="needs root for cgroups")
def test_real_threads_sleepers_and_zombies(
    pods: tuple[dict[Tier, PodInfo], list[Path]],
) -> None:
    infos, directories = pods
    by_tier = dict(zip(infos, zip(directories[::2], directories[1::2], strict=True), strict=True))
    high_prefix = LAYOUT.layered_prefix(infos[Tier.HIGH].cgroup_uid, infos[Tier.HIGH].qos)
    profile = {
        "name": "profile-latency",
        "matches": [[{"CgroupPrefix": high_prefix}, {"CommPrefix": "io_"}]],
        "kind": {"Grouped": {"util_range": [0.5, 0.8], "preempt": True}},
    }
    config = compute_layer_plan(
        list(infos.values()), LAYOUT, Topology(cpus=os.cpu_count() or 1), profile_layers=[profile]
    ).config
    assert [layer["name"] for layer in config] == [
        "profile-latency", "critical", "high", "low", "normal",
    ]  # fmt: skip
    processes = []
    try:
        # A sleeper from before the scheduler's attach, which it has counted in no layer.
        sleeper = start(by_tier[Tier.LOW][1], "sleep", "600")
        processes.append(sleeper)
        wait_until(lambda: Path(f"/proc/{sleeper.pid}/comm").read_text() == "sleep\n")
        check = LayerCheck(LAYOUT, LinterCounts())
        layers = check.layers(config)
        targets = [target(info) for info in infos.values()]
        check.count("attached", layers, targets)
        # Started after the baseline: 3 critical threads, 2 high + 1 io_ thread, 1 normal,
        # and in the low pod a process whose exited child it never reaps.
        processes.append(
            start(by_tier[Tier.CRITICAL][0], sys.executable, "-c", THREADS, "w1", "w2")
        )
        processes.append(start(by_tier[Tier.HIGH][0], sys.executable, "-c", THREADS, "io_0", "w"))
        processes.append(start(by_tier[Tier.NORMAL][0], sys.executable, "-c", THREADS))
        processes.append(start(by_tier[Tier.LOW][0], "sh", "-c", "sleep 0.1 & exec sleep 600"))
        wait_until(lambda: task_count(by_tier[Tier.CRITICAL][0]) == 3)
        wait_until(lambda: task_count(by_tier[Tier.HIGH][0]) == 3)
        zombie_parent = processes[-1].pid
        wait_until(
            lambda: (
                b"sleep 600"
                in Path(f"/proc/{zombie_parent}/cmdline").read_bytes().replace(b"\0", b" ")
            )
        )
        children = Path(f"/proc/{zombie_parent}/task/{zombie_parent}/children")
        wait_until(lambda: bool(children.read_text().split()))
        (child,) = children.read_text().split()
        wait_until(
            lambda: Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        )

        before = check.count("attached", layers, targets)
        after = check.count("attached", layers, targets)
        assert after.settled == {
            "profile-latency": 1, "critical": 3, "high": 2, "low": 1, "normal": 1,
        }  # fmt: skip
        assert after.unsettled["low"] == 1  # the sleeper from before the baseline

        # What scx_layered 1.1.2 reported in the VM for the same situation: the zombie
        # counted in low, the old sleeper in no layer, hundreds of other tasks in normal.
        reported = {"profile-latency": 1, "critical": 3, "high": 2, "low": 2, "normal": 300}
        result = check.compare(layers, before, after, reported, 1.0)
        assert result.mismatch == 0, result
        assert result.layers["low"].expected_max == 2  # both sleepers
        # Once the old sleeper has woken, low contains one more task than the cgroups list:
        # the zombie, which the check finds among the pod threads' children.
        reported["low"] = 3
        result = check.compare(layers, before, after, reported, 1.5)
        assert result.mismatch == 0, result
        assert result.layers["low"].expected_max == 3

        # A critical thread counted in another layer, and a task too many in low.
        reported |= {"critical": 2, "low": 4}
        result = check.compare(layers, before, after, reported, 2.0)
        assert result.layers["critical"].mismatch == 1
        assert result.layers["low"].mismatch == 1
        assert check.counts is not None and check.counts.events["layer_mismatch"] == 2
    finally:
        stop_all(processes)
