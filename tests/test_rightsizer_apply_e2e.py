"""The tracking applier against the real kube-apiserver and kube-scheduler.

No kubelet runs: kube-scheduler binds the pods to a Node object and nothing starts them, so
no resize is ever actuated. The API server still validates and stores every ``pods/resize``
patch in the pod's spec, and that stored spec is what these tests check. No controller
manager runs either, so each test creates the Deployment, its ReplicaSet and the pods
itself, linked by ownerReferences as the controllers would link them. The pods tolerate a
taint of their own, so pods of other tests never land on this module's Node.
"""

import asyncio
import logging
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from kubernetes import client as k8s

from rightsizer.annotation import ContainerAdvice, Status, WorkloadRecommendation
from rightsizer.applier import Action, PodOutcome, TrackingApplier
from rightsizer.applyservice import serve_applier
from rightsizer.owners import Workload
from rightsizer.resizeplan import ContainerChange, PodPlan, SkipReason
from rightsizer.resizer import REPORTING_CONTROLLER, describe_failure, resize_pod
from rightsizer.settings import RightsizerSettings
from rightsizer.store import HistoryStore
from temper.annotations import RECOMMENDATION, RIGHTSIZE_APPLIED, RIGHTSIZE_APPLY_LABEL
from temper.controlplane import LocalControlPlane, node_manifest
from temper.errors import KubernetesError, TemperError
from temper.kube import KubeClient
from tests.conftest import REPO_ROOT
from tests.kubehelpers import bound_node, wait_for
from tests.observesnapshots import FakePod, FakeThread
from tests.test_rightsizer_e2e import collect_from_fake_agent

pytestmark = pytest.mark.controlplane

TAINT_KEY = "temper.codes/test-rightsize-apply"
TEMPLATE_CPU = "2"


@pytest.fixture(scope="module")
def node(api_client: k8s.ApiClient) -> Iterator[str]:
    """A Ready Node, tainted so that only this module's pods are bound to it."""
    core = k8s.CoreV1Api(api_client)
    name = f"rightsize-{uuid.uuid4().hex[:8]}"
    manifest = node_manifest(name, cpu="16", labels={TAINT_KEY: name})
    manifest["spec"]["taints"] = [{"key": TAINT_KEY, "value": name, "effect": "NoSchedule"}]
    core.create_node(manifest)
    yield name
    core.delete_node(name)


def container(
    name: str = "app",
    cpu_request: str = TEMPLATE_CPU,
    cpu_limit: str | None = None,
    memory: str | None = None,
) -> dict[str, Any]:
    requests = {"cpu": cpu_request}
    limits: dict[str, str] = {}
    if cpu_limit is not None:
        limits["cpu"] = cpu_limit
    if memory is not None:
        requests["memory"] = limits["memory"] = memory
    return {
        "name": name,
        "image": "registry.invalid/app:1",
        "resources": {"requests": requests, "limits": limits},
    }


def pod_spec(node: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "containers": containers,
        "nodeSelector": {TAINT_KEY: node},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }


def owner_reference(kind: str, obj: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": obj.metadata.name,
        "uid": obj.metadata.uid,
        "controller": True,
    }


def create_deployment(
    api_client: k8s.ApiClient,
    namespace: str,
    node: str,
    name: str,
    containers: list[dict[str, Any]] | None = None,
    *,
    replicas: int = 1,
    label: str | None = None,
) -> list[str]:
    """Create a Deployment, its ReplicaSet and bound pods; return the pod names."""
    apps = k8s.AppsV1Api(api_client)
    core = k8s.CoreV1Api(api_client)
    selector = {"app": name}
    spec = pod_spec(node, containers or [container()])
    workload_spec = {
        "replicas": replicas,
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": selector}, "spec": spec},
    }
    metadata: dict[str, Any] = {"name": name}
    if label is not None:
        metadata["labels"] = {RIGHTSIZE_APPLY_LABEL: label}
    deployment = apps.create_namespaced_deployment(
        namespace, {"metadata": metadata, "spec": workload_spec}
    )

    replica_set = apps.create_namespaced_replica_set(
        namespace,
        {
            "metadata": {
                "name": f"{name}-5d8f",
                "labels": selector,
                "ownerReferences": [owner_reference("Deployment", deployment)],
            },
            "spec": workload_spec,
        },
    )

    names = []
    for index in range(replicas):
        pod_name = f"{name}-5d8f-{index}"
        pod_metadata = {
            "name": pod_name,
            "labels": selector,
            "ownerReferences": [owner_reference("ReplicaSet", replica_set)],
        }
        core.create_namespaced_pod(namespace, {"metadata": pod_metadata, "spec": spec})
        names.append(pod_name)
    for pod_name in names:
        wait_for(lambda pod_name=pod_name: bound_node(core, namespace, pod_name))
    return names


