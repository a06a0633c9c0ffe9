"""Stock-kernel mode on the host's cgroup v1 ``cpu`` controller, with real processes.

cgroup v2 runs on plain files: this host binds the ``cpu`` controller to cgroup v1, and a
controller lives in one hierarchy only, so no cgroup2 mount here can have ``cpu.weight``.
"""

import os
import statistics
import uuid
from pathlib import Path

import orjson
import pytest
from kubernetes import client as k8s
from pydantic import ValidationError

from agent.cgroups import CgroupLayout, CgroupVersion, pod_cgroup_relative_path
from agent.podinfo import PodInfo, QosClass
from agent.settings import AgentSettings, CgroupDriver
from agent.stockmode import (
    DEFAULT_CRITICAL_CPU_SHARES,
    DEFAULT_HIGH_CPU_SHARES,
    MAX_CPU_SHARES,
    StockKernelMode,
    cpu_weight_from_shares,
)
from temper.annotations import SCHEDULER
from temper.controlplane import LocalControlPlane
from temper.tiers import Tier
from tests.agentproc import running_agent
from tests.cgrouphelpers import (
    CPU_ROOT,
    cgroup_tree,
    hogs,
    is_root,
    mean_runq_delay_us,
    stop_all,
)
from tests.kubehelpers import (
    create_nodes,
    delete_nodes,
    ensure_priority_classes,
    pod_manifest,
    wait_for,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not (CPU_ROOT / "cpu.idle").exists(), reason="needs cgroup v1 cpu.idle"),
]

V1_LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)
MAX = str(MAX_CPU_SHARES)


def info(uid: str, tier: Tier, qos: QosClass = QosClass.BURSTABLE) -> PodInfo:
    return PodInfo(f"ns/{tier}-{uid[:4]}", uid, uid, tier, True, qos, 1000, None, "Running")


def relative(uid: str, qos: QosClass = QosClass.BURSTABLE) -> str:
    return pod_cgroup_relative_path(uid, qos, CgroupDriver.CGROUPFS)


def read(directory: Path, name: str) -> str:
    return (directory / name).read_text().strip()


def new_uids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def test_stock_mode_sets_and_restores_cpu_idle(tmp_path: Path) -> None:
    assert is_root()
    batch, critical = new_uids(2)
    dirs = [relative(batch), relative(critical)]
    with cgroup_tree(dirs, {dirs[0]: 512, dirs[1]: 1024}) as (batch_dir, critical_dir):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        missing = mode.apply([info(batch, Tier.BACKGROUND), info(critical, Tier.CRITICAL)])
        assert missing == []
        assert read(batch_dir, "cpu.idle") == "1"
        assert read(critical_dir, "cpu.idle") == "0"
        assert read(critical_dir, "cpu.shares") == MAX

        # A restarted agent finds what the previous one changed and restores it.
        successor = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        successor.restore_all()
        assert read(batch_dir, "cpu.idle") == "0"
        # Clearing cpu.idle makes the kernel reset cpu.shares to 1024; the saved 512 is back.
        assert read(batch_dir, "cpu.shares") == "512"
        assert read(critical_dir, "cpu.shares") == "1024"
        assert successor.changed == {}


def test_stock_mode_restores_when_pod_leaves_tier(tmp_path: Path) -> None:
    (uid,) = new_uids(1)
    with cgroup_tree([relative(uid)], {relative(uid): 256}) as (directory,):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        mode.apply([info(uid, Tier.LOW)])
        assert read(directory, "cpu.idle") == "1"
        mode.apply([info(uid, Tier.NORMAL)])
        assert read(directory, "cpu.idle") == "0"
        assert read(directory, "cpu.shares") == "256"
        assert mode.changed == {}


