"""Profiles against real threads: processes that name their threads, in real pod cgroups.

The generated matches are evaluated with the test matcher against each thread's real comm
and cgroup path. This host has cgroup v1, so the paths of the ``cpu`` hierarchy, laid out by
the cgroupfs driver, replace the v2 paths scx_layered reads.
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
import yaml

from agent.cgroups import CgroupLayout, CgroupVersion, pod_cgroup_relative_path
from agent.layers import compute_layer_plan
from agent.podinfo import QosClass, pod_info
from agent.profiles.layers import EXCLUSIVE_LAYER, LATENCY_LAYER, YIELD_LAYER
from agent.profiles.resolver import ProfileResolver
from agent.profiles.schema import Treatment, load_profile
from agent.profiles.train import cgroup_pids, train
from agent.settings import CgroupDriver
from agent.topology import Topology
from agent.validation import validate_layer_config
from temper.annotations import PROFILE
from temper.cli import main
from tests.cgrouphelpers import CPU_ROOT, cgroup_tree, is_root, start_in_cgroup, stop_all
from tests.layermatch import layer_for, matching_blocks, task_cgroup

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not (is_root() and CPU_ROOT.is_dir()), reason="needs root and cgroup v1"),
]

V1_LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)
TOPOLOGY = Topology(cpus=8)
PROFILE_LAYERS = {EXCLUSIVE_LAYER, LATENCY_LAYER, YIELD_LAYER}

# Names the main thread after argv[1] and starts one sleeping thread per further argument;
# a name with a leading '+' is started one second later. Threads name themselves the two
# ways programs do: prctl(PR_SET_NAME) and writing /proc/self/task/<tid>/comm.
NAMED_THREADS = """
import ctypes, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15

def run(name, index):
    if index % 2:
        libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)
    else:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(name)
    time.sleep(600)

late = []
for index, name in enumerate(sys.argv[2:]):
    if name.startswith("+"):
        late.append((name[1:], index))
    else:
        threading.Thread(target=run, args=(name, index), daemon=True).start()
libc.prctl(PR_SET_NAME, sys.argv[1].encode(), 0, 0, 0)
time.sleep(1.0)
for name, index in late:
    threading.Thread(target=run, args=(name, index), daemon=True).start()
time.sleep(600)
"""

# One single-threaded process per role, named after argv[2].
ROLE = """
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)
role = sys.argv[1]
while True:
    if role == "hot":
        pass
    elif role == "wake":
        time.sleep(0.002)
        end = time.perf_counter() + 0.0001
        while time.perf_counter() < end:
            pass
    elif role == "chunky":
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            pass
        time.sleep(0.02)
    else:
        time.sleep(1.0)
"""


def comms(pid: int) -> dict[int, str]:
    result = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            result[int(task.name)] = (task / "comm").read_text().rstrip("\n")
        except FileNotFoundError:
            continue
    return result


def wait_for_names(pid: int, names: set[str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if names <= set(comms(pid).values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"threads of {pid} are {sorted(comms(pid).values())}, expected {names}")


def start_named(cgroup: Path | None, names: list[str]) -> subprocess.Popen[bytes]:
    args = [names[0], *names[1:]]
    if cgroup is None:
        process = subprocess.Popen([sys.executable, "-c", NAMED_THREADS, *args])
    else:
        process = start_in_cgroup(NAMED_THREADS, cgroup, *args)
    wait_for_names(process.pid, {n for n in names if not n.startswith("+")})
    return process


def pod_object(uid: str, image: str, annotations: dict[str, str], tier: str | None) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    if tier is not None:
        spec["priorityClassName"] = f"temper-{tier}"
    return {
        "metadata": {"name": "app", "namespace": "ns", "uid": uid, "annotations": annotations},
        "spec": spec,
        "status": {"phase": "Running", "qosClass": "Burstable"},
    }


@pytest.fixture
def pod_cgroup() -> Iterator[tuple[str, Path]]:
    """A Burstable pod's cgroup with one container cgroup in it; yields (uid, container)."""
    uid = str(uuid.uuid4())
    pod_path = pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS)
    with cgroup_tree([pod_path, f"{pod_path}/0123abcd"], {}) as (_, container):
        yield uid, container


def config_for(pod: Any, profile_dirs: list[Path]) -> list[dict[str, Any]]:
    resolver = ProfileResolver(profile_dirs)
    info = pod_info(pod)
    layers = resolver.profile_layers({info.key: pod}, [info], V1_LAYOUT, TOPOLOGY)
    config = compute_layer_plan([info], V1_LAYOUT, TOPOLOGY, profile_layers=layers).config
    validate_layer_config(config, cpus=TOPOLOGY.cpus)
    return config


def check_threads(config: list[dict[str, Any]], pid: int, expected: dict[str, str]) -> None:
    """Every thread lands in its expected layer through exactly one profile block."""
    profile_layers = [layer for layer in config if layer["name"] in PROFILE_LAYERS]
    seen = {}
    for tid, comm in comms(pid).items():
        cgroup = task_cgroup(pid, tid)
        layer = layer_for(config, cgroup, comm)
        blocks = matching_blocks(profile_layers, cgroup, comm)
        seen[comm] = layer
        if expected[comm] in PROFILE_LAYERS:
            assert [name for name, _ in blocks] == [expected[comm]], f"{comm}: {blocks}"
        else:
            assert blocks == [], f"{comm} matches profile blocks {blocks}"
    assert seen == expected


