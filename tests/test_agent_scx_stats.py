"""``temper agent`` reads the statistics of a FAKE scx_layered and exports them.

The host kernel has no sched_ext: the FAKE scx_layered (``tests/fakes/fake_scx_layered``)
attaches on a FAKE sysfs root and serves the FAKE stats socket with responses recorded from the
real scx_layered 1.1.2. The pod's cgroup is a directory of a FAKE cgroup v2 root whose
``cgroup.threads`` lists a real process, so the layer check counts a real thread. The real
scheduler's statistics are read in the VM tests.
"""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from agent.cgroups import container_cgroup_name, pod_cgroup_relative_path
from agent.podinfo import QosClass
from agent.settings import CgroupDriver
from temper.controlplane import LocalControlPlane
from tests.agentproc import running_agent
from tests.cgrouphelpers import stop_all
from tests.fakes.sysfs import FAKE_SCX_LAYERED, make_fake_cgroup2_root, make_fake_sysfs
from tests.kubehelpers import create_nodes, delete_nodes, ensure_priority_classes, pod_manifest
from tests.kubehelpers import wait_for as wait_until
from tests.test_observe_agent import fetch, free_port

pytestmark = pytest.mark.controlplane

SLEEPER = "import time\nwhile True:\n    time.sleep(0.01)\n"


@pytest.fixture(scope="module", autouse=True)
def priority_classes(api_client: k8s.ApiClient) -> None:
    ensure_priority_classes(api_client)


@pytest.fixture
def node(core_api: k8s.CoreV1Api) -> Iterator[str]:
    name = f"stats-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [name], cpu="4")
    yield name
    delete_nodes(core_api, [name])


def metric(port: int, line_start: str) -> str | None:
    status, body = fetch(port, "/metrics")
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(line_start):
            return line
    return None


def layer_check(port: int) -> dict[str, Any] | None:
    status, body = fetch(port, "/observe")
    if status != 200:
        return None
    result: dict[str, Any] | None = json.loads(body).get("layer_check")
    return result


def test_agent_exports_layer_stats_and_checks_layers(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sysfs = make_fake_sysfs(tmp_path / "sys", cpus=4)
    cgroup_root = make_fake_cgroup2_root(tmp_path / "cgroup")
    stats_socket = tmp_path / "scx" / "stats"
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps({"critical": 1, "normal": 40}))
    monkeypatch.setenv("FAKE_SYSFS", str(sysfs))
    monkeypatch.setenv("FAKE_SCX_STATS_SOCKET", str(stats_socket))
    monkeypatch.setenv("FAKE_SCX_TASKS", str(tasks_file))

    manifest = pod_manifest("db", cpu_request="1", priority_class="temper-critical")
    manifest["spec"]["nodeName"] = node
    uid = core_api.create_namespaced_pod(namespace, manifest).metadata.uid
    # The pod's only container thread: a real process listed in the FAKE cgroup tree.
    relative = pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.SYSTEMD)
    container = container_cgroup_name("containerd://" + "ab" * 32, CgroupDriver.SYSTEMD)
    directory = cgroup_root / relative / container
    directory.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", SLEEPER])
    (directory / "cgroup.threads").write_text(f"{process.pid}\n")

    port = free_port()
    args = [
        "--sysfs-root", str(sysfs),
        "--cgroup-root", str(cgroup_root),
        "--scx-layered-path", str(FAKE_SCX_LAYERED),
        "--min-restart-interval-seconds", "0",
        "--scx-stats-socket-path", str(stats_socket),
        "--scx-stats-interval-seconds", "1",
        "--port", str(port),
    ]  # fmt: skip
    try:
        with running_agent(control_plane, node, tmp_path, *args):
            tasks = wait_until(
                lambda: metric(port, 'temper_scx_layer_tasks{layer="critical"}'),
                timeout_seconds=60,
            )
            assert tasks.endswith(" 1.0")
            assert wait_until(lambda: metric(port, "temper_scx_stats_up 1.0"))
            # From the second response on, the layers' utilisation of the period.
            assert wait_until(lambda: metric(port, 'temper_scx_layer_util_cpus{layer="critical"}'))

            # The thread has run since the first count: it settles in the critical layer,
            # where the FAKE scheduler reports one task.
            def settled() -> dict[str, Any] | None:
                check = layer_check(port)
                if not check or not check["layers"]:
                    return None
                critical = check["layers"]["critical"]
                return check if critical["expected_min"] == 1 else None

            check = wait_until(settled, timeout_seconds=30)
            assert check["detail"] == ""
            assert check["mismatch"] == 0
            assert check["layers"]["critical"] == {
                "reported": 1,
                "expected_min": 1,
                "expected_max": 1,
                "mismatch": 0,
            }

            # The scheduler stops counting the thread in the critical layer: a mismatch.
            tasks_file.write_text(json.dumps({"critical": 0, "normal": 41}))
            line = wait_until(
                lambda: metric(port, 'temper_observe_layer_mismatch_tasks{layer="critical"} 1.0')
            )
            assert line
            violations = metric(
                port, 'temper_observe_linter_violations_total{invariant="layer_mismatch"}'
            )
            assert violations is not None
            assert float(violations.split()[-1]) >= 1
    finally:
        stop_all([process])