def recommendation(
    tracking_m: int,
    *,
    containers: tuple[str, ...] = ("app",),
    status: Status = Status.PROPOSED,
    age_seconds: float = 0.0,
) -> WorkloadRecommendation:
    now = time.time() - age_seconds
    advice = ContainerAdvice(
        request_millicores=1500,
        limit_millicores=None,
        limit_reason="",
        current_request_millicores=2000,
        current_limit_millicores=None,
        confidence=1.0,
        basis="window",
        tracking_request_millicores=tracking_m,
    )
    value = WorkloadRecommendation(
        timestamp_seconds=now,
        window_start_seconds=now - 86400,
        window_end_seconds=now,
        observed_seconds=86400,
        pods=1,
        containers=dict.fromkeys(containers, advice),
        tracking_seconds=300,
    )
    return value if status is Status.PROPOSED else value.decide(status, now, None)


def annotate(
    api_client: k8s.ApiClient, namespace: str, name: str, value: WorkloadRecommendation
) -> None:
    patch = {"metadata": {"annotations": {RECOMMENDATION: value.encode()}}}
    k8s.AppsV1Api(api_client).patch_namespaced_deployment(name, namespace, patch)


def label_namespace(core: k8s.CoreV1Api, namespace: str, value: str = "tracking") -> None:
    core.patch_namespace(namespace, {"metadata": {"labels": {RIGHTSIZE_APPLY_LABEL: value}}})


def settings(control_plane: LocalControlPlane, **fields: Any) -> RightsizerSettings:
    return RightsizerSettings(
        kubeconfig=str(control_plane.kubeconfig), apply_tracking_enabled=True, **fields
    )


async def run_pass(
    control_plane: LocalControlPlane, **fields: Any
) -> tuple[list[PodOutcome], TrackingApplier]:
    """Run one pass without history, on the annotations as the tests wrote them."""
    client = await KubeClient.connect(str(control_plane.kubeconfig))
    try:
        applier = TrackingApplier(settings(control_plane, **fields), client, None)
        return await applier.run_pass(), applier
    finally:
        await client.close()


def cpu_request(core: k8s.CoreV1Api, namespace: str, pod: str, index: int = 0) -> str:
    read = core.read_namespaced_pod(pod, namespace)
    value: str = read.spec.containers[index].resources.requests["cpu"]
    return value


def applied(core: k8s.CoreV1Api, namespace: str, pod: str) -> dict[str, Any] | None:
    annotations = core.read_namespaced_pod(pod, namespace).metadata.annotations or {}
    raw = annotations.get(RIGHTSIZE_APPLIED)
    return None if raw is None else dict(orjson.loads(raw))


def events(core: k8s.CoreV1Api, namespace: str, pod: str) -> list[tuple[str, str, str]]:
    """The applier's Events about a pod (kube-scheduler posts others)."""
    listed = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}")
    return [
        (e.type, e.reason, e.message or "")
        for e in listed.items
        if e.reporting_component == REPORTING_CONTROLLER
    ]


def outcome_of(outcomes: list[PodOutcome], pod: str) -> PodOutcome:
    [found] = [o for o in outcomes if o.plan.name == pod]
    return found


def sample(applier: TrackingApplier, name: str, **labels: str) -> float | None:
    value: float | None = applier.metrics.registry.get_sample_value(name, labels)
    return value


