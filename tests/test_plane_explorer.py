"""The plane's explorer, live events, agent panels, trace download, rollout restart and
drain against the real control plane.

kube-controller-manager runs for this module with the deployment, statefulset, daemonset
and disruption controllers, so ReplicaSets, ControllerRevisions and PodDisruptionBudget
status come from the real controllers. The replicaset controller stays off, so Deployments
get ReplicaSets but no pods (no kubelet would run them). Container logs come through the
real API server from a fake kubelet (tests/fakes/kubelet.py), because no kubelet runs here.
Agent panels and traces use a real ``temper agent`` process as root.
"""

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s

from agent.cgroups import pod_cgroup_relative_path
from agent.observe.trace import find_tracefs
from agent.podinfo import QosClass
from agent.settings import CgroupDriver
from plane.app import build_registry
from plane.explorer_routes import EXPLORER_KEY
from plane.settings import PlaneSettings
from plane.store import Role
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from tests.agentproc import running_agent
from tests.cgrouphelpers import cgroup_tree, is_root, stop_all
from tests.fakes.kubelet import FakeKubelet
from tests.kubehelpers import create_nodes, delete_nodes, ensure_priority_classes, pod_manifest
from tests.planeharness import (
    RolePlane,
    create_guarded_pods,
    create_tokens,
    eventually,
    fresh_node,
    mark_running_and_ready,
    plane_subprocess,
    point_node_at_kubelet,
    role_plane,
)

pytestmark = pytest.mark.controlplane

CONTROLLERS = (
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "disruption-controller",
)
# The checks here wait for kube-controller-manager, the agent and plane processes, so they
# poll for up to 30 s instead of the harness's default of 20 s.
WAIT_SECONDS = 30.0
SLEEPER = "import time\nwhile True:\n    time.sleep(0.01)\n"


@asynccontextmanager
async def running_plane(
    control_plane: LocalControlPlane, workdir: Path, namespace: str, **overrides: Any
) -> AsyncIterator[RolePlane]:
    """Serve a plane with a fresh database on loopback; ``overrides`` go to its settings."""
    database = workdir / f"plane-{uuid.uuid4().hex[:6]}.sqlite3"
    settings = PlaneSettings(
        database_path=database,
        safe_mode_namespace=namespace,
        hub_key_path=workdir / "hub.key",
        drain_retry_interval_seconds=0.5,
        **overrides,
    )
    async with role_plane(control_plane, settings) as plane:
        yield plane


@pytest.fixture(scope="module")
def controllers(control_plane: LocalControlPlane) -> Iterator[None]:
    """kube-controller-manager with the controllers this module needs, for the module."""
    control_plane.start_controller_manager(CONTROLLERS)
    yield
    control_plane.stop_controller_manager()


@pytest.fixture
async def plane(
    control_plane: LocalControlPlane, namespace: str, tmp_path: Path
) -> AsyncIterator[RolePlane]:
    """A plane whose agents are searched in the test's namespace (where none runs)."""
    async with running_plane(control_plane, tmp_path, namespace, agent_namespace=namespace) as p:
        yield p


@pytest.fixture
def node_name(core_api: k8s.CoreV1Api) -> Iterator[str]:
    """A fresh Ready Node, deleted afterwards."""
    yield from fresh_node(core_api, "explore")


@pytest.fixture
def apps_api(api_client: k8s.ApiClient) -> k8s.AppsV1Api:
    return k8s.AppsV1Api(api_client)


def bound_pod(
    name: str,
    node: str | None,
    *,
    labels: dict[str, str] | None = None,
    priority_class: str | None = None,
    **resources: str,
) -> dict[str, Any]:
    """A pod bound to ``node`` directly, without the scheduler (unbound when None)."""
    manifest = pod_manifest(name, priority_class=priority_class, cpu_request=None)
    container = manifest["spec"]["containers"][0]
    for key, value in resources.items():
        part, resource = key.split("_", 1)
        container["resources"].setdefault(part, {})[resource] = value
    if node:
        manifest["spec"]["nodeName"] = node
    else:
        manifest["spec"]["nodeSelector"] = {"temper.codes/test": "no-such-node"}
    if labels:
        manifest["metadata"]["labels"] = labels
    return manifest


def deployment(name: str, image: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def stateful_set(name: str, image: str) -> dict[str, Any]:
    """Return a StatefulSet manifest with no replicas, so it runs no pods."""
    manifest = deployment(name, image, replicas=0)
    manifest["spec"]["serviceName"] = name
    return manifest


def daemon_set(name: str, image: str) -> dict[str, Any]:
    """Return a DaemonSet manifest whose node selector matches no Node, so it runs no pods."""
    manifest = deployment(name, image)
    del manifest["spec"]["replicas"]
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"temper.codes/test": "no-such-node"}
    return manifest


def set_image(image: str, container: str = "app") -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}


# -- roles and audit --------------------------------------------------------------------------

