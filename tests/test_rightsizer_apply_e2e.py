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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from kubernetes import client as k8s

from rightsizer.annotation import Status, WorkloadRecommendation
from rightsizer.applier import Action, PodOutcome, TrackingApplier
from rightsizer.applyservice import serve_applier
from rightsizer.owners import Workload
from rightsizer.resizeplan import ContainerChange, PodPlan, SkipReason
from rightsizer.resizer import REPORTING_CONTROLLER, describe_failure, resize_pod
from rightsizer.settings import RightsizerSettings
from rightsizer.store import HistoryStore
from temper.annotations import RECOMMENDATION, RIGHTSIZE_APPLIED, RIGHTSIZE_APPLY_LABEL
from temper.controlplane import LocalControlPlane, node_manifest
from temper.controlplane.process import free_port
from temper.errors import KubernetesError, TemperError
from temper.kube import KubeClient
from tests.conftest import REPO_ROOT
from tests.kubehelpers import bound_node, wait_for
from tests.observesnapshots import FakePod, FakeThread
from tests.rightsizerharness import DEFAULT_CPU_REQUEST, container, tracking_recommendation
from tests.test_rightsizer_e2e import collect_from_fake_agent

pytestmark = pytest.mark.controlplane

TAINT_KEY = "temper.codes/test-rightsize-apply"
TEMPLATE_CPU = DEFAULT_CPU_REQUEST


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


def recommendation(
    tracking_m: int,
    *,
    containers: tuple[str, ...] = ("app",),
    status: Status = Status.PROPOSED,
    age_seconds: float = 0.0,
) -> WorkloadRecommendation:
    now = time.time() - age_seconds
    value = tracking_recommendation(
        tracking_m, request_m=1500, computed=now, window_end=now, containers=containers
    )
    return value if status is Status.PROPOSED else value.decide(status, now, None)


def settings(control_plane: LocalControlPlane, **fields: Any) -> RightsizerSettings:
    return RightsizerSettings(
        kubeconfig=str(control_plane.kubeconfig), apply_tracking_enabled=True, **fields
    )


def outcome_of(outcomes: list[PodOutcome], pod: str) -> PodOutcome:
    [found] = [o for o in outcomes if o.plan.name == pod]
    return found


def sample(applier: TrackingApplier, name: str, **labels: str) -> float | None:
    value: float | None = applier.metrics.registry.get_sample_value(name, labels)
    return value