async def test_opted_in_pods_resized(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    label_namespace(core_api, namespace)
    pods = create_deployment(api_client, namespace, node, "web", replicas=2)
    annotate(api_client, namespace, "web", recommendation(600))

    outcomes, applier = await run_pass(control_plane)

    mine = [(o.plan.name, o.action) for o in outcomes if o.plan.namespace == namespace]
    assert mine == [(p, Action.RESIZED) for p in pods]
    for pod in pods:
        assert cpu_request(core_api, namespace, pod) == "600m"
        record = applied(core_api, namespace, pod)
        assert record is not None
        assert record["containers"]["app"]["old_m"] == 2000
        assert record["containers"]["app"]["new_m"] == 600
        assert record["containers"]["app"]["orig_m"] == 2000
        assert abs(record["containers"]["app"]["ts"] - time.time()) < 60
        [(kind, reason, message)] = events(core_api, namespace, pod)
        assert (kind, reason) == ("Normal", "TrackingRequestApplied")
        assert "app 2000m -> 600m" in message
        assert f"deployment/web -n {namespace}" in message
    assert sample(applier, "temper_rightsize_resized_pods_total") == 2
    assert sample(applier, "temper_rightsize_resized_containers_total", direction="down") == 2

    # The template keeps the reviewed request, so a rollout restores it.
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", namespace)
    assert deployment.spec.template.spec.containers[0].resources.requests == {"cpu": "2"}


async def test_pod_without_opt_in_untouched(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    [pod] = create_deployment(api_client, namespace, node, "web")
    annotate(api_client, namespace, "web", recommendation(600))

    outcomes, _ = await run_pass(control_plane)

    assert [o for o in outcomes if o.plan.namespace == namespace] == []
    assert cpu_request(core_api, namespace, pod) == TEMPLATE_CPU
    assert applied(core_api, namespace, pod) is None
    assert events(core_api, namespace, pod) == []


async def test_workload_label_wins(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    # Opted in by its own label in a namespace without the label.
    [web] = create_deployment(api_client, namespace, node, "web", label="tracking")
    annotate(api_client, namespace, "web", recommendation(600))
    # Opted out by its own label, then its namespace opts in.
    [batch] = create_deployment(api_client, namespace, node, "batch", label="off")
    annotate(api_client, namespace, "batch", recommendation(600))
    # A pod without a controller carries the label itself.
    bare = k8s.CoreV1Api(api_client).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "bare", "labels": {RIGHTSIZE_APPLY_LABEL: "tracking"}},
            "spec": pod_spec(node, [container()]),
        },
    )
    wait_for(lambda: bound_node(core_api, namespace, "bare"))
    patch = {"metadata": {"annotations": {RECOMMENDATION: recommendation(700).encode()}}}
    core_api.patch_namespaced_pod(bare.metadata.name, namespace, patch)

    outcomes, _ = await run_pass(control_plane)
    assert cpu_request(core_api, namespace, web) == "600m"
    assert cpu_request(core_api, namespace, "bare") == "700m"
    assert cpu_request(core_api, namespace, batch) == TEMPLATE_CPU

    label_namespace(core_api, namespace)
    outcomes, _ = await run_pass(control_plane)
    mine = {o.plan.name for o in outcomes if o.plan.namespace == namespace}
    assert batch not in mine
    assert cpu_request(core_api, namespace, batch) == TEMPLATE_CPU


