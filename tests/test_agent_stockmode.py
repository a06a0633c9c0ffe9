"""Stock-kernel mode on the host's cgroup v1 ``cpu`` controller, with real processes."""

import os
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from agent.cgroups import CgroupLayout, CgroupVersion, pod_cgroup_relative_path
from agent.podinfo import PodInfo, QosClass
from agent.settings import CgroupDriver
from agent.stockmode import StockKernelMode
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


def info(uid: str, tier: Tier) -> PodInfo:
    return PodInfo(f"ns/{tier}", uid, uid, tier, True, QosClass.BURSTABLE, 1000, None, "Running")


def test_stock_mode_sets_and_restores_cpu_idle(tmp_path: Path) -> None:
    assert is_root()
    batch, critical = str(uuid.uuid4()), str(uuid.uuid4())
    relative = [
        pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS)
        for uid in (batch, critical)
    ]
    with cgroup_tree(relative, {}) as (batch_dir, critical_dir):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        missing = mode.apply([info(batch, Tier.BACKGROUND), info(critical, Tier.CRITICAL)])
        assert missing == []
        assert (batch_dir / "cpu.idle").read_text().strip() == "1"
        assert (critical_dir / "cpu.idle").read_text().strip() == "0"

        # A restarted agent finds what the previous one changed and restores it.
        successor = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        successor.restore_all()
        assert (batch_dir / "cpu.idle").read_text().strip() == "0"
        assert successor.changed == {}


def test_stock_mode_restores_when_pod_leaves_tier(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    relative = pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS)
    with cgroup_tree([relative], {}) as (directory,):
        mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
        mode.apply([info(uid, Tier.LOW)])
        assert (directory / "cpu.idle").read_text().strip() == "1"
        mode.apply([info(uid, Tier.NORMAL)])
        assert (directory / "cpu.idle").read_text().strip() == "0"


def test_stock_mode_reports_missing_cgroup(tmp_path: Path) -> None:
    mode = StockKernelMode(V1_LAYOUT, tmp_path / "state.json")
    missing = mode.apply([info(str(uuid.uuid4()), Tier.BACKGROUND)])
    assert missing == ["ns/background"]
    assert mode.changed == {}


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
    uids = {}
    for name, tier, cpu in (
        ("batch", "temper-background", "1"),
        ("api", "temper-critical", "500m"),
    ):
        manifest = pod_manifest(name, cpu_request=cpu, priority_class=tier)
        manifest["spec"]["nodeName"] = node
        uids[name] = core_api.create_namespaced_pod(namespace, manifest).metadata.uid
    # The cgroups the kubelet would make for the two Burstable pods (cgroupfs driver), with
    # cpu.shares from their requests.
    relative = {
        name: pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS)
        for name, uid in uids.items()
    }
    # kubelet gives the kubepods cgroup the node's allocatable CPU as shares; the maximum here
    # keeps the pods' competition with each other in front of the rest of the machine's load.
    shares = {"kubepods": 262144, relative["batch"]: 1024, relative["api"]: 512}
    with cgroup_tree([relative["batch"], relative["api"]], shares) as (batch_dir, api_dir):
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
                assert (batch_dir / "cpu.idle").read_text().strip() == "1"
                after_us = mean_runq_delay_us(api_dir, 3.0)
            # The agent stopped: every value it changed is back, and so is the delay.
            assert (batch_dir / "cpu.idle").read_text().strip() == "0"
            restored_us = mean_runq_delay_us(api_dir, 3.0)
        finally:
            stop_all(load)
    print(
        f"run-queue delay per wake-up: stock {before_us:.0f} us, stock-kernel mode "
        f"{after_us:.0f} us, restored {restored_us:.0f} us"
    )
    # Measured on either side of the agent's run, so that drifting machine load shows.
    assert after_us < min(before_us, restored_us) / 2
    delete_nodes(core_api, [node])