@dataclass
class Cluster:
    """The control plane with one test's namespace and this module's Node."""

    control_plane: LocalControlPlane
    api_client: k8s.ApiClient
    core: k8s.CoreV1Api
    namespace: str
    node: str

    def deploy(
        self,
        name: str,
        containers: list[dict[str, Any]] | None = None,
        *,
        replicas: int = 1,
        label: str | None = None,
        advice: WorkloadRecommendation | None = None,
    ) -> list[str]:
        """Create a Deployment, its ReplicaSet and bound pods, and return the pod names.

        ``advice`` goes into the Deployment's recommendation annotation once the pods are bound.
        """
        apps = k8s.AppsV1Api(self.api_client)
        selector = {"app": name}
        spec = pod_spec(self.node, containers or [container()])
        workload_spec = {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector}, "spec": spec},
        }
        metadata: dict[str, Any] = {"name": name}
        if label is not None:
            metadata["labels"] = {RIGHTSIZE_APPLY_LABEL: label}
        deployment = apps.create_namespaced_deployment(
            self.namespace, {"metadata": metadata, "spec": workload_spec}
        )

        replica_set = apps.create_namespaced_replica_set(
            self.namespace,
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
            self.core.create_namespaced_pod(
                self.namespace, {"metadata": pod_metadata, "spec": spec}
            )
            names.append(pod_name)
        for pod_name in names:
            wait_for(lambda pod_name=pod_name: bound_node(self.core, self.namespace, pod_name))

        if advice is not None:
            patch = {"metadata": {"annotations": {RECOMMENDATION: advice.encode()}}}
            apps.patch_namespaced_deployment(name, self.namespace, patch)
        return names

    def deployment(self, name: str) -> Any:
        return k8s.AppsV1Api(self.api_client).read_namespaced_deployment(name, self.namespace)

    def label_namespace(self, value: str = "tracking") -> None:
        patch = {"metadata": {"labels": {RIGHTSIZE_APPLY_LABEL: value}}}
        self.core.patch_namespace(self.namespace, patch)

    def own(self, outcomes: list[PodOutcome]) -> list[PodOutcome]:
        """Return the outcomes of the pods in this test's namespace."""
        return [o for o in outcomes if o.plan.namespace == self.namespace]

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[KubeClient]:
        client = await KubeClient.connect(str(self.control_plane.kubeconfig))
        try:
            yield client
        finally:
            await client.close()

    async def run_pass(self, **fields: Any) -> tuple[list[PodOutcome], TrackingApplier]:
        """Run one pass without history, on the annotations as the tests wrote them."""
        async with self.connect() as client:
            applier = TrackingApplier(settings(self.control_plane, **fields), client, None)
            return await applier.run_pass(), applier

    async def execute(self, plan: PodPlan) -> tuple[PodOutcome, TrackingApplier]:
        """Execute ``plan`` as a pass would, with the default settings."""
        async with self.connect() as client:
            applier = TrackingApplier(settings(self.control_plane), client, None)
            return await applier.execute(plan, None), applier

    def hand_plan(self, pod: str, new_m: int) -> PodPlan:
        """Return a hand-written plan for ``pod`` that bypasses the bounds of plan_pod."""
        read = self.core.read_namespaced_pod(pod, self.namespace)
        return PodPlan(
            namespace=self.namespace,
            name=pod,
            uid=read.metadata.uid,
            resource_version=read.metadata.resource_version,
            workload=Workload("Deployment", self.namespace, "web"),
            changes=[ContainerChange("app", 500, new_m, new_m)],
        )

    def cpu_request(self, pod: str, index: int = 0) -> str:
        read = self.core.read_namespaced_pod(pod, self.namespace)
        value: str = read.spec.containers[index].resources.requests["cpu"]
        return value

    def applied(self, pod: str) -> dict[str, Any] | None:
        annotations = self.core.read_namespaced_pod(pod, self.namespace).metadata.annotations
        raw = (annotations or {}).get(RIGHTSIZE_APPLIED)
        return None if raw is None else dict(orjson.loads(raw))

    def events(self, pod: str) -> list[tuple[str, str, str]]:
        """Return (type, reason, message) of the Events that the applier posted about ``pod``,
        not those of other components such as kube-scheduler."""
        listed = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={pod}"
        )
        return [
            (e.type, e.reason, e.message or "")
            for e in listed.items
            if e.reporting_component == REPORTING_CONTROLLER
        ]


@pytest.fixture
def cluster(
    control_plane: LocalControlPlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node: str,
) -> Cluster:
    return Cluster(control_plane, api_client, core_api, namespace, node)


async def test_opted_in_pods_resized(cluster: Cluster) -> None:
    cluster.label_namespace()
    pods = cluster.deploy("web", replicas=2, advice=recommendation(600))

    outcomes, applier = await cluster.run_pass()

    mine = [(o.plan.name, o.action) for o in cluster.own(outcomes)]
    assert mine == [(p, Action.RESIZED) for p in pods]
    for pod in pods:
        assert cluster.cpu_request(pod) == "600m"
        record = cluster.applied(pod)
        assert record is not None
        assert record["containers"]["app"]["old_m"] == 2000
        assert record["containers"]["app"]["new_m"] == 600
        assert record["containers"]["app"]["orig_m"] == 2000
        assert abs(record["containers"]["app"]["ts"] - time.time()) < 60
        [(kind, reason, message)] = cluster.events(pod)
        assert (kind, reason) == ("Normal", "TrackingRequestApplied")
        assert "app 2000m -> 600m" in message
        assert f"deployment/web -n {cluster.namespace}" in message
    assert sample(applier, "temper_rightsize_resized_pods_total") == 2
    assert sample(applier, "temper_rightsize_resized_containers_total", direction="down") == 2

    # The template keeps the reviewed request, so a rollout restores it.
    deployment = cluster.deployment("web")
    assert deployment.spec.template.spec.containers[0].resources.requests == {"cpu": "2"}