# Every new route, with the role below the one it needs (None: viewer routes).
NEW_ROUTES = [
    ("GET", "/api/v1/namespaces/ns/pods/web", None),
    ("GET", "/api/v1/namespaces/ns/pods/web/manifest", None),
    ("GET", "/api/v1/namespaces/ns/pods/web/containers/app/logs", None),
    ("GET", "/api/v1/namespaces/ns/pods/web/performance", None),
    ("GET", "/api/v1/namespaces/ns/pods/web/scheduling", None),
    ("GET", "/api/v1/namespaces/ns/workloads/deployments/web", None),
    ("GET", "/api/v1/namespaces/ns/workloads/deployments/web/revisions", None),
    ("GET", "/api/v1/namespaces/ns/workloads/deployments/web/revisions/diff", None),
    ("GET", "/api/v1/events/stream", None),
    ("POST", "/api/v1/namespaces/ns/workloads/deployments/web/restart", Role.VIEWER),
    ("GET", "/api/v1/nodes/n1/trace", Role.VIEWER),
]


@pytest.mark.parametrize(("method", "path", "below"), NEW_ROUTES)
async def test_new_routes_deny_and_audit(
    plane: RolePlane, method: str, path: str, below: Role | None
) -> None:
    status, body = await plane.call(method, path, None)
    assert status == 401
    assert "Bearer" in body["error"]
    entry = plane.audit()[-1]
    assert (entry["outcome"], entry["status"], entry["path"]) == ("denied", 401, path)
    if below is not None:
        status, body = await plane.call(method, path, below)
        assert status == 403
        assert "operator" in body["error"]
        entry = plane.audit()[-1]
        assert (entry["outcome"], entry["token"]) == ("denied", f"test-{below.value}")


async def test_openapi_declares_explorer_routes(plane: RolePlane) -> None:
    _status, document = await plane.call("GET", "/api/v1/openapi.json")
    stream = document["paths"]["/api/v1/events/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert stream["x-temper-role"] == "viewer"
    assert "503" in stream["responses"]
    logs = document["paths"][
        "/api/v1/namespaces/{namespace}/pods/{pod}/containers/{container}/logs"
    ]
    assert "text/plain" in logs["get"]["responses"]["200"]["content"]
    trace = document["paths"]["/api/v1/nodes/{node}/trace"]["get"]
    assert trace["x-temper-role"] == "operator"
    assert "409" in trace["responses"]
    restart = document["paths"]["/api/v1/namespaces/{namespace}/workloads/{kind}/{name}/restart"]
    kind = next(p for p in restart["post"]["parameters"] if p["name"] == "kind")
    assert kind["schema"]["enum"] == ["deployments", "statefulsets", "daemonsets"]
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert {r.operation_id for r in build_registry().routes} == operations


# -- pod detail -------------------------------------------------------------------------------


@pytest.mark.usefixtures("controllers")
async def test_pod_detail_owners_and_containers(
    plane: RolePlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    apps_api: k8s.AppsV1Api,
    namespace: str,
    node_name: str,
) -> None:
    ensure_priority_classes(api_client)
    apps_api.create_namespaced_deployment(namespace, deployment("web", "registry.invalid/web:1"))

    async def replica_set() -> Any:
        items = apps_api.list_namespaced_replica_set(namespace).items
        return items[0] if items else None

    owner = await eventually(replica_set, WAIT_SECONDS)
    manifest = bound_pod(
        "web-1", node_name, priority_class="temper-critical",
        requests_cpu="1", limits_cpu="1", requests_memory="64Mi", limits_memory="64Mi",
    )  # fmt: skip
    manifest["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner.metadata.name,
         "uid": owner.metadata.uid, "controller": True},
    ]  # fmt: skip
    core_api.create_namespaced_pod(namespace, manifest)
    core_api.patch_namespaced_pod_status(
        "web-1",
        namespace,
        {"status": {"phase": "Running", "containerStatuses": [{
            "name": "app", "image": "registry.invalid/app:1", "imageID": "sha256:abc",
            "ready": True, "restartCount": 2, "containerID": "containerd://c1",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        }]}},
    )  # fmt: skip

    status, detail = await plane.call("GET", f"/api/v1/namespaces/{namespace}/pods/web-1")
    assert status == 200, detail
    assert (detail["node"], detail["phase"], detail["tier"]) == (node_name, "Running", "critical")
    assert (detail["qosClass"], detail["cpuLimitMillicores"]) == ("Guaranteed", 1000)
    assert detail["priorityClass"]["value"] == 100000
    assert detail["priorityClass"]["preemptionPolicy"] == "PreemptLowerPriority"
    assert [(o["kind"], o["name"], o["found"]) for o in detail["owners"]] == [
        ("ReplicaSet", owner.metadata.name, True),
        ("Deployment", "web", True),
    ]
    (container,) = detail["containers"]
    assert container["image"] == "registry.invalid/app:1"
    assert container["requests"] == {"cpu": "1", "memory": "64Mi"}
    assert container["limits"] == {"cpu": "1", "memory": "64Mi"}
    assert container["state"] == {"state": "running", "startedAt": "2026-01-01T00:00:00Z"}
    assert container["lastState"] == {"state": "terminated", "reason": "OOMKilled",
                                      "exitCode": 137}  # fmt: skip
    assert (container["restartCount"], container["ready"]) == (2, True)
    layer = detail["layer"]
    assert (layer["expected"], layer["reported"]) == ("critical", None)
    assert f"no running agent pod on node {node_name}" in layer["agentError"]
    assert plane.last_audit("getPod")["outcome"] == "allowed"

    status, pod = await plane.call("GET", f"/api/v1/namespaces/{namespace}/pods/web-1/manifest")
    assert status == 200
    assert pod["metadata"]["name"] == "web-1"
    assert "managedFields" not in pod["metadata"]
    assert plane.last_audit("getPodManifest")["outcome"] == "allowed"

    status, panel = await plane.call("GET", f"/api/v1/namespaces/{namespace}/pods/web-1/scheduling")
    assert status == 200, panel
    assert (panel["tier"], panel["qosClass"]) == ("critical", "Guaranteed")
    assert panel["nodeTierLoad"]["node"] == node_name
    assert panel["nodeTierLoad"]["tierLoad"] is None  # no agent published one on this Node
    assert plane.last_audit("getPodScheduling")["token"] == "test-viewer"