async def test_bounds_hold_on_api_server(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    label_namespace(core_api, namespace)
    [limited] = create_deployment(
        api_client, namespace, node, "limited", [container(cpu_request="500m", cpu_limit="1")]
    )
    annotate(api_client, namespace, "limited", recommendation(1500))
    [floored] = create_deployment(
        api_client, namespace, node, "floored", [container(cpu_request="100m")]
    )
    annotate(api_client, namespace, "floored", recommendation(3))
    # At its limit this pod would turn Guaranteed: memory requests equal limits already.
    [near] = create_deployment(
        api_client,
        namespace,
        node,
        "near",
        [container(cpu_request="500m", cpu_limit="1", memory="64Mi")],
    )
    annotate(api_client, namespace, "near", recommendation(1500))

    outcomes, _ = await run_pass(control_plane, min_cpu_millicores=20)

    assert all(o.action is Action.RESIZED for o in outcomes if o.plan.namespace == namespace)
    assert cpu_request(core_api, namespace, limited) == "1"
    assert cpu_request(core_api, namespace, floored) == "20m"
    assert cpu_request(core_api, namespace, near) == "999m"
    assert core_api.read_namespaced_pod(near, namespace).status.qos_class == "Burstable"


async def test_cases_left_unchanged(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    label_namespace(core_api, namespace)
    cases = {
        "steady": (recommendation(1900), [container()], SkipReason.WITHIN_HYSTERESIS),
        "pinned": (
            recommendation(600),
            [container(cpu_request="1", cpu_limit="1", memory="64Mi")],
            SkipReason.GUARANTEED,
        ),
        "refused": (
            recommendation(600, status=Status.DISMISSED),
            [container()],
            SkipReason.DISMISSED,
        ),
        "stale": (recommendation(600, age_seconds=301), [container()], SkipReason.EXPIRED),
    }
    pods = {}
    for name, (value, containers, _reason) in cases.items():
        [pods[name]] = create_deployment(api_client, namespace, node, name, containers)
        annotate(api_client, namespace, name, value)
    before = {name: cpu_request(core_api, namespace, pod) for name, pod in pods.items()}

    outcomes, applier = await run_pass(control_plane)

    for name, (_value, _containers, reason) in cases.items():
        outcome = outcome_of(outcomes, pods[name])
        assert outcome.action is Action.SKIPPED, name
        assert [s.reason for s in outcome.plan.skips] == [reason], name
        assert cpu_request(core_api, namespace, pods[name]) == before[name], name
        assert applied(core_api, namespace, pods[name]) is None, name
        assert events(core_api, namespace, pods[name]) == [], name
        assert sample(applier, "temper_rightsize_resize_skips_total", reason=reason.value) == 1


async def test_rate_limit_defers_rest(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    label_namespace(core_api, namespace)
    [small_down] = create_deployment(api_client, namespace, node, "a")
    annotate(api_client, namespace, "a", recommendation(1500))
    [big_down] = create_deployment(api_client, namespace, node, "b")
    annotate(api_client, namespace, "b", recommendation(400))
    [up] = create_deployment(api_client, namespace, node, "c", [container(cpu_request="200m")])
    annotate(api_client, namespace, "c", recommendation(900))

    outcomes, applier = await run_pass(control_plane, apply_max_resized_pods=2)

    actions = {o.plan.name: o.action for o in outcomes if o.plan.namespace == namespace}
    assert actions == {up: Action.RESIZED, big_down: Action.RESIZED, small_down: Action.DEFERRED}
    assert "rate limit" in outcome_of(outcomes, small_down).message
    assert cpu_request(core_api, namespace, small_down) == TEMPLATE_CPU
    assert sample(applier, "temper_rightsize_resize_skips_total", reason="rate-limited") == 1

    outcomes, _ = await run_pass(control_plane, apply_max_resized_pods=2)
    assert outcome_of(outcomes, small_down).action is Action.RESIZED
    assert cpu_request(core_api, namespace, small_down) == "1500m"


def hand_plan(core: k8s.CoreV1Api, namespace: str, pod: str, new_m: int) -> PodPlan:
    """A plan written by hand, bypassing the bounds of plan_pod."""
    read = core.read_namespaced_pod(pod, namespace)
    return PodPlan(
        namespace=namespace,
        name=pod,
        uid=read.metadata.uid,
        resource_version=read.metadata.resource_version,
        workload=Workload("Deployment", namespace, "web"),
        changes=[ContainerChange("app", 500, new_m, new_m)],
    )


async def test_resize_above_limit_rejected(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    [pod] = create_deployment(
        api_client, namespace, node, "web", [container(cpu_request="500m", cpu_limit="1")]
    )
    plan = hand_plan(core_api, namespace, pod, 1500)
    client = await KubeClient.connect(str(control_plane.kubeconfig))
    try:
        with pytest.raises(KubernetesError) as raised:
            await resize_pod(client, plan)
        assert raised.value.status == 422
        message = describe_failure(raised.value)
        assert message.startswith("the API server rejected the resize (HTTP 422)")
        assert "must be less than or equal to cpu limit" in message

        applier = TrackingApplier(settings(control_plane), client, None)
        outcome = await applier.execute(plan, None)
    finally:
        await client.close()
    assert outcome.action is Action.FAILED
    assert "must be less than or equal to cpu limit" in outcome.message
    assert sample(applier, "temper_rightsize_resize_failures_total", reason="rejected") == 1
    assert cpu_request(core_api, namespace, pod) == "500m"
    assert applied(core_api, namespace, pod) is None
    [(kind, reason, note)] = events(core_api, namespace, pod)
    assert (kind, reason) == ("Warning", "TrackingResizeFailed")
    assert "HTTP 422" in note


async def test_changed_pod_conflicts(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    [pod] = create_deployment(api_client, namespace, node, "web", [container(cpu_request="500m")])
    plan = hand_plan(core_api, namespace, pod, 300)
    # Someone resizes the pod after the plan read it.
    patch = {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "800m"}}}]}}
    core_api.patch_namespaced_pod_resize(pod, namespace, patch)

    client = await KubeClient.connect(str(control_plane.kubeconfig))
    try:
        applier = TrackingApplier(settings(control_plane), client, None)
        outcome = await applier.execute(plan, None)
    finally:
        await client.close()
    assert outcome.action is Action.FAILED
    assert "HTTP 409 Conflict" in outcome.message
    assert sample(applier, "temper_rightsize_resize_failures_total", reason="conflict") == 1
    assert cpu_request(core_api, namespace, pod) == "800m"