async def test_pod_without_opt_in_untouched(cluster: Cluster) -> None:
    [pod] = cluster.deploy("web", advice=recommendation(600))

    outcomes, _ = await cluster.run_pass()

    assert cluster.own(outcomes) == []
    assert cluster.cpu_request(pod) == TEMPLATE_CPU
    assert cluster.applied(pod) is None
    assert cluster.events(pod) == []


async def test_workload_label_wins(cluster: Cluster) -> None:
    namespace, core = cluster.namespace, cluster.core
    # Opted in by its own label in a namespace without the label.
    [web] = cluster.deploy("web", label="tracking", advice=recommendation(600))
    # Opted out by its own label, then its namespace opts in.
    [batch] = cluster.deploy("batch", label="off", advice=recommendation(600))
    # A pod without a controller carries the label itself.
    bare = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "bare", "labels": {RIGHTSIZE_APPLY_LABEL: "tracking"}},
            "spec": pod_spec(cluster.node, [container()]),
        },
    )
    wait_for(lambda: bound_node(core, namespace, "bare"))
    patch = {"metadata": {"annotations": {RECOMMENDATION: recommendation(700).encode()}}}
    core.patch_namespaced_pod(bare.metadata.name, namespace, patch)

    outcomes, _ = await cluster.run_pass()
    assert cluster.cpu_request(web) == "600m"
    assert cluster.cpu_request("bare") == "700m"
    assert cluster.cpu_request(batch) == TEMPLATE_CPU

    cluster.label_namespace()
    outcomes, _ = await cluster.run_pass()
    mine = {o.plan.name for o in cluster.own(outcomes)}
    assert batch not in mine
    assert cluster.cpu_request(batch) == TEMPLATE_CPU


async def test_bounds_hold_on_api_server(cluster: Cluster) -> None:
    cluster.label_namespace()
    [limited] = cluster.deploy(
        "limited", [container(cpu_request="500m", cpu_limit="1")], advice=recommendation(1500)
    )
    [floored] = cluster.deploy("floored", [container(cpu_request="100m")], advice=recommendation(3))
    # At its limit this pod would turn Guaranteed: memory requests equal limits already.
    [near] = cluster.deploy(
        "near",
        [container(cpu_request="500m", cpu_limit="1", memory="64Mi")],
        advice=recommendation(1500),
    )

    outcomes, _ = await cluster.run_pass(min_cpu_millicores=20)

    assert all(o.action is Action.RESIZED for o in cluster.own(outcomes))
    assert cluster.cpu_request(limited) == "1"
    assert cluster.cpu_request(floored) == "20m"
    assert cluster.cpu_request(near) == "999m"
    qos_class = cluster.core.read_namespaced_pod(near, cluster.namespace).status.qos_class
    assert qos_class == "Burstable"


async def test_cases_left_unchanged(cluster: Cluster) -> None:
    cluster.label_namespace()
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
        [pods[name]] = cluster.deploy(name, containers, advice=value)
    before = {name: cluster.cpu_request(pod) for name, pod in pods.items()}

    outcomes, applier = await cluster.run_pass()

    for name, (_value, _containers, reason) in cases.items():
        outcome = outcome_of(outcomes, pods[name])
        assert outcome.action is Action.SKIPPED, name
        assert [s.reason for s in outcome.plan.skips] == [reason], name
        assert cluster.cpu_request(pods[name]) == before[name], name
        assert cluster.applied(pods[name]) is None, name
        assert cluster.events(pods[name]) == [], name
        assert sample(applier, "temper_rightsize_resize_skips_total", reason=reason.value) == 1