def test_stock_mode_moves_pod_between_treatments(tmp_path: Path) -> None:
    (uid,) = new_uids(1)
    with cgroup_tree([relative(uid)], {relative(uid): 256}) as (directory,):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        mode.apply([info(uid, Tier.BACKGROUND)])
        mode.apply([info(uid, Tier.CRITICAL)])
        assert read(directory, "cpu.idle") == "0"
        assert read(directory, "cpu.shares") == MAX
        mode.apply([info(uid, Tier.LOW)])
        assert read(directory, "cpu.idle") == "1"
        mode.restore_all()
        assert read(directory, "cpu.idle") == "0"
        assert read(directory, "cpu.shares") == "256"
        assert mode.changed == {}


def test_stock_mode_raises_critical_and_high_weights(tmp_path: Path) -> None:
    critical, high, normal, big_high = new_uids(4)
    dirs = [
        relative(critical, QosClass.GUARANTEED),
        relative(high, QosClass.GUARANTEED),
        relative(normal),
        relative(big_high),
    ]
    shares = dict(zip(dirs, (512, 2048, 1024, 16384), strict=True))
    with cgroup_tree(dirs, shares) as (critical_dir, high_dir, normal_dir, big_high_dir):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        pods = [
            info(critical, Tier.CRITICAL, QosClass.GUARANTEED),
            info(high, Tier.HIGH, QosClass.GUARANTEED),
            info(normal, Tier.NORMAL),
            info(big_high, Tier.HIGH),
        ]
        assert mode.apply(pods) == []
        assert read(critical_dir, "cpu.shares") == str(DEFAULT_CRITICAL_CPU_SHARES)
        assert read(high_dir, "cpu.shares") == str(DEFAULT_HIGH_CPU_SHARES)
        assert read(normal_dir, "cpu.shares") == "1024"
        # The kubelet gave this 16-CPU pod more than the high setting: never lowered.
        assert read(big_high_dir, "cpu.shares") == "16384"
        state = orjson.loads((tmp_path / "state.json").read_bytes())
        assert state["entries"][str(critical_dir / "cpu.shares")] == {
            "original": "512",
            "written": MAX,
        }
        assert set(mode.changed) == {str(critical_dir / "cpu.shares"), str(high_dir / "cpu.shares")}

        # A second pass with nothing overwritten writes nothing and keeps the originals.
        mode.apply(pods)
        assert mode.changed[str(critical_dir / "cpu.shares")] == "512"

        mode.restore_all()
        assert read(critical_dir, "cpu.shares") == "512"
        assert read(high_dir, "cpu.shares") == "2048"
        assert read(big_high_dir, "cpu.shares") == "16384"
        assert mode.changed == {}


def test_stock_mode_reapplies_overwritten_values(tmp_path: Path) -> None:
    critical, batch = new_uids(2)
    dirs = [relative(critical, QosClass.GUARANTEED), relative(batch)]
    with cgroup_tree(dirs, {dirs[0]: 1024, dirs[1]: 512}) as (critical_dir, batch_dir):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        pods = [info(critical, Tier.CRITICAL, QosClass.GUARANTEED), info(batch, Tier.BACKGROUND)]
        mode.apply(pods)
        assert read(critical_dir, "cpu.shares") == MAX
        assert read(batch_dir, "cpu.idle") == "1"

        # The kubelet resizes the critical pod to 2 CPUs; someone clears the batch pod's flag.
        (critical_dir / "cpu.shares").write_text("2048")
        (batch_dir / "cpu.idle").write_text("0")
        mode.apply(pods)
        assert read(critical_dir, "cpu.shares") == MAX
        assert read(batch_dir, "cpu.idle") == "1"

        mode.restore_all()
        # The resized value is the one restored: it is the kubelet's newest.
        assert read(critical_dir, "cpu.shares") == "2048"
        assert read(batch_dir, "cpu.idle") == "0"
        assert read(batch_dir, "cpu.shares") == "512"
        assert mode.changed == {}