async def test_infeasible_resize_reported(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    label_namespace(core_api, namespace)
    [pod] = create_deployment(api_client, namespace, node, "web", [container(cpu_request="200m")])
    annotate(api_client, namespace, "web", recommendation(900))
    # The condition as a kubelet writes it when a resize cannot fit on its node.
    condition = {
        "type": "PodResizePending",
        "status": "True",
        "reason": "Infeasible",
        "message": "Node didn't have enough capacity: cpu, requested: 20000, capacity: 16000",
    }
    core_api.patch_namespaced_pod_status(pod, namespace, {"status": {"conditions": [condition]}})

    client = await KubeClient.connect(str(control_plane.kubeconfig))
    try:
        applier = TrackingApplier(settings(control_plane), client, None)
        with caplog.at_level(logging.WARNING, logger="rightsizer.applier"):
            outcomes = await applier.run_pass()
            await applier.run_pass()
    finally:
        await client.close()

    outcome = outcome_of(outcomes, pod)
    assert outcome.action is Action.SKIPPED
    [skip] = outcome.plan.skips
    assert skip.reason is SkipReason.RESIZE_INFEASIBLE
    assert "enough capacity" in skip.detail
    assert sample(applier, "temper_rightsize_resize_pending_pods", reason="Infeasible") == 1
    assert cpu_request(core_api, namespace, pod) == "200m"
    # Reported when it appears, not again in the next pass.
    reports = [
        r for r in caplog.records if r.getMessage() == "the kubelet has not applied a resize"
    ]
    assert len(reports) == 1
    assert reports[0].pod == f"{namespace}/{pod}"


async def test_invalid_label_reported(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    label_namespace(core_api, namespace, "yes")
    [pod] = create_deployment(api_client, namespace, node, "web")
    annotate(api_client, namespace, "web", recommendation(600))

    try:
        with caplog.at_level(logging.WARNING, logger="rightsizer.applier"):
            outcomes, _ = await run_pass(control_plane)
    finally:
        # The namespace stays (no namespace controller runs); later passes need not warn.
        label_namespace(core_api, namespace, "off")

    assert [o for o in outcomes if o.plan.namespace == namespace] == []
    assert cpu_request(core_api, namespace, pod) == TEMPLATE_CPU
    [report] = [r for r in caplog.records if getattr(r, "object", None) == f"namespace/{namespace}"]
    assert report.getMessage() == "invalid opt-in label; set it to tracking or off, or remove it"
    assert "'yes'" in report.problem


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_service_serves_metrics(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    tmp_path: Path,
) -> None:
    label_namespace(core_api, namespace)
    [pod] = create_deployment(api_client, namespace, node, "web")
    annotate(api_client, namespace, "web", recommendation(600))
    history = tmp_path / "history.sqlite"
    HistoryStore(history).close()
    port = free_port()
    service_settings = settings(control_plane, history_path=str(history), port=port)

    stop = asyncio.Event()
    task = asyncio.create_task(serve_applier(service_settings, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                await asyncio.sleep(0.1)
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        text = await response.text()
                except aiohttp.ClientConnectionError:
                    continue
                if "temper_rightsize_resized_pods_total 1.0" in text:
                    break
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert "temper_rightsize_resized_pods_total 1.0" in text
    assert "temper_rightsize_apply_passes_total 1.0" in text
    assert cpu_request(core_api, namespace, pod) == "600m"


async def test_service_port_in_use(control_plane: LocalControlPlane, tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    HistoryStore(history).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service_settings = settings(control_plane, history_path=str(history), port=port)
        with pytest.raises(TemperError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve_applier(service_settings, asyncio.Event())


def temper(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "temper.cli", "rightsize", *args]
    command += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def documented_cluster_role() -> dict[str, Any]:
    """The ClusterRole that docs/rightsizer.md gives for `temper rightsize apply`."""
    text = (REPO_ROOT / "docs" / "rightsizer.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    [role] = [yaml.safe_load(b) for b in blocks if "kind: ClusterRole" in b]
    assert role["metadata"]["name"] == "temper-rightsize-apply"
    return dict(role)


def apply_account_kubeconfig(
    control_plane: LocalControlPlane, core: k8s.CoreV1Api, namespace: str, directory: Path
) -> Path:
    """A kubeconfig with the token of a ServiceAccount bound to the documented ClusterRole."""
    admin = control_plane.admin_client()
    role = documented_cluster_role()
    role["metadata"]["name"] = f"temper-rightsize-apply-{namespace}"
    admin.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "applier"}})

    binding = {
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "applier", "namespace": namespace}],
    }
    admin.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)

    review = admin.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/applier/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": control_plane.server,
                    "certificate-authority": str(control_plane.ca_path),
                },
            }
        ],
        "users": [{"name": "applier", "user": {"token": review["status"]["token"]}}],
        "contexts": [{"name": "applier", "context": {"cluster": "local", "user": "applier"}}],
        "current-context": "applier",
    }
    path = directory / "applier.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def delete_cluster_role(control_plane: LocalControlPlane, namespace: str) -> None:
    admin = control_plane.admin_client()
    name = f"temper-rightsize-apply-{namespace}"
    admin.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
    admin.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")