MYSQL_THREADS = {
    "mysqld": "high",
    "connection": "high",
    "ib_log_writer": EXCLUSIVE_LAYER,
    "ib_log_flush": EXCLUSIVE_LAYER,
    "ib_log_wr_notif": LATENCY_LAYER,
    "ib_io_rd-1": LATENCY_LAYER,
    "ib_io_rd-2": LATENCY_LAYER,
    "ib_io_wr-1": LATENCY_LAYER,
    "ib_srv_purge": YIELD_LAYER,
    "ib_srv_wkr-1": YIELD_LAYER,
    "ib_dict_stats": YIELD_LAYER,
    "ib_pg_flush-1": "high",
    "ib_pg_flush_co": "high",
    "ib_io_ibuf": "high",
}


def test_builtin_profile_places_mysql_threads(pod_cgroup: tuple[str, Path]) -> None:
    uid, container = pod_cgroup
    pod = pod_object(uid, "docker.io/library/mysql:8.4", {}, "high")
    config = config_for(pod, [])
    names = ["mysqld", *(name for name in MYSQL_THREADS if name != "mysqld")]
    inside = start_named(container, names)
    outside = start_named(None, ["mysqld", "ib_io_rd-1", "ib_log_writer"])
    try:
        check_threads(config, inside.pid, MYSQL_THREADS)
        expected_outside = {"mysqld": "normal", "ib_io_rd-1": "normal", "ib_log_writer": "normal"}
        check_threads(config, outside.pid, expected_outside)
    finally:
        stop_all([inside, outside])


ETL_PROFILE = {
    "name": "etl-worker",
    "description": "ETL worker with its own thread names",
    "groups": [
        {"name": "io", "threads": ["wrk_io"], "treatment": "default"},
        {"name": "workers", "threads": ["wrk_*"], "treatment": "yield"},
        {"name": "receive", "threads": ["net_rx"], "treatment": "latency"},
        {"name": "network", "threads": ["net_"], "treatment": "yield"},
    ],
}
ETL_THREADS = {
    "etl_main": "normal",
    "wrk_io1": "normal",
    "wrk_io2": "normal",
    "wrk_cpu1": YIELD_LAYER,
    "net_rx0": LATENCY_LAYER,
    "net_tx0": YIELD_LAYER,
}


def test_custom_profile_by_annotation(pod_cgroup: tuple[str, Path], tmp_path: Path) -> None:
    uid, container = pod_cgroup
    (tmp_path / "etl.yaml").write_text(yaml.safe_dump(ETL_PROFILE))
    pod = pod_object(uid, "registry.local/etl:3", {PROFILE: "etl-worker"}, None)
    config = config_for(pod, [tmp_path])
    process = start_named(container, list(ETL_THREADS))
    try:
        check_threads(config, process.pid, ETL_THREADS)
    finally:
        stop_all([process])


def test_train_pid_writes_valid_profile(tmp_path: Path) -> None:
    names = ["dbmain", "io_wr-1", "io_wr-2", "io_wr-3", "purge_x", "conn", "+late_joiner"]
    process = start_named(None, names)
    output = tmp_path / "trained.yaml"
    try:
        code = main(
            [
                "profile",
                "train",
                "--pid",
                str(process.pid),
                "--seconds",
                "2",
                "--interval-seconds",
                "0.25",
                "--output",
                str(output),
                "--image",
                "db:*",
            ]
        )
    finally:
        stop_all([process])
    assert code == 0
    profile = load_profile(output)
    assert profile.name == "trained-dbmain"
    assert profile.images == ("db:*",)
    prefixes = sorted(p for group in profile.groups for p in group.prefixes)
    assert prefixes == ["conn", "dbmain", "io_wr-", "late_joiner", "purge_x"]


def test_train_groups_threads_by_name() -> None:
    process = start_named(None, ["dbmain", "io_wr-1", "io_wr-2", "io_wr-12", "purge_x"])
    try:
        proposal = train(
            lambda: [process.pid],
            target=f"process {process.pid}",
            seconds=1.0,
            interval_seconds=0.25,
            name="db",
        )
    finally:
        stop_all([process])
    members = {stats.prefix: sorted(stats.comms) for _, stats, _ in proposal.groups}
    assert members == {
        "io_wr-": ["io_wr-1", "io_wr-12", "io_wr-2"],
        "purge_x": ["purge_x"],
        "dbmain": ["dbmain"],
    }


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs to separate the roles")
def test_train_cgroup_proposes_treatments() -> None:
    # The spinning and the waking processes share CPU 0, so the waking ones wait for it.
    # The chunky and the sleeping ones run on CPU 1. High cpu.shares keep the rest of the
    # machine from diluting the spinner below one full CPU.
    roles = [
        ("hot", "hot_spin1", 0),
        ("wake", "lat_tick1", 0),
        ("wake", "lat_tick2", 0),
        ("chunky", "mid_calc1", 1),
        ("sleep", "bg_sweep1", 1),
    ]
    relative = f"temper-train-{uuid.uuid4().hex[:8]}"
    with cgroup_tree([relative], {relative: 32768}) as (directory,):
        processes = []
        try:
            for role, name, cpu in roles:
                process = start_in_cgroup(ROLE, directory, role, name)
                os.sched_setaffinity(process.pid, {cpu})
                processes.append(process)
            for process, (_, name, _) in zip(processes, roles, strict=True):
                wait_for_names(process.pid, {name})
            proposal = train(
                lambda: cgroup_pids(directory),
                target=f"cgroup {directory}",
                seconds=3.0,
                interval_seconds=0.5,
                name="roles",
            )
        finally:
            stop_all(processes)
    proposed = {stats.prefix: treatment for _, stats, treatment in proposal.groups}
    assert proposed == {
        "hot_spin": Treatment.EXCLUSIVE,
        "lat_tick": Treatment.LATENCY,
        "mid_calc": Treatment.DEFAULT,
        "bg_sweep": Treatment.YIELD,
    }, proposal.text
