"""The agent keeps enforcing while the API server is unreachable, and catches up after."""

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from temper.annotations import SAFE_MODE_REQUESTED, SCHEDULER
from temper.controlplane import LocalControlPlane, node_manifest
from temper.controlplane.client import AdminClient
from temper.tiers import priority_class_manifests
from tests.agentproc import agent_log_contains, running_agent
from tests.fakes.sysfs import FAKE_SCX_LAYERED, make_fake_cgroup2_root, make_fake_sysfs
from tests.kubehelpers import pod_manifest, wait_for

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    """A control plane of this module's own, because the tests stop its API server."""
    plane = LocalControlPlane(tmp_path_factory.mktemp("resilience"))
    plane.start()
    api = plane.admin_client()
    for manifest in priority_class_manifests():
        api.create("/apis/scheduling.k8s.io/v1/priorityclasses", manifest)
    api.create("/api/v1/namespaces", {"metadata": {"name": "apps"}})
    yield plane
    plane.stop()


def bound(name: str, node: str, priority_class: str) -> dict[str, Any]:
    manifest = pod_manifest(name, cpu_request="500m", priority_class=priority_class)
    manifest["spec"]["nodeName"] = node
    return manifest


def scheduler_of(api: AdminClient, node: str) -> str:
    annotations = api.get(f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
    return str(annotations.get(SCHEDULER, ""))


def test_agent_survives_api_server_outage(
    own_plane: LocalControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=4)
    monkeypatch.setenv("FAKE_SYSFS", str(sysfs))
    cgroup_root = make_fake_cgroup2_root(tmp_path / "cgroup")
    api = own_plane.admin_client()
    node = f"outage-{uuid.uuid4().hex[:6]}"
    api.create("/api/v1/nodes", node_manifest(node, cpu="4"))
    api.create("/api/v1/namespaces/apps/pods", bound("db", node, "temper-critical"))
    args = [
        "--sysfs-root", str(sysfs),
        "--cgroup-root", str(cgroup_root),
        "--scx-layered-path", str(FAKE_SCX_LAYERED),
        "--min-restart-interval-seconds", "0",
    ]  # fmt: skip
    config_path = tmp_path / f"{node}.json"
    with running_agent(own_plane, node, tmp_path, *args) as agent:
        assert wait_for(lambda: scheduler_of(api, node) == "scx_layered")
        before = config_path.read_text()

        own_plane.stop_apiserver()
        assert wait_for(lambda: agent_log_contains(tmp_path, node, "list/watch failed"))
        time.sleep(3)
        # Enforcement and the last config stay while the API server is away.
        assert agent.poll() is None
        assert (sysfs / "kernel/sched_ext/state").read_text().strip() == "enabled"
        assert config_path.read_text() == before

        own_plane.start_apiserver()
        api.create("/api/v1/namespaces/apps/pods", bound("batch", node, "temper-background"))
        layers = wait_for(
            lambda: (
                [layer["name"] for layer in json.loads(config_path.read_text())]
                == ["critical", "background", "normal"]
            ),
            timeout_seconds=60,
        )
        assert layers
        assert wait_for(lambda: scheduler_of(api, node) == "scx_layered")


def test_agent_ignores_garbage_safe_mode_value(
    own_plane: LocalControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=4)
    monkeypatch.setenv("FAKE_SYSFS", str(sysfs))
    cgroup_root = make_fake_cgroup2_root(tmp_path / "cgroup")
    api = own_plane.admin_client()
    node = f"garbage-{uuid.uuid4().hex[:6]}"
    manifest = node_manifest(node, cpu="4", annotations={SAFE_MODE_REQUESTED: "maybe?"})
    api.create("/api/v1/nodes", manifest)
    api.create("/api/v1/namespaces/apps/pods", bound("api", node, "temper-critical"))
    args = [
        "--sysfs-root", str(sysfs),
        "--cgroup-root", str(cgroup_root),
        "--scx-layered-path", str(FAKE_SCX_LAYERED),
    ]  # fmt: skip
    with running_agent(own_plane, node, tmp_path, *args):
        # The garbage value is reported with the object and value, and everything else applies.
        assert wait_for(lambda: scheduler_of(api, node) == "scx_layered")
        assert wait_for(lambda: agent_log_contains(tmp_path, node, "value=maybe?"))
        assert agent_log_contains(tmp_path, node, f"object=node/{node}")