async def test_pod_detail_reports_missing_objects(plane: RolePlane, namespace: str) -> None:
    status, body = await plane.call("GET", f"/api/v1/namespaces/{namespace}/pods/nothing")
    assert status == 404
    assert body["error"] == f"pod {namespace}/nothing not found"
    status, body = await plane.call("GET", "/api/v1/namespaces/Bad_NS/pods/web")
    assert status == 400
    assert "namespace 'Bad_NS' is not a valid Kubernetes name" in body["error"]
    assert plane.last_audit("getPod")["outcome"] == "failed"


# -- container logs ---------------------------------------------------------------------------


async def test_log_errors_without_kubelet(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str, node_name: str
) -> None:
    core_api.create_namespaced_pod(namespace, bound_pod("web", node_name))
    base = f"/api/v1/namespaces/{namespace}/pods/web/containers"
    status, body = await plane.call("GET", f"{base}/app/logs")
    assert status == 502
    assert f"from the kubelet of node {node_name}" in body["error"]
    assert "no preferred addresses" in body["error"]  # the API server's own message
    status, body = await plane.call("GET", f"{base}/sidecar/logs")
    assert status == 404
    expected = f"container sidecar not found in pod {namespace}/web; its containers: app"
    assert body["error"] == expected
    status, body = await plane.call("GET", f"{base}/app/logs?tailLines=-1")
    assert status == 400
    assert "tailLines '-1'" in body["error"]
    core_api.create_namespaced_pod(namespace, bound_pod("pending", None))
    status, body = await plane.call(
        "GET", f"/api/v1/namespaces/{namespace}/pods/pending/containers/app/logs"
    )
    assert status == 409
    assert "is not bound to a node yet" in body["error"]


