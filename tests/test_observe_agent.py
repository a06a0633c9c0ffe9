"""``temper agent`` serves /observe and the observation metrics for a pod on its node."""

import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from agent.cgroups import pod_cgroup_relative_path
from agent.podinfo import QosClass
from agent.settings import CgroupDriver
from temper.controlplane import LocalControlPlane
from temper.tiers import priority_class_manifests
from tests.agentproc import running_agent
from tests.cgrouphelpers import cgroup_tree, is_root, stop_all
from tests.kubehelpers import create_nodes, delete_nodes, pod_manifest, wait_for

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root for cgroups"),
]

SLEEPER = "import time\nwhile True:\n    time.sleep(0.01)\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def observed_pod(port: int, uid: str) -> dict[str, Any] | None:
    status, body = fetch(port, "/observe")
    if status != 200:
        return None
    for pod in json.loads(body)["pods"]:
        if pod["uid"] == uid and pod["containers"]:
            return dict(pod)
    return None


def test_agent_serves_observe_and_metrics(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    scheduling = k8s.SchedulingV1Api(api_client)
    for manifest in priority_class_manifests():
        try:
            scheduling.create_priority_class(manifest)
        except k8s.ApiException as error:
            if error.status != 409:
                raise

    node = f"observe-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node], cpu="2")
    manifest = pod_manifest("api", cpu_request="500m", priority_class="temper-critical")
    manifest["spec"]["nodeName"] = node
    uid = core_api.create_namespaced_pod(namespace, manifest).metadata.uid

    relative = pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS)
    port = free_port()
    with cgroup_tree([f"{relative}/c1"], {}) as (container_dir,):
        process = subprocess.Popen([sys.executable, "-c", SLEEPER])
        (container_dir / "cgroup.procs").write_text(str(process.pid))
        try:
            with running_agent(
                control_plane, node, tmp_path, "--cgroup-driver", "cgroupfs", "--port", str(port)
            ):
                pod = wait_for(lambda: observed_pod(port, uid), timeout_seconds=60)
                status, metrics = fetch(port, "/metrics")
        finally:
            stop_all([process])

    assert pod["name"] == "api"
    assert pod["tier"] == "critical"
    (container,) = pod["containers"]
    assert [thread["tid"] for thread in container["threads"]] == [process.pid]
    assert status == 200
    labels = f'namespace="{namespace}",pod="api",tier="critical"'
    assert f"temper_observe_pod_threads{{{labels}}} 1.0" in metrics.decode()
    delete_nodes(core_api, [node])
