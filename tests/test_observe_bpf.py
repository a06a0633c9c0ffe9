"""Observation against real processes in real cgroup v1 ``cpu`` cgroups, with and without BPF."""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.cgroups import CgroupLayout, CgroupVersion, pod_cgroup_relative_path
from agent.observe.collector import ObserveCollector
from agent.observe.observer import Observer
from agent.podinfo import QosClass
from agent.settings import AgentSettings, CgroupDriver
from rightsizer.snapshot import parse_snapshot
from tests.cgrouphelpers import cgroup_tree, is_root, stop_all

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root for cgroups and BPF"),
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="pins processes to CPUs 0 and 1"),
]

OWN_HEADERS = Path(f"/lib/modules/{os.uname().release}/build").exists()
LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)

# Pinned to one CPU: wake every 2 ms and spin 0.1 ms, until killed.
PINNED_LATENCY_LOOP = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
while True:
    time.sleep(0.002)
    spin = time.perf_counter() + 0.0001
    while time.perf_counter() < spin:
        pass
"""
# Pinned to one CPU: spin 10 ms, sleep 0.5 ms (so that it is switched in again and again).
PINNED_HOG = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
while True:
    spin = time.perf_counter() + 0.01
    while time.perf_counter() < spin:
        pass
    time.sleep(0.0005)
"""


def pod_dict(uid: str, name: str, priority_class: str, container_id: str) -> dict[str, Any]:
    """A pod as the API server returns it (Burstable: a CPU request, no limits)."""
    return {
        "metadata": {"uid": uid, "namespace": "shop", "name": name, "resourceVersion": "1"},
        "spec": {
            "priorityClassName": priority_class,
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}],
        },
        "status": {
            "phase": "Running",
            "qosClass": "Burstable",
            "containerStatuses": [{"name": "app", "containerID": f"containerd://{container_id}"}],
        },
    }


def fake_sysfs(root: Path) -> Path:
    """A sysfs tree claiming CPUs 0 and 1 are SMT siblings of one core (fake topology)."""
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text("0-1\n")
    for cpu in (0, 1):
        topology = cpu_dir / f"cpu{cpu}/topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text("0-1\n")
    return root


def start_in(code: str, cgroup: Path, cpu: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code, str(cpu)])
    (cgroup / "cgroup.procs").write_text(str(process.pid))
    return process


class Scene:
    """A critical pod and a background pod, each with one container cgroup."""

    def __init__(self) -> None:
        self.critical_uid = str(uuid.uuid4())
        self.batch_uid = str(uuid.uuid4())
        self.critical_container = uuid.uuid4().hex
        self.batch_container = uuid.uuid4().hex
        self.pods = [
            pod_dict(self.critical_uid, "api", "temper-critical", self.critical_container),
            pod_dict(self.batch_uid, "crunch", "temper-background", self.batch_container),
        ]

    def relative_dirs(self) -> list[str]:
        return [
            pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS) + "/" + cid
            for uid, cid in (
                (self.critical_uid, self.critical_container),
                (self.batch_uid, self.batch_container),
            )
        ]


@pytest.fixture
def scene() -> Iterator[tuple[Scene, subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]]:
    """Critical latency loop on CPU 1; background hogs on CPUs 0 and 1."""
    scene = Scene()
    with cgroup_tree(scene.relative_dirs(), {}) as (critical_dir, batch_dir):
        latency = start_in(PINNED_LATENCY_LOOP, critical_dir, 1)
        hogs = [start_in(PINNED_HOG, batch_dir, cpu) for cpu in (0, 1)]
        try:
            yield scene, latency, hogs
        finally:
            stop_all([latency, *hogs])


def settings(tmp_path: Path, **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "node_name": "node-a",
        "sysfs_root": fake_sysfs(tmp_path / "sys"),
        "cgroup_driver": CgroupDriver.CGROUPFS,
        "state_dir": tmp_path / "state",
        "observe_protected_cpus": "1",
        "open_reserve_grace_seconds": 0.0,
    }
    values.update(overrides)
    return AgentSettings(**values)


def pod_entry(snapshot: dict[str, Any], uid: str) -> dict[str, Any]:
    (entry,) = [pod for pod in snapshot["pods"] if pod["uid"] == uid]
    return entry


async def observe(observer: Observer, seconds: float) -> dict[str, Any]:
    await observer.start()
    observer.sample()
    await asyncio.sleep(seconds)
    observer.sample()
    return observer.snapshot()


