"""The agent drives a FAKE scx_layered on a FAKE sysfs root, against the real API server.

The host kernel has no sched_ext, so these tests check the agent's decisions: start on the
first Temper pod, restart on a config change, stop for safe mode (node and fleet), adopt
after an agent restart, stop on shutdown. The real scheduler is exercised in the VM tests.
"""

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from temper.annotations import SAFE_MODE_REQUESTED, SCHEDULER
from temper.controlplane import LocalControlPlane
from tests.agentproc import agent_log_contains, running_agent
from tests.fakes.sysfs import FAKE_SCX_LAYERED, make_fake_cgroup2_root, make_fake_sysfs
from tests.kubehelpers import (
    create_nodes,
    delete_nodes,
    ensure_priority_classes,
    pod_manifest,
    wait_for,
)

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module", autouse=True)
def priority_classes(api_client: k8s.ApiClient) -> None:
    ensure_priority_classes(api_client)


@pytest.fixture
def fake_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=4)
    monkeypatch.setenv("FAKE_SYSFS", str(sysfs))
    monkeypatch.setenv("FAKE_SCX_LOG", str(tmp_path / "starts.log"))
    cgroup_root = make_fake_cgroup2_root(tmp_path / "cgroup")
    args = [
        "--sysfs-root", str(sysfs),
        "--cgroup-root", str(cgroup_root),
        "--scx-layered-path", str(FAKE_SCX_LAYERED),
        "--min-restart-interval-seconds", "0",
    ]  # fmt: skip
    return {"sysfs": sysfs, "args": args, "starts": tmp_path / "starts.log"}


@pytest.fixture
def node(core_api: k8s.CoreV1Api) -> Iterator[str]:
    name = f"scx-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [name], cpu="4")
    yield name
    delete_nodes(core_api, [name])


def scheduler_of(core: k8s.CoreV1Api, node: str) -> str:
    return str((core.read_node(node).metadata.annotations or {}).get(SCHEDULER, ""))


def starts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def sched_ext_state(sysfs: Path) -> str:
    return (sysfs / "kernel/sched_ext/state").read_text().strip()


def bound_pod(name: str, node: str, priority_class: str | None, cpu: str) -> dict[str, Any]:
    manifest = pod_manifest(name, cpu_request=cpu, priority_class=priority_class)
    manifest["spec"]["nodeName"] = node
    return manifest


def test_agent_enforces_only_with_temper_pods(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    fake_node: dict[str, Any],
    tmp_path: Path,
) -> None:
    core_api.create_namespaced_pod(namespace, bound_pod("plain", node, None, "500m"))
    with running_agent(control_plane, node, tmp_path, *fake_node["args"]):
        # Observe first: no Temper class on the node, nothing enforced.
        assert wait_for(lambda: scheduler_of(core_api, node) == "stock")
        assert starts(fake_node["starts"]) == 0
        core_api.create_namespaced_pod(namespace, bound_pod("db", node, "temper-critical", "1"))
        assert wait_for(lambda: scheduler_of(core_api, node) == "scx_layered")
        assert sched_ext_state(fake_node["sysfs"]) == "enabled"
        config = json.loads((tmp_path / f"{node}.json").read_text())
        assert config[0]["name"] == "critical"

        # A config change restarts the scheduler with the new config.
        core_api.create_namespaced_pod(
            namespace, bound_pod("batch", node, "temper-background", "1")
        )
        assert wait_for(lambda: starts(fake_node["starts"]) == 2)
        assert wait_for(lambda: scheduler_of(core_api, node) == "scx_layered")
    # Shutdown stops the scheduler: the node is back on the stock scheduler.
    assert sched_ext_state(fake_node["sysfs"]) == "disabled"
    assert scheduler_of(core_api, node) == "stock"


def test_agent_safe_mode_node_and_fleet(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    fake_node: dict[str, Any],
    tmp_path: Path,
) -> None:
    core_api.create_namespaced_pod(namespace, bound_pod("db", node, "temper-critical", "1"))
    fleet = "temper"
    try:
        core_api.create_namespace({"metadata": {"name": fleet}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise
    with running_agent(control_plane, node, tmp_path, *fake_node["args"]):
        assert wait_for(lambda: scheduler_of(core_api, node) == "scx_layered")
        core_api.patch_node(node, {"metadata": {"annotations": {SAFE_MODE_REQUESTED: "true"}}})
        assert wait_for(lambda: scheduler_of(core_api, node) == "safe-mode")
        assert sched_ext_state(fake_node["sysfs"]) == "disabled"
        core_api.patch_node(node, {"metadata": {"annotations": {SAFE_MODE_REQUESTED: None}}})
        assert wait_for(lambda: scheduler_of(core_api, node) == "scx_layered")

        # The annotation on the temper namespace stands the whole fleet down.
        patch = {"metadata": {"annotations": {SAFE_MODE_REQUESTED: "true"}}}
        core_api.patch_namespace(fleet, patch)
        try:
            assert wait_for(lambda: scheduler_of(core_api, node) == "safe-mode")
            assert sched_ext_state(fake_node["sysfs"]) == "disabled"
        finally:
            core_api.patch_namespace(
                fleet, {"metadata": {"annotations": {SAFE_MODE_REQUESTED: None}}}
            )
        assert wait_for(lambda: scheduler_of(core_api, node) == "scx_layered")


def test_restarted_agent_adopts_scheduler(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    fake_node: dict[str, Any],
    tmp_path: Path,
) -> None:
    core_api.create_namespaced_pod(namespace, bound_pod("db", node, "temper-critical", "1"))
    keep = [*fake_node["args"], "--no-stop-scheduler-on-exit"]
    with running_agent(control_plane, node, tmp_path, *keep) as agent:
        assert wait_for(lambda: scheduler_of(core_api, node) == "scx_layered")
        agent.send_signal(signal.SIGKILL)  # the agent crashes; the scheduler keeps running
        agent.wait(timeout=10)
    assert sched_ext_state(fake_node["sysfs"]) == "enabled"
    with running_agent(control_plane, node, tmp_path, *fake_node["args"]):
        # The new agent finds the same config and adopts the running scheduler.
        assert wait_for(lambda: agent_log_contains(tmp_path, node, "adopted running scheduler"))
        assert wait_for(lambda: scheduler_of(core_api, node) == "scx_layered")
        assert starts(fake_node["starts"]) == 1
    assert sched_ext_state(fake_node["sysfs"]) == "disabled"