async def test_logs_follow_through_api_server(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str, node_name: str, tmp_path: Path
) -> None:
    lines = [f"line {n}" for n in range(1, 6)]
    async with FakeKubelet(tmp_path, lines, interval_seconds=0.2) as kubelet:
        point_node_at_kubelet(core_api, node_name, kubelet.port)
        core_api.create_namespaced_pod(namespace, bound_pod("web", node_name))
        path = f"/api/v1/namespaces/{namespace}/pods/web/containers/app/logs"

        status, text = await plane.call("GET", f"{path}?tailLines=2&timestamps=true")
        assert status == 200, text
        assert text == "line 4\nline 5\n"
        assert "tailLines=2" in kubelet.requests[-1]
        assert "timestamps=true" in kubelet.requests[-1]
        assert "limitBytes=" in kubelet.requests[-1]

        received = b""
        arrival: list[float] = []
        async with plane.http.get(
            f"{plane.url}{path}?follow=true&tailLines=1", headers=plane.headers(Role.VIEWER)
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            while received.count(b"\n") < 4:
                received += await asyncio.wait_for(response.content.readany(), 10)
                arrival.append(time.monotonic())
        # The client went away: the plane closes its request, the API server its own.
        await asyncio.wait_for(kubelet.follow_ended.wait(), 10)
    assert received.splitlines()[:4] == [b"line 5", b"tick 1", b"tick 2", b"tick 3"]
    assert arrival[-1] - arrival[0] >= 0.3  # ticks arrived one by one, not at the end
    assert "follow=true" in kubelet.requests[-1]
    entry = plane.last_audit("getContainerLogs")
    assert entry["path"].endswith("follow=true&tailLines=1")
    assert (entry["outcome"], entry["status"], entry["token"]) == ("allowed", 200, "test-viewer")


# -- revisions and rollout restart ------------------------------------------------------------


async def wait_revisions(plane: RolePlane, path: str, count: int) -> list[dict[str, Any]]:
    """Wait until the workload has ``count`` revisions and the controller reports the newest
    as its current one (a StatefulSet's status names it a moment after creating it)."""

    async def listing() -> list[dict[str, Any]] | None:
        status, body = await plane.call("GET", path)
        assert status == 200, body
        items: list[dict[str, Any]] = body["items"]
        return items if len(items) == count and items[-1]["current"] else None

    return await eventually(listing, WAIT_SECONDS)


async def create_web_deployment(plane: RolePlane, apps_api: k8s.AppsV1Api, namespace: str) -> str:
    """Create the Deployment web, wait for its first revision and return its API path."""
    apps_api.create_namespaced_deployment(namespace, deployment("web", "registry.invalid/web:1"))
    base = f"/api/v1/namespaces/{namespace}/workloads/deployments/web"
    await wait_revisions(plane, base + "/revisions", 1)
    return base


@pytest.mark.usefixtures("controllers")
async def test_deployment_revisions_and_diffs(
    plane: RolePlane, apps_api: k8s.AppsV1Api, namespace: str
) -> None:
    base = await create_web_deployment(plane, apps_api, namespace)
    for image in ("registry.invalid/web:2", "registry.invalid/web:3"):
        apps_api.patch_namespaced_deployment("web", namespace, set_image(image))
        await wait_revisions(plane, base + "/revisions", int(image[-1]))

    revisions = await wait_revisions(plane, base + "/revisions", 3)
    assert [r["revision"] for r in revisions] == [1, 2, 3]
    assert [r["current"] for r in revisions] == [False, False, True]
    images = [r["template"]["spec"]["containers"][0]["image"] for r in revisions]
    assert images == [f"registry.invalid/web:{n}" for n in (1, 2, 3)]
    assert all("pod-template-hash" not in r["template"]["metadata"]["labels"] for r in revisions)
    replica_sets = {
        rs.metadata.name for rs in apps_api.list_namespaced_replica_set(namespace).items
    }
    assert {r["name"] for r in revisions} == replica_sets

    status, diff = await plane.call("GET", base + "/revisions/diff")
    assert status == 200
    assert (diff["from"], diff["to"]) == (2, 3)
    assert "-  - image: registry.invalid/web:2\n" in diff["diff"]
    assert "+  - image: registry.invalid/web:3\n" in diff["diff"]
    status, diff = await plane.call("GET", base + "/revisions/diff?from=1&to=3")
    assert "-  - image: registry.invalid/web:1\n" in diff["diff"]
    status, body = await plane.call("GET", base + "/revisions/diff?from=9")
    assert status == 404
    assert "has no revision 9 (from); its revisions are [1, 2, 3]" in body["error"]
    status, manifest = await plane.call("GET", base)
    assert (status, manifest["kind"]) == (200, "Deployment")
    assert manifest["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    status, body = await plane.call("GET", f"/api/v1/namespaces/{namespace}/workloads/jobs/web")
    assert status == 400
    assert "use one of daemonsets, deployments, statefulsets" in body["error"]
    for operation in ("listWorkloadRevisions", "diffWorkloadRevisions"):
        entries = [e for e in plane.audit() if e["operation"] == operation]
        assert {(e["outcome"], e["token"]) for e in entries} >= {("allowed", "test-viewer")}
    entry = plane.last_audit("getWorkloadManifest")
    assert (entry["outcome"], entry["status"]) == ("failed", 400)


@pytest.mark.usefixtures("controllers")
async def test_statefulset_and_daemonset_revisions(
    plane: RolePlane, apps_api: k8s.AppsV1Api, namespace: str
) -> None:
    apps_api.create_namespaced_stateful_set(namespace, stateful_set("db", "registry.invalid/db:1"))
    apps_api.create_namespaced_daemon_set(
        namespace, daemon_set("agent", "registry.invalid/agent:1")
    )
    for kind, name in (("statefulsets", "db"), ("daemonsets", "agent")):
        base = f"/api/v1/namespaces/{namespace}/workloads/{kind}/{name}"
        await wait_revisions(plane, base + "/revisions", 1)
        patch = set_image(f"registry.invalid/{name}:2")
        if kind == "statefulsets":
            apps_api.patch_namespaced_stateful_set(name, namespace, patch)
        else:
            apps_api.patch_namespaced_daemon_set(name, namespace, patch)
        revisions = await wait_revisions(plane, base + "/revisions", 2)
        assert [r["revision"] for r in revisions] == [1, 2]
        assert revisions[-1]["current"] is True
        assert "$patch" not in revisions[0]["template"]
        status, diff = await plane.call("GET", base + "/revisions/diff")
        assert status == 200, diff
        assert f"+  - image: registry.invalid/{name}:2\n" in diff["diff"], kind


@pytest.mark.usefixtures("controllers")
async def test_rollout_restart_patches_template(
    plane: RolePlane, apps_api: k8s.AppsV1Api, namespace: str
) -> None:
    base = await create_web_deployment(plane, apps_api, namespace)

    status, body = await plane.call("POST", base + "/restart", Role.VIEWER)
    assert status == 403
    assert plane.audit()[-1]["outcome"] == "denied"
    status, body = await plane.call("POST", base + "/restart", Role.OPERATOR)
    assert status == 200, body
    assert body["object"] == f"deployment/{namespace}/web"
    template = apps_api.read_namespaced_deployment("web", namespace).spec.template
    assert template.metadata.annotations["kubectl.kubernetes.io/restartedAt"] == body["restartedAt"]
    entry = plane.last_audit("restartWorkload")
    assert (entry["outcome"], entry["token"], entry["method"]) == (
        "allowed", "test-operator", "POST"
    )  # fmt: skip
    # The deployment controller rolls out the change as a new ReplicaSet.
    await wait_revisions(plane, base + "/revisions", 2)
    _status, diff = await plane.call("GET", base + "/revisions/diff")
    assert f"+    kubectl.kubernetes.io/restartedAt: '{body['restartedAt']}'\n" in diff["diff"]

    apps_api.patch_namespaced_deployment("web", namespace, {"spec": {"paused": True}})
    status, body = await plane.call("POST", base + "/restart", Role.OPERATOR)
    assert status == 409
    assert body["error"] == (
        f"deployment {namespace}/web is paused; resume it before a rollout restart"
    )
    assert plane.last_audit("restartWorkload")["outcome"] == "failed"

    stateful = stateful_set("db", "registry.invalid/db:1")
    stateful["spec"]["updateStrategy"] = {"type": "OnDelete"}
    apps_api.create_namespaced_stateful_set(namespace, stateful)
    status, body = await plane.call(
        "POST", f"/api/v1/namespaces/{namespace}/workloads/statefulsets/db/restart", Role.OPERATOR
    )
    assert status == 409
    assert "updateStrategy OnDelete" in body["error"]

    apps_api.create_namespaced_daemon_set(
        namespace, daemon_set("agent", "registry.invalid/agent:1")
    )
    status, body = await plane.call(
        "POST", f"/api/v1/namespaces/{namespace}/workloads/daemonsets/agent/restart", Role.ADMIN
    )
    assert status == 200
    daemon_template = apps_api.read_namespaced_daemon_set("agent", namespace).spec.template
    restarted_at = daemon_template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]
    assert restarted_at == body["restartedAt"]
    status, body = await plane.call(
        "POST", f"/api/v1/namespaces/{namespace}/workloads/deployments/gone/restart", Role.ADMIN
    )
    assert (status, body["error"]) == (404, f"deployment {namespace}/gone not found")


# -- drain and PodDisruptionBudgets -----------------------------------------------------------


@pytest.mark.usefixtures("controllers")
async def test_drain_retries_until_budget_allows(
    plane: RolePlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node_name: str,
) -> None:
    labels = {"app": "guarded"}
    pods = [bound_pod(name, node_name, labels=labels) for name in ("guarded-1", "guarded-2")]
    policy = create_guarded_pods(
        api_client, namespace, pods, labels, budget="guard", min_available=1
    )

    async def budget_computed() -> bool:
        # Written by the real disruption controller.
        status = policy.read_namespaced_pod_disruption_budget("guard", namespace).status
        return bool(status and status.current_healthy == 2 and status.disruptions_allowed == 1)

    await eventually(budget_computed, WAIT_SECONDS)
    drain = f"/api/v1/nodes/{node_name}/drain"
    status, result = await plane.call(
        "POST", drain, Role.OPERATOR, {"gracePeriodSeconds": 0, "timeoutSeconds": 2}
    )
    assert status == 200, result
    assert result["complete"] is False
    (evicted,) = result["evicted"]
    assert evicted["deleted"] is True
    (blocked,) = result["blocked"]
    assert blocked["attempts"] >= 3  # retried every 0.5 s within the 2 s
    assert "429" in blocked["reason"]
    assert "disruption budget guard" in blocked["reason"]
    assert result["attempts"] == blocked["attempts"]
    assert core_api.read_node(node_name).spec.unschedulable is True

    async def replacement() -> None:
        # What a controller would do: a new pod elsewhere restores the budget's headroom.
        await asyncio.sleep(1.5)
        other = bound_pod("guarded-3", None, labels=labels)
        del other["spec"]["nodeSelector"]
        other["spec"]["nodeName"] = f"{node_name}-elsewhere"
        core_api.create_namespaced_pod(namespace, other)
        mark_running_and_ready(core_api, namespace, "guarded-3")

    task = asyncio.create_task(replacement())
    status, result = await plane.call(
        "POST", drain, Role.OPERATOR, {"gracePeriodSeconds": 0, "timeoutSeconds": 30}
    )
    await task
    assert status == 200, result
    assert result["complete"] is True
    assert [(e["name"], e["deleted"]) for e in result["evicted"]] == [(blocked["name"], True)]
    assert result["blocked"] == []
    assert result["attempts"] >= 2
    entry = plane.last_audit("drainNode")
    assert (entry["outcome"], entry["token"]) == ("allowed", "test-operator")


@pytest.mark.usefixtures("controllers")
async def test_drain_cancelled_by_client_is_audited(
    plane: RolePlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node_name: str,
) -> None:
    labels = {"app": "single"}
    pods = [bound_pod("single", node_name, labels=labels)]
    policy = create_guarded_pods(
        api_client, namespace, pods, labels, budget="keep", min_available=1
    )

    async def budget_computed() -> bool:
        status = policy.read_namespaced_pod_disruption_budget("keep", namespace).status
        return bool(status and status.current_healthy == 1 and status.observed_generation)

    await eventually(budget_computed, WAIT_SECONDS)
    # The client gives up while the drain still retries; the in-process server then cancels
    # the handler, which must still leave an audit entry.
    with pytest.raises(TimeoutError):
        await plane.http.post(
            f"{plane.url}/api/v1/nodes/{node_name}/drain",
            headers=plane.headers(Role.OPERATOR),
            json={"timeoutSeconds": 30},
            timeout=aiohttp.ClientTimeout(total=1.5),
        )

    async def audited() -> dict[str, Any] | None:
        entries = [e for e in plane.audit() if e["operation"] == "drainNode"]
        return entries[-1] if entries else None

    entry = await eventually(audited, timeout_seconds=10)
    assert (entry["outcome"], entry["status"], entry["token"]) == (
        "failed", 499, "test-operator"
    )  # fmt: skip
    assert "went away" in entry["detail"]


async def test_drain_rejects_invalid_timeout(plane: RolePlane, node_name: str) -> None:
    status, body = await plane.call(
        "POST", f"/api/v1/nodes/{node_name}/drain", Role.OPERATOR, {"timeoutSeconds": 7200}
    )
    assert status == 400
    assert "timeoutSeconds between 0 and 3600" in body["error"]


# -- live events ------------------------------------------------------------------------------


@dataclass
class Frame:
    """One server-sent event: its fields, or the comments of a comment-only block."""

    event: str
    data: Any
    id: str | None
    comments: list[str]


async def read_frame(response: aiohttp.ClientResponse, timeout_seconds: float = 10.0) -> Frame:
    fields: dict[str, str] = {}
    comments: list[str] = []
    while True:
        raw = await asyncio.wait_for(response.content.readline(), timeout_seconds)
        if not raw:
            raise EOFError("the event stream ended")
        line = raw.decode().rstrip("\n")
        if not line:
            if set(fields) == {"retry"}:
                fields = {}  # the reconnection delay hint that opens the stream
            if fields or comments:
                data = fields.get("data")
                return Frame(
                    fields.get("event", ""),
                    json.loads(data) if data else None,
                    fields.get("id"),
                    comments,
                )
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


async def next_event(response: aiohttp.ClientResponse, event: str) -> Frame:
    """The next frame named ``event``, skipping others (keepalives, retry hints)."""
    while True:
        frame = await read_frame(response)
        if frame.event == event:
            return frame


async def test_event_stream_pushes_changes(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node_name: str,
    tmp_path: Path,
) -> None:
    async with running_plane(
        control_plane, tmp_path, namespace, events_keepalive_seconds=0.5
    ) as plane:

        async def node_cached() -> bool:
            status, _body = await plane.call("GET", f"/api/v1/nodes/{node_name}")
            return status == 200

        await eventually(node_cached, WAIT_SECONDS)
        hub = plane.app[EXPLORER_KEY].hub
        async with plane.http.get(
            f"{plane.url}/api/v1/events/stream?node={node_name}",
            headers=plane.headers(Role.VIEWER),
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            # A stream is audited when it starts, not when it ends.
            entry = plane.last_audit("streamEvents")
            assert (entry["outcome"], entry["token"]) == ("allowed", "test-viewer")
            snapshot = await read_frame(response)
            assert snapshot.event == "node"
            assert snapshot.data["type"] == "ADDED"
            assert snapshot.data["object"]["name"] == node_name
            assert (await read_frame(response)).event == "synced"

            core_api.create_namespaced_pod(namespace, bound_pod("web", node_name))
            added = await next_event(response, "pod")
            assert (added.data["type"], added.data["key"]) == ("ADDED", f"{namespace}/web")
            assert added.data["object"]["tier"] == "normal"
            assert added.id is not None

            core_api.patch_node(node_name, {"spec": {"unschedulable": True}})
            modified = await next_event(response, "node")
            assert modified.data["type"] == "MODIFIED"
            assert modified.data["object"]["unschedulable"] is True
            assert int(modified.id or 0) > int(added.id)

            core_api.delete_namespaced_pod("web", namespace, grace_period_seconds=0)
            deleted = await next_event(response, "pod")
            while deleted.data["type"] == "MODIFIED":  # e.g. the deletion timestamp is set
                assert deleted.data["object"]["terminating"] is True
                deleted = await next_event(response, "pod")
            assert (deleted.data["type"], deleted.data["key"]) == ("DELETED", f"{namespace}/web")

            keepalive = await read_frame(response, timeout_seconds=5)
            assert keepalive.comments and keepalive.comments[0].startswith("keepalive")
            assert len(hub.subscribers) == 1
        # The client closed the connection: the stream notices and unsubscribes.
        for _ in range(50):
            if not hub.subscribers:
                break
            await asyncio.sleep(0.1)
        assert hub.subscribers == set()
        assert len([e for e in plane.audit() if e["operation"] == "streamEvents"]) == 1


async def test_event_stream_bounds(
    control_plane: LocalControlPlane, namespace: str, tmp_path: Path
) -> None:
    async with running_plane(
        control_plane, tmp_path, namespace, events_queue_size=2, events_max_clients=1
    ) as plane:
        hub = plane.app[EXPLORER_KEY].hub
        url = f"{plane.url}/api/v1/events/stream?kinds=nodes&snapshot=false"
        async with plane.http.get(url, headers=plane.headers(Role.VIEWER)) as response:
            assert (await read_frame(response)).event == "synced"
            status, body = await plane.call("GET", "/api/v1/events/stream")
            assert status == 503
            assert "limit (--events-max-clients) is 1" in body["error"]
            assert plane.last_audit("streamEvents")["outcome"] == "failed"
            # Five changes at once, before the stream task can run: more than its queue.
            for index in range(5):
                hub.publish("nodes", "ADDED", {"metadata": {"name": f"burst-{index}"}})
            received = [await read_frame(response) for _ in range(3)]
            assert [f.event for f in received] == ["node", "node", "overflow"]
            assert "fell more than 2 events behind" in received[2].data["error"]
            with pytest.raises(EOFError):
                await read_frame(response)
        status, body = await plane.call("GET", "/api/v1/events/stream?kinds=jobs")
        assert status == 400
        assert "kinds 'jobs' is not a comma-separated list of nodes, pods" in body["error"]


# -- agent panels and trace -------------------------------------------------------------------


def start_sleeper(cgroup: Path) -> subprocess.Popen[bytes]:
    """A process that sleeps in a loop, moved into ``cgroup``."""
    process = subprocess.Popen([sys.executable, "-c", SLEEPER])
    (cgroup / "cgroup.procs").write_text(str(process.pid))
    return process


def agent_pod(name: str, node: str) -> dict[str, Any]:
    """The API object of the agent pod on ``node``, as the Helm chart labels it."""
    manifest = bound_pod(name, node, labels={"app.kubernetes.io/component": "agent"})
    return manifest


@pytest.mark.root
@pytest.mark.skipif(not is_root(), reason="needs root for cgroups and tracefs")
@pytest.mark.skipif(find_tracefs(None) is None, reason="needs tracefs mounted")
async def test_agent_panels_and_trace(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    ensure_priority_classes(api_client)
    node = f"agent-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node], cpu="2")
    manifest = pod_manifest("api", cpu_request="500m", priority_class="temper-critical")
    manifest["spec"]["nodeName"] = node
    uid = core_api.create_namespaced_pod(namespace, manifest).metadata.uid
    # The agent's pod object, found by label; its IP is where the agent process listens.
    core_api.create_namespaced_pod(namespace, agent_pod("temper-agent-x", node))
    core_api.patch_namespaced_pod_status(
        "temper-agent-x", namespace, {"status": {"phase": "Running", "podIP": "127.0.0.1"}}
    )
    port = free_port()
    relative = pod_cgroup_relative_path(uid, QosClass.BURSTABLE, CgroupDriver.CGROUPFS)
    pod_path = f"/api/v1/namespaces/{namespace}/pods/api"
    with cgroup_tree([f"{relative}/c1"], {}) as (container_dir,):
        process = start_sleeper(container_dir)
        try:
            with running_agent(
                control_plane, node, tmp_path / "agent", "--cgroup-driver", "cgroupfs",
                "--port", str(port),
            ):  # fmt: skip
                async with running_plane(
                    control_plane, tmp_path, namespace, agent_namespace=namespace,
                    agent_port=port,
                ) as plane:  # fmt: skip

                    async def observed() -> dict[str, Any] | None:
                        status, body = await plane.call("GET", pod_path + "/performance")
                        return body if status == 200 and body["observed"] else None

                    panel = await eventually(observed, timeout_seconds=60)
                    assert panel["agent"]["url"] == f"http://127.0.0.1:{port}/observe"
                    assert panel["agent"]["source"] == "procfs"
                    (container,) = panel["pod"]["containers"]
                    assert [t["tid"] for t in container["threads"]] == [process.pid]
                    assert panel["pod"]["tier"] == "critical"
                    assert panel["tierTotals"]["pods"] >= 1
                    assert plane.last_audit("getPodPerformance")["outcome"] == "allowed"

                    async def scheduling() -> dict[str, Any] | None:
                        status, body = await plane.call("GET", pod_path + "/scheduling")
                        load = body.get("nodeTierLoad") or {} if status == 200 else {}
                        return body if load.get("podTier") else None

                    panel = await eventually(scheduling, WAIT_SECONDS)
                    assert panel["layer"]["reported"] == "critical"
                    assert panel["layer"]["matchedBy"] == "cgroup"
                    assert panel["layer"]["agentUrl"] == f"http://127.0.0.1:{port}/config"
                    assert panel["priorityClass"]["value"] == 100000
                    assert panel["nodeTierLoad"]["podTier"]["requestedCpuMillicores"] == 500
                    status, detail = await plane.call("GET", pod_path)
                    assert detail["layer"]["reported"] == detail["layer"]["expected"] == "critical"

                    trace_path = f"/api/v1/nodes/{node}/trace"
                    status, _body = await plane.call("GET", trace_path + "?seconds=1")
                    assert status == 403
                    long_capture = asyncio.create_task(
                        plane.call("GET", trace_path + "?seconds=3", Role.OPERATOR)
                    )
                    await asyncio.sleep(1.0)
                    status, body = await plane.call("GET", trace_path + "?seconds=1", Role.OPERATOR)
                    assert status == 409
                    assert "already running" in body["error"]
                    assert plane.last_audit("downloadNodeTrace")["outcome"] == "failed"
                    status, text = await long_capture
                    assert status == 200
                    assert text.startswith("# tracer: nop")
                    assert "sched_switch" in text
                    audit = [e for e in plane.audit() if e["operation"] == "downloadNodeTrace"]
                    assert [e["outcome"] for e in audit] == ["denied", "failed", "allowed"]

                # The same agent through --agent-url-template and the Node's InternalIP.
                core_api.patch_node_status(
                    node, {"status": {"addresses": [{"type": "InternalIP",
                                                      "address": "127.0.0.1"}]}},
                )  # fmt: skip
                async with running_plane(
                    control_plane, tmp_path, namespace, agent_namespace="temper-none",
                    agent_url_template=f"http://{{node_ip}}:{port}",
                ) as plane:  # fmt: skip
                    status, panel = await plane.call("GET", pod_path + "/performance")
                    assert status == 200, panel
                    assert panel["observed"] is True
        finally:
            stop_all([process])
    delete_nodes(core_api, [node])


async def test_agent_errors_are_502_and_504(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node_name: str,
    tmp_path: Path,
) -> None:
    core_api.create_namespaced_pod(namespace, bound_pod("web", node_name))
    path = f"/api/v1/namespaces/{namespace}/pods/web/performance"
    async with running_plane(control_plane, tmp_path, namespace, agent_namespace=namespace) as p:
        status, body = await p.call("GET", path)
        assert status == 502
        assert f"no running agent pod on node {node_name}" in body["error"]
        status, body = await p.call("GET", f"/api/v1/nodes/{node_name}/trace", Role.OPERATOR)
        assert status == 502

    closed_port = free_port()  # nothing listens there
    async with running_plane(
        control_plane, tmp_path, namespace, agent_url_template=f"http://127.0.0.1:{closed_port}"
    ) as p:
        status, body = await p.call("GET", path)
        assert status == 502
        url = f"http://127.0.0.1:{closed_port}/observe"
        assert f"agent of node {node_name} at {url} is " in body["error"]
        assert "unreachable" in body["error"]

    # A listener that accepts connections and never responds plays a hung agent (a fake).
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        async with running_plane(
            control_plane, tmp_path, namespace, agent_timeout_seconds=0.5,
            agent_url_template=f"http://127.0.0.1:{silent.getsockname()[1]}",
        ) as p:  # fmt: skip
            status, body = await p.call("GET", path)
            assert status == 504
            assert "did not answer within 0.5 s (--agent-timeout-seconds)" in body["error"]
            entry = p.last_audit("getPodPerformance")
            assert (entry["outcome"], entry["status"]) == ("failed", 504)
            status, detail = await p.call("GET", f"/api/v1/namespaces/{namespace}/pods/web")
            assert status == 200  # the pod detail keeps working without its agent
            assert "did not answer" in detail["layer"]["agentError"]
    finally:
        silent.close()


# -- streams in a `temper plane serve` process ------------------------------------------------


@contextmanager
def plane_process(
    control_plane: LocalControlPlane, workdir: Path, namespace: str, *extra: str
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """Start `temper plane serve` on a free loopback port; yield its URL, an admin token and
    the process. Unlike the in-process server, it does not cancel handlers whose client
    went away, as in production."""
    database = workdir / "serve.sqlite3"
    token = create_tokens(database, {"ci": Role.ADMIN})["ci"]
    with plane_subprocess(
        control_plane, database, namespace, "--hub-key-path", str(workdir / "hub.key"), *extra
    ) as (url, process):
        yield url, token, process


async def test_streams_end_with_client_or_plane(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node_name: str,
    tmp_path: Path,
) -> None:
    async with FakeKubelet(tmp_path, ["first"], interval_seconds=0.1) as kubelet:
        point_node_at_kubelet(core_api, node_name, kubelet.port)
        core_api.create_namespaced_pod(namespace, bound_pod("web", node_name))
        with plane_process(control_plane, tmp_path, namespace, "--events-max-clients", "1") as (
            base,
            token,
            process,
        ):
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    try:
                        async with http.get(f"{base}/healthz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await eventually(ready, WAIT_SECONDS)
                stream = f"{base}/api/v1/events/stream?kinds=nodes"

                async def open_stream() -> aiohttp.ClientResponse:
                    """Open the event stream once the one slot is free again: a closed
                    stream gives it back when the plane notices the disconnect (else 503)."""
                    deadline = time.monotonic() + 10
                    while True:
                        response = await http.get(stream, headers=headers)
                        if response.status == 200 or time.monotonic() > deadline:
                            return response
                        response.release()
                        await asyncio.sleep(0.2)

                for _ in range(2):
                    response = await open_stream()
                    assert response.status == 200
                    assert (await next_event(response, "synced")).data["snapshot"] >= 1
                    response.close()

                logs = f"{base}/api/v1/namespaces/{namespace}/pods/web/containers/app/logs"
                async with http.get(logs + "?follow=true", headers=headers) as response:
                    assert response.status == 200
                    assert await response.content.readline() == b"first\n"
                    assert await response.content.readline() == b"tick 1\n"
                await asyncio.wait_for(kubelet.follow_ended.wait(), 10)

                # An open stream does not hold up the shutdown.
                response = await open_stream()
                await next_event(response, "synced")
                started = time.monotonic()
                process.terminate()
                with pytest.raises(EOFError):
                    while True:
                        await read_frame(response, timeout_seconds=15)
                ended = time.monotonic() - started
                response.close()
                assert await asyncio.to_thread(process.wait, 15) == 0
    assert ended < 10