def test_stock_mode_leaves_values_changed_since(tmp_path: Path) -> None:
    (critical,) = new_uids(1)
    directory_name = relative(critical, QosClass.GUARANTEED)
    with cgroup_tree([directory_name], {directory_name: 1024}) as (directory,):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        mode.apply([info(critical, Tier.CRITICAL, QosClass.GUARANTEED)])
        (directory / "cpu.shares").write_text("4096")
        mode.restore_all()
        assert read(directory, "cpu.shares") == "4096"
        assert mode.changed == {}


def test_stock_mode_lowered_setting_restores_on_restart(tmp_path: Path) -> None:
    (critical,) = new_uids(1)
    directory_name = relative(critical, QosClass.GUARANTEED)
    pods = [info(critical, Tier.CRITICAL, QosClass.GUARANTEED)]
    with cgroup_tree([directory_name], {directory_name: 1024}) as (directory,):
        StockKernelMode(V1_LAYOUT, tmp_path / "state.json").apply(pods)
        assert read(directory, "cpu.shares") == MAX
        lowered = StockKernelMode(V1_LAYOUT, tmp_path / "state.json", critical_cpu_shares=8192)
        lowered.apply(pods)
        assert read(directory, "cpu.shares") == "8192"
        assert lowered.changed == {str(directory / "cpu.shares"): "1024"}
        off = StockKernelMode(V1_LAYOUT, tmp_path / "state.json", critical_cpu_shares=2)
        off.apply(pods)
        assert read(directory, "cpu.shares") == "1024"
        assert off.changed == {}


def test_stock_mode_reads_first_state_format(tmp_path: Path) -> None:
    (batch,) = new_uids(1)
    with cgroup_tree([relative(batch)], {}) as (directory,):
        (directory / "cpu.idle").write_text("1")
        # An agent of the first format recorded pod directories and their original cpu.idle.
        (tmp_path / "state.json").write_bytes(orjson.dumps({str(directory): "0"}))
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        assert mode.changed == {str(directory / "cpu.idle"): "0"}
        mode.restore_all()
        assert read(directory, "cpu.idle") == "0"


def test_stock_mode_reports_missing_cgroup(tmp_path: Path) -> None:
    mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
    batch, critical = new_uids(2)
    missing = mode.apply(
        [info(batch, Tier.BACKGROUND), info(critical, Tier.CRITICAL, QosClass.GUARANTEED)]
    )
    assert missing == [f"ns/background-{batch[:4]}", f"ns/critical-{critical[:4]}"]
    assert mode.changed == {}


def test_stock_mode_rejects_out_of_range_shares(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="critical CPU shares 300000 is out of range"):
        StockKernelMode(V1_LAYOUT, tmp_path / "state.json", critical_cpu_shares=300000)


def test_agent_settings_keep_high_below_critical() -> None:
    defaults = AgentSettings(node_name="n1")
    assert defaults.stock_kernel_critical_cpu_shares == DEFAULT_CRITICAL_CPU_SHARES
    assert defaults.stock_kernel_high_cpu_shares == DEFAULT_HIGH_CPU_SHARES
    with pytest.raises(ValidationError, match="above stock_kernel_critical_cpu_shares"):
        AgentSettings(
            node_name="n1",
            stock_kernel_critical_cpu_shares=4096,
            stock_kernel_high_cpu_shares=8192,
        )


def fake_v2_pod(root: Path, uid: str, qos: QosClass, weight: str) -> Path:
    """Plain files laid out like a cgroup v2 pod cgroup (no cpu controller on v2 here)."""
    directory = root / relative(uid, qos)
    directory.mkdir(parents=True)
    (directory / "cpu.weight").write_text(weight + "\n")
    (directory / "cpu.idle").write_text("0\n")
    return directory


