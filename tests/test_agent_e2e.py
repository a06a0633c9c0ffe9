"""The agent against the real API server: watches its pods, writes configs, publishes."""

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from temper.annotations import SCHEDULER, TIER_LOAD, TierLoad
from temper.controlplane import LocalControlPlane
from tests.agentproc import running_agent
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


def annotations_of(core: k8s.CoreV1Api, node: str) -> dict[str, str]:
    return core.read_node(node).metadata.annotations or {}


def tier_load(core: k8s.CoreV1Api, node: str) -> TierLoad | None:
    raw = annotations_of(core, node).get(TIER_LOAD)
    return TierLoad.decode(raw) if raw else None


def bound_pod(name: str, node: str, priority_class: str | None, cpu: str) -> dict[str, Any]:
    manifest = pod_manifest(name, cpu_request=cpu, priority_class=priority_class)
    manifest["spec"]["nodeName"] = node
    return manifest


def test_agent_publishes_and_follows_tier_changes(
    control_plane: LocalControlPlane, core_api: k8s.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    node = f"agent-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node], cpu="8")
    core_api.create_namespaced_pod(namespace, bound_pod("batch", node, "temper-background", "2"))
    core_api.create_namespaced_pod(namespace, bound_pod("web", node, None, "500m"))
    config_path = tmp_path / f"{node}.json"
    try:
        with running_agent(control_plane, node, tmp_path):
            # The kernel of the test machine has no sched_ext: the agent says so.
            status = wait_for(lambda: annotations_of(core_api, node).get(SCHEDULER))
            assert status.startswith("unsupported: ")
            load = wait_for(lambda: tier_load(core_api, node))
            assert load.tiers["background"].requested_cpu_millicores == 2000
            assert load.tiers["normal"].pods == 1
            assert load.node_cpu_millicores == 8000
            config = json.loads(config_path.read_text())
            assert [layer["name"] for layer in config] == ["background", "normal"]

            # A critical pod changes the layer config and the Node's annotation.
            core_api.create_namespaced_pod(
                namespace, bound_pod("db", node, "temper-critical", "1500m")
            )

            def critical_requested() -> int:
                current = tier_load(core_api, node)
                return current.tiers["critical"].requested_cpu_millicores if current else 0

            assert wait_for(critical_requested) == 1500
            config = wait_for(
                lambda: (c := json.loads(config_path.read_text()))[0]["name"] == "critical" and c
            )
            assert config[0]["kind"]["Confined"]["cpus_range"] == [2, 2]
    finally:
        delete_nodes(core_api, [node])


def test_agent_reports_safe_mode(
    control_plane: LocalControlPlane, core_api: k8s.CoreV1Api, tmp_path: Path
) -> None:
    node = f"safe-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node])
    try:
        with running_agent(control_plane, node, tmp_path):
            wait_for(lambda: annotations_of(core_api, node).get(SCHEDULER))
            core_api.patch_node(
                node, {"metadata": {"annotations": {"temper.codes/safe-mode-requested": "true"}}}
            )
            assert wait_for(lambda: annotations_of(core_api, node).get(SCHEDULER) == "safe-mode")
            core_api.patch_node(
                node, {"metadata": {"annotations": {"temper.codes/safe-mode-requested": None}}}
            )
            assert wait_for(
                lambda: annotations_of(core_api, node).get(SCHEDULER, "").startswith("unsupported")
            )
    finally:
        delete_nodes(core_api, [node])


def test_agent_caps_critical_fence(
    control_plane: LocalControlPlane, core_api: k8s.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    node = f"big-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node], cpu="4")
    core_api.create_namespaced_pod(namespace, bound_pod("huge", node, "temper-critical", "64"))
    try:
        with running_agent(control_plane, node, tmp_path):
            load = wait_for(lambda: tier_load(core_api, node))
            assert load.tiers["critical"].protection_capacity_millicores == 0
            config = json.loads((tmp_path / f"{node}.json").read_text())
            # More critical requests than CPUs: the fence is capped, one CPU stays free.
            assert config[0]["kind"]["Confined"]["cpus_range"] == [3, 3]
    finally:
        delete_nodes(core_api, [node])