async def test_bpf_attributes_delay_and_placement(scene: Any, tmp_path: Path) -> None:
    world, latency, hogs = scene
    observer = Observer(settings(tmp_path), LAYOUT, lambda: world.pods)
    try:
        snapshot = await observe(observer, 2.0)
        # Stopped, the latency loop leaves its CPU for good: BPF and procfs must then agree.
        latency.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.2)
        stopped = observer.snapshot()
        schedstat = Path(f"/proc/{latency.pid}/schedstat")
        kernel_schedstat = (await asyncio.to_thread(schedstat.read_text)).split()
        status = Path(f"/proc/{latency.pid}/status")
        kernel_status = await asyncio.to_thread(status.read_text)
        latency.send_signal(signal.SIGCONT)
        registry = CollectorRegistry()
        registry.register(ObserveCollector(observer))
        exposition = generate_latest(registry).decode()
    finally:
        observer.close()

    assert snapshot["source"] == "bpf", snapshot["source_detail"]
    critical = pod_entry(snapshot, world.critical_uid)
    batch = pod_entry(snapshot, world.batch_uid)
    assert critical["tier"] == "critical"
    assert batch["tier"] == "background"
    assert critical["cgroup"] == f"kubepods/burstable/pod{world.critical_uid}/"
    (container,) = critical["containers"]
    assert container["name"] == "app"
    assert container["container_id"] == f"containerd://{world.critical_container}"
    assert [thread["tid"] for thread in container["threads"]] == [latency.pid]
    batch_tids = {t["tid"] for c in batch["containers"] for t in c["threads"]}
    assert batch_tids == {hog.pid for hog in hogs}

    # Delays: the latency loop waits behind the hog on CPU 1 and lands in its pod's histogram.
    (thread,) = container["threads"]
    assert thread["runq_delay_seconds_total"] > 0
    assert thread["timeslices_total"] > 100
    assert thread["voluntary_ctxt_switches_total"] > 100
    assert thread["last_cpu"] == 1
    # The program reads the task's own counters (at offsets taken from BTF), so once the thread
    # is off its CPU its totals equal the kernel's.
    (stopped_thread,) = pod_entry(stopped, world.critical_uid)["containers"][0]["threads"]
    assert stopped_thread["cpu_seconds_total"] * 1e9 == pytest.approx(int(kernel_schedstat[0]))
    assert stopped_thread["runq_delay_seconds_total"] * 1e9 == pytest.approx(
        int(kernel_schedstat[1])
    )
    switches = dict(line.split(":\t") for line in kernel_status.splitlines() if "ctxt" in line)
    for name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
        assert stopped_thread[f"{name}_total"] == int(switches[name]), name
    assert critical["runq_delay_p99_us"] is not None
    assert snapshot["tiers"]["critical"]["runq_delay_p99_us"] is not None
    assert snapshot["tiers"]["normal"]["runq_delay_p99_us"] is None

    # Placement: the critical pod ran on CPU 1 only, the background pod on both CPUs.
    critical_by_cpu = critical["cpu_seconds_by_cpu"]
    assert critical_by_cpu[1] > 0
    assert critical_by_cpu[0] == 0
    assert batch["cpu_seconds_by_cpu"][0] > 0
    assert batch["cpu_seconds_by_cpu"][1] > 0

    # Linter: CPUs 0 and 1 are siblings here, CPU 1 is protected, the grace period is 0.
    linter = snapshot["linter"]
    assert linter["smt_collision"] > 0
    assert linter["protected_fallback"] > 0
    assert linter["open_reserve"] > 0
    assert linter["layer_mismatch"] == 0

    labels = 'namespace="shop",pod="api",tier="critical"'
    assert f"temper_observe_pod_cpu_seconds_total{{{labels}}}" in exposition
    assert 'temper_observe_runq_delay_wakeup_seconds_bucket{le="4e-06",tier="critical"}' in (
        exposition
    )
    assert "tid=" not in exposition

    # The rightsizer reads this document: its parser accepts it.
    parsed = parse_snapshot(orjson.dumps(snapshot), "observer")
    (api,) = [pod for pod in parsed.pods if pod.uid == world.critical_uid]
    assert api.containers[0].threads[0].tid == latency.pid