def test_stock_mode_v2_paths_and_weights(tmp_path: Path) -> None:
    root = tmp_path / "cgroup2"
    layout = CgroupLayout(root, CgroupVersion.V2, CgroupDriver.CGROUPFS)
    critical, high, batch = new_uids(3)
    # cpu.weight of 500m, 1000m and 500m as the kubelet converts cpu.shares.
    critical_dir = fake_v2_pod(root, critical, QosClass.GUARANTEED, "20")
    high_dir = fake_v2_pod(root, high, QosClass.BURSTABLE, "39")
    batch_dir = fake_v2_pod(root, batch, QosClass.BURSTABLE, "20")
    pods = [
        info(critical, Tier.CRITICAL, QosClass.GUARANTEED),
        info(high, Tier.HIGH),
        info(batch, Tier.LOW),
    ]
    mode = StockKernelMode(layout, tmp_path / "state.json")
    assert mode.weight_file == "cpu.weight"
    assert mode.apply(pods) == []
    assert critical_dir == root / "kubepods" / f"pod{critical}"
    assert read(critical_dir, "cpu.weight") == "10000"
    assert read(high_dir, "cpu.weight") == str(cpu_weight_from_shares(DEFAULT_HIGH_CPU_SHARES))
    assert read(high_dir, "cpu.weight") == "313"
    assert read(batch_dir, "cpu.idle") == "1"

    (critical_dir / "cpu.weight").write_text("39")  # an in-place resize to 1000m
    mode.apply(pods)
    assert read(critical_dir, "cpu.weight") == "10000"

    # The kernel resets the weight of a group whose cpu.idle is cleared to 100; plain files
    # do not, so the test writes that value where the kernel would show it.
    (batch_dir / "cpu.weight").write_text("100")
    mode.restore_all()
    assert read(critical_dir, "cpu.weight") == "39"
    assert read(high_dir, "cpu.weight") == "39"
    assert read(batch_dir, "cpu.idle") == "0"
    assert read(batch_dir, "cpu.weight") == "20"
    assert mode.changed == {}


def test_cpu_weight_conversion_matches_kubelet() -> None:
    # The ends of both ranges and one CPU (1024 shares) under the kubelet's linear formula.
    assert cpu_weight_from_shares(2) == 1
    assert cpu_weight_from_shares(1024) == 39
    assert cpu_weight_from_shares(262144) == 10000


def test_stock_mode_cuts_guaranteed_runq_delay(tmp_path: Path) -> None:
    """A Guaranteed critical pod against hogs in Burstable low and background pods."""
    critical, low, background = new_uids(3)
    critical_name = relative(critical, QosClass.GUARANTEED)
    batch_names = [relative(low), relative(background)]
    # The kubelet's values for a 500m Guaranteed pod and two 500m Burstable pods: the
    # Burstable QoS group weighs their summed requests (1024) against the critical pod's 512.
    # kubepods gets the maximum so that the rest of the machine's load stays behind them.
    shares = {
        "kubepods": MAX_CPU_SHARES,
        "kubepods/burstable": 1024,
        critical_name: 512,
        batch_names[0]: 512,
        batch_names[1]: 512,
    }
    with cgroup_tree([critical_name, *batch_names], shares) as (critical_dir, *batch_dirs):
        (critical_dir / "cpu.cfs_quota_us").write_text("50000")  # its 500m limit

        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        pods = [
            info(critical, Tier.CRITICAL, QosClass.GUARANTEED),
            info(low, Tier.LOW),
            info(background, Tier.BACKGROUND),
        ]

        load = [process for directory in batch_dirs for process in hogs(directory, 2)]
        delays: dict[str, list[float]] = {"off": [], "on": []}
        try:
            # Interleaved so that drifting machine load hits both arms alike.
            for _ in range(3):
                mode.restore_all()
                delays["off"].append(mean_runq_delay_us(critical_dir, 2.0))
                mode.apply(pods)
                delays["on"].append(mean_runq_delay_us(critical_dir, 2.0))
        finally:
            stop_all(load)
            mode.restore_all()
        assert read(critical_dir, "cpu.shares") == "512"

    off_us = statistics.median(delays["off"])
    on_us = statistics.median(delays["on"])
    print(
        "run-queue delay per wake-up, median of 3: mode off "
        f"{off_us:.0f} us {[round(x) for x in delays['off']]}, mode on {on_us:.0f} us "
        f"{[round(x) for x in delays['on']]}"
    )
    assert on_us < off_us / 2