async def test_rate_limit_defers_rest(cluster: Cluster) -> None:
    cluster.label_namespace()
    [small_down] = cluster.deploy("a", advice=recommendation(1500))
    [big_down] = cluster.deploy("b", advice=recommendation(400))
    [up] = cluster.deploy("c", [container(cpu_request="200m")], advice=recommendation(900))

    outcomes, applier = await cluster.run_pass(apply_max_resized_pods=2)

    actions = {o.plan.name: o.action for o in cluster.own(outcomes)}
    assert actions == {up: Action.RESIZED, big_down: Action.RESIZED, small_down: Action.DEFERRED}
    assert "rate limit" in outcome_of(outcomes, small_down).message
    assert cluster.cpu_request(small_down) == TEMPLATE_CPU
    assert sample(applier, "temper_rightsize_resize_skips_total", reason="rate-limited") == 1

    outcomes, _ = await cluster.run_pass(apply_max_resized_pods=2)
    assert outcome_of(outcomes, small_down).action is Action.RESIZED
    assert cluster.cpu_request(small_down) == "1500m"


async def test_resize_above_limit_rejected(cluster: Cluster) -> None:
    [pod] = cluster.deploy("web", [container(cpu_request="500m", cpu_limit="1")])
    plan = cluster.hand_plan(pod, 1500)
    async with cluster.connect() as client:
        with pytest.raises(KubernetesError) as raised:
            await resize_pod(client, plan)
        assert raised.value.status == 422
        message = describe_failure(raised.value)
        assert message.startswith("the API server rejected the resize (HTTP 422)")
        assert "must be less than or equal to cpu limit" in message

    outcome, applier = await cluster.execute(plan)

    assert outcome.action is Action.FAILED
    assert "must be less than or equal to cpu limit" in outcome.message
    assert sample(applier, "temper_rightsize_resize_failures_total", reason="rejected") == 1
    assert cluster.cpu_request(pod) == "500m"
    assert cluster.applied(pod) is None
    [(kind, reason, note)] = cluster.events(pod)
    assert (kind, reason) == ("Warning", "TrackingResizeFailed")
    assert "HTTP 422" in note


async def test_changed_pod_conflicts(cluster: Cluster) -> None:
    [pod] = cluster.deploy("web", [container(cpu_request="500m")])
    plan = cluster.hand_plan(pod, 300)
    # Someone resizes the pod after the plan read it.
    patch = {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "800m"}}}]}}
    cluster.core.patch_namespaced_pod_resize(pod, cluster.namespace, patch)

    outcome, applier = await cluster.execute(plan)

    assert outcome.action is Action.FAILED
    assert "HTTP 409 Conflict" in outcome.message
    assert sample(applier, "temper_rightsize_resize_failures_total", reason="conflict") == 1
    assert cluster.cpu_request(pod) == "800m"