async def test_procfs_fallback_attributes_counters(scene: Any, tmp_path: Path) -> None:
    world, latency, _ = scene
    observer = Observer(settings(tmp_path, bpf_enabled=False), LAYOUT, lambda: world.pods)
    try:
        snapshot = await observe(observer, 1.0)
    finally:
        observer.close()

    assert snapshot["source"] == "procfs"
    critical = pod_entry(snapshot, world.critical_uid)
    (thread,) = critical["containers"][0]["threads"]
    assert thread["tid"] == latency.pid
    assert thread["runq_delay_seconds_total"] > 0
    assert thread["last_cpu"] == 1
    assert critical["runq_delay_p99_us"] is None
    assert critical["cpu_seconds_by_cpu"] is None
    assert snapshot["linter"]["open_reserve"] == 0


async def test_missing_headers_fall_back_to_procfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if OWN_HEADERS:
        pytest.skip("this kernel has its own headers, so BCC never needs others")
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    empty = tmp_path / "no-headers"
    empty.mkdir()
    observer = Observer(settings(tmp_path, bpf_kernel_headers_path=empty), LAYOUT, lambda: [])
    await observer.start()
    observer.close()
    assert observer.source == "procfs"
    assert "kernel headers" in observer.source_detail
    assert "observing through procfs only" in caplog.text


async def test_missing_btf_falls_back_to_procfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "vmlinux"
    observer = Observer(settings(tmp_path, bpf_kernel_btf_path=missing), LAYOUT, lambda: [])
    await observer.start()
    observer.close()
    assert observer.source == "procfs"
    assert f"cannot read {missing}" in observer.source_detail
    assert "CONFIG_DEBUG_INFO_BTF" in observer.source_detail
    assert "observing through procfs only" in caplog.text


def test_empty_pod_cgroup_is_listed_without_threads(tmp_path: Path) -> None:
    world = Scene()
    relative = pod_cgroup_relative_path(
        world.critical_uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS
    )
    with cgroup_tree([relative], {}):
        observer = Observer(settings(tmp_path, bpf_enabled=False), LAYOUT, lambda: world.pods)
        observer.sample()
        snapshot = observer.snapshot()
        observer.close()
    critical = pod_entry(snapshot, world.critical_uid)
    assert critical["containers"] == []


# On "start", runs a thread that burns 0.2 s of CPU, prints its tid and waits; on "stop", lets
# it exit and prints "exited".
THREAD_CHURN = """
import sys, threading, time
release = threading.Event()
def work():
    end = time.thread_time() + 0.2
    while time.thread_time() < end:
        pass
    print(threading.get_native_id(), flush=True)
    release.wait()
sys.stdin.readline()
worker = threading.Thread(target=work)
worker.start()
sys.stdin.readline()
release.set()
worker.join()
print("exited", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("bpf", [True, False], ids=["bpf", "procfs"])
def test_thread_churn_keeps_totals(tmp_path: Path, bpf: bool) -> None:
    world = Scene()
    with cgroup_tree(world.relative_dirs()[:1], {}) as (container_dir,):
        process = subprocess.Popen(
            [sys.executable, "-c", THREAD_CHURN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        (container_dir / "cgroup.procs").write_text(str(process.pid))
        # Without BPF the new thread is found when the thread list is read, here every pass.
        options = settings(tmp_path, bpf_enabled=bpf, observe_procfs_listing_interval_seconds=1.0)
        observer = Observer(options, LAYOUT, lambda: world.pods)
        try:
            asyncio.run(observer.start())
            observer.sample()
            before = observer.snapshot()

            process.stdin.write("start\n")
            process.stdin.flush()
            worker_tid = int(process.stdout.readline())
            observer.sample()
            during = observer.snapshot()

            process.stdin.write("stop\n")
            process.stdin.flush()
            assert process.stdout.readline().strip() == "exited"
            # join() returns just before the kernel thread is gone.
            task = Path(f"/proc/{process.pid}/task/{worker_tid}")
            while task.exists():
                time.sleep(0.01)
            observer.sample()
            after = observer.snapshot()
        finally:
            observer.close()
            stop_all([process])
            process.stdin.close()
            process.stdout.close()

    def tids(snapshot: dict[str, Any]) -> set[int]:
        pod = pod_entry(snapshot, world.critical_uid)
        return {thread["tid"] for c in pod["containers"] for thread in c["threads"]}

    def cpu(snapshot: dict[str, Any]) -> float:
        return float(pod_entry(snapshot, world.critical_uid)["cpu_seconds_total"])

    assert tids(before) == {process.pid}
    assert tids(during) == {process.pid, worker_tid}
    assert tids(after) == {process.pid}
    # The exited thread's 0.2 s of CPU stay in the pod's total.
    assert cpu(during) >= cpu(before) + 0.19
    assert cpu(after) >= cpu(during)