@pytest.mark.controlplane
def test_agent_stock_mode_cuts_runq_delay(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    ensure_priority_classes(api_client)
    node = f"stock-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node], cpu=str(os.cpu_count()))
    batch = pod_manifest("batch", cpu_request="750m", priority_class="temper-background")
    # request = limit for CPU and memory: a Guaranteed pod, beside kubepods/burstable.
    api = pod_manifest("api", cpu_request="500m", priority_class="temper-critical")
    guaranteed = {"cpu": "500m", "memory": "64Mi"}
    api["spec"]["containers"][0]["resources"] = {"requests": guaranteed, "limits": guaranteed}
    uids = {}
    for name, manifest in (("batch", batch), ("api", api)):
        manifest["spec"]["nodeName"] = node
        uids[name] = core_api.create_namespaced_pod(namespace, manifest).metadata.uid
    # The cgroups the kubelet would make for the two pods (cgroupfs driver), with cpu.shares
    # from their requests, and kubepods/burstable weighing the Burstable requests.
    batch_name = relative(uids["batch"])
    api_name = relative(uids["api"], QosClass.GUARANTEED)
    # kubelet gives the kubepods cgroup the node's allocatable CPU as shares; the maximum here
    # keeps the pods' competition with each other in front of the rest of the machine's load.
    shares = {
        "kubepods": MAX_CPU_SHARES,
        "kubepods/burstable": 768,
        batch_name: 768,
        api_name: 512,
    }
    with cgroup_tree([batch_name, api_name], shares) as (batch_dir, api_dir):
        (api_dir / "cpu.cfs_quota_us").write_text("50000")
        load = hogs(batch_dir, 4)
        try:
            before_us = mean_runq_delay_us(api_dir, 3.0)
            with running_agent(
                control_plane,
                node,
                tmp_path,
                "--stock-kernel-mode",
                "--cgroup-driver",
                "cgroupfs",
            ):
                assert wait_for(
                    lambda: (
                        (core_api.read_node(node).metadata.annotations or {}).get(SCHEDULER)
                        == "stock-kernel-mode"
                    )
                )
                assert wait_for(lambda: read(api_dir, "cpu.shares") == MAX)
                assert read(batch_dir, "cpu.idle") == "1"
                after_us = mean_runq_delay_us(api_dir, 3.0)
                # The kubelet writes the pod's value on an in-place resize; the reconcile loop
                # raises the weight again within a pass.
                (api_dir / "cpu.shares").write_text("512")
                assert wait_for(lambda: read(api_dir, "cpu.shares") == MAX, timeout_seconds=15)
            # The agent stopped: every value it changed is back, and so is the delay.
            assert read(batch_dir, "cpu.idle") == "0"
            assert read(batch_dir, "cpu.shares") == "768"
            assert read(api_dir, "cpu.shares") == "512"
            restored_us = mean_runq_delay_us(api_dir, 3.0)
        finally:
            stop_all(load)
    print(
        f"run-queue delay per wake-up: stock {before_us:.0f} us, stock-kernel mode "
        f"{after_us:.0f} us, restored {restored_us:.0f} us"
    )
    # Measured on either side of the agent's run, so that drifting machine load shows.
    assert after_us < min(before_us, restored_us) / 2
    log_text = (tmp_path / f"agent-{node}.log").read_text()
    overwritten = "CPU weight was changed by someone else (for example a kubelet resize)"
    assert f"{overwritten}; raising it again pod={namespace}/api" in log_text
    assert f"path={api_dir / 'cpu.shares'} old=512 new={MAX}" in log_text
    delete_nodes(core_api, [node])