async def test_infeasible_resize_reported(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.label_namespace()
    [pod] = cluster.deploy("web", [container(cpu_request="200m")], advice=recommendation(900))
    # The condition as a kubelet writes it when a resize cannot fit on its node.
    condition = {
        "type": "PodResizePending",
        "status": "True",
        "reason": "Infeasible",
        "message": "Node didn't have enough capacity: cpu, requested: 20000, capacity: 16000",
    }
    status = {"status": {"conditions": [condition]}}
    cluster.core.patch_namespaced_pod_status(pod, cluster.namespace, status)

    async with cluster.connect() as client:
        applier = TrackingApplier(settings(cluster.control_plane), client, None)
        with caplog.at_level(logging.WARNING, logger="rightsizer.applier"):
            outcomes = await applier.run_pass()
            await applier.run_pass()

    outcome = outcome_of(outcomes, pod)
    assert outcome.action is Action.SKIPPED
    [skip] = outcome.plan.skips
    assert skip.reason is SkipReason.RESIZE_INFEASIBLE
    assert "enough capacity" in skip.detail
    assert sample(applier, "temper_rightsize_resize_pending_pods", reason="Infeasible") == 1
    assert cluster.cpu_request(pod) == "200m"
    # Reported when it appears, not again in the next pass.
    reports = [
        r for r in caplog.records if r.getMessage() == "the kubelet has not applied a resize"
    ]
    assert len(reports) == 1
    assert reports[0].pod == f"{cluster.namespace}/{pod}"


async def test_invalid_label_reported(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    cluster.label_namespace("yes")
    [pod] = cluster.deploy("web", advice=recommendation(600))

    try:
        with caplog.at_level(logging.WARNING, logger="rightsizer.applier"):
            outcomes, _ = await cluster.run_pass()
    finally:
        # The namespace stays (no namespace controller runs); later passes need not warn.
        cluster.label_namespace("off")

    assert cluster.own(outcomes) == []
    assert cluster.cpu_request(pod) == TEMPLATE_CPU
    namespace_object = f"namespace/{cluster.namespace}"
    [report] = [r for r in caplog.records if getattr(r, "object", None) == namespace_object]
    assert report.getMessage() == "invalid opt-in label; set it to tracking or off, or remove it"
    assert "'yes'" in report.problem


async def test_service_serves_metrics(cluster: Cluster, tmp_path: Path) -> None:
    cluster.label_namespace()
    [pod] = cluster.deploy("web", advice=recommendation(600))
    history = tmp_path / "history.sqlite"
    HistoryStore(history).close()
    port = free_port()
    service_settings = settings(cluster.control_plane, history_path=str(history), port=port)

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
    assert cluster.cpu_request(pod) == "600m"


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
    cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    control_plane, core, namespace = cluster.control_plane, cluster.core, cluster.namespace
    cluster.label_namespace()
    [pod] = cluster.deploy("web")
    uid = core.read_namespaced_pod(pod, namespace).metadata.uid
    workers = [FakeThread(10 + i, f"worker-{i}", 0.1) for i in range(4)]
    history = tmp_path / "history.sqlite"
    await collect_from_fake_agent([FakePod(namespace, pod, uid, workers)], history)
    common = ["apply", "--ticks", "1", "--history-path", str(history)]
    # apply runs with the permissions docs/rightsizer.md lists, a person with the admin's.
    account = apply_account_kubeconfig(control_plane, core, namespace, tmp_path)
    request.addfinalizer(lambda: delete_cluster_role(control_plane, namespace))

    # Without --apply-tracking-enabled, apply only reports.
    dry = temper(account, *common)
    assert dry.returncode == 0, dry.stderr
    assert f"{namespace}  {pod}" in dry.stdout
    assert "would resize" in dry.stdout
    assert cluster.cpu_request(pod) == TEMPLATE_CPU
    deployment = cluster.deployment("web")
    assert RECOMMENDATION not in (deployment.metadata.annotations or {})

    done = temper(account, *common, "--apply-tracking-enabled")
    assert done.returncode == 0, done.stderr
    assert "resized" in done.stdout
    deployment = cluster.deployment("web")
    value = orjson.loads(deployment.metadata.annotations[RECOMMENDATION])
    tracking_m = value["containers"]["app"]["trk_req_m"]
    # Four workers of 0.1 core each; intervals are whole milliseconds, so allow a little.
    assert 395 <= tracking_m <= 410
    assert cluster.cpu_request(pod) == f"{tracking_m}m"
    assert [e[:2] for e in cluster.events(pod)] == [("Normal", "TrackingRequestApplied")]
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert [line for line in warnings if namespace in line] == []

    # A dismissal survives the refresh, and the applier leaves the pod alone.
    dismissed = temper(control_plane.kubeconfig, "dismiss", "deployment/web", "-n", namespace)
    assert dismissed.returncode == 0, dismissed.stderr
    patch = {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "2"}}}]}}
    core.patch_namespaced_pod_resize(pod, namespace, patch)
    again = temper(account, *common, "--apply-tracking-enabled")
    assert again.returncode == 0, again.stderr
    assert "skipped (dismissed)" in again.stdout
    deployment = cluster.deployment("web")
    assert orjson.loads(deployment.metadata.annotations[RECOMMENDATION])["status"] == "dismissed"
    assert cluster.cpu_request(pod) == TEMPLATE_CPU