async def test_apply_command_from_history(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    label_namespace(core_api, namespace)
    [pod] = create_deployment(api_client, namespace, node, "web")
    uid = core_api.read_namespaced_pod(pod, namespace).metadata.uid
    workers = [FakeThread(10 + i, f"worker-{i}", 0.1) for i in range(4)]
    history = tmp_path / "history.sqlite"
    await collect_from_fake_agent([FakePod(namespace, pod, uid, workers)], history)
    common = ["apply", "--ticks", "1", "--history-path", str(history)]
    # apply runs with the permissions docs/rightsizer.md lists, a person with the admin's.
    account = apply_account_kubeconfig(control_plane, core_api, namespace, tmp_path)
    request.addfinalizer(lambda: delete_cluster_role(control_plane, namespace))

    # Without --apply-tracking-enabled, apply only reports.
    dry = temper(account, *common)
    assert dry.returncode == 0, dry.stderr
    assert f"{namespace}  {pod}" in dry.stdout
    assert "would resize" in dry.stdout
    assert cpu_request(core_api, namespace, pod) == TEMPLATE_CPU
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", namespace)
    assert RECOMMENDATION not in (deployment.metadata.annotations or {})

    done = temper(account, *common, "--apply-tracking-enabled")
    assert done.returncode == 0, done.stderr
    assert "resized" in done.stdout
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", namespace)
    value = orjson.loads(deployment.metadata.annotations[RECOMMENDATION])
    tracking_m = value["containers"]["app"]["trk_req_m"]
    # Four workers of 0.1 core each; intervals are whole milliseconds, so allow a little.
    assert 395 <= tracking_m <= 410
    assert cpu_request(core_api, namespace, pod) == f"{tracking_m}m"
    assert [e[:2] for e in events(core_api, namespace, pod)] == [
        ("Normal", "TrackingRequestApplied")
    ]
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert [line for line in warnings if namespace in line] == []

    # A dismissal survives the refresh, and the applier leaves the pod alone.
    dismissed = temper(control_plane.kubeconfig, "dismiss", "deployment/web", "-n", namespace)
    assert dismissed.returncode == 0, dismissed.stderr
    patch = {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "2"}}}]}}
    core_api.patch_namespaced_pod_resize(pod, namespace, patch)
    again = temper(account, *common, "--apply-tracking-enabled")
    assert again.returncode == 0, again.stderr
    assert "skipped (dismissed)" in again.stdout
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", namespace)
    assert orjson.loads(deployment.metadata.annotations[RECOMMENDATION])["status"] == "dismissed"
    assert cpu_request(core_api, namespace, pod) == TEMPLATE_CPU
