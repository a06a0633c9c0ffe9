"""The rightsizer against the real kube-apiserver, with a fake agent on loopback.

No controller-manager runs, so each test creates the workload, its ReplicaSet or Job and
its pods as API objects itself, linked by ownerReferences as the controllers would link
them. The fake agent serves ``/observe`` snapshots for those pods; ``temper rightsize``
runs as subprocesses, as a user would run it.
"""

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes import client as k8s

from rightsizer.owners import OwnerResolver, Workload
from temper.annotations import RECOMMENDATION
from temper.controlplane import LocalControlPlane
from temper.kube import KubeClient
from tests.fakeagent import FakeAgent
from tests.observesnapshots import FakePod, FakeThread

pytestmark = pytest.mark.controlplane

LABELS = {"app": "web"}
CONTAINER = {
    "name": "app",
    "image": "registry.invalid/web:1",
    "resources": {"requests": {"cpu": "2"}},
}
TEMPLATE = {"metadata": {"labels": LABELS}, "spec": {"containers": [CONTAINER]}}


def owner_reference(kind: str, obj: Any, api_version: str = "apps/v1") -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": obj.metadata.name,
        "uid": obj.metadata.uid,
        "controller": True,
    }


def create_pod(core: k8s.CoreV1Api, namespace: str, name: str, owner: dict[str, Any] | None) -> Any:
    metadata: dict[str, Any] = {"name": name, "labels": LABELS}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return core.create_namespaced_pod(
        namespace, {"metadata": metadata, "spec": {"containers": [CONTAINER]}}
    )


def create_deployment(api_client: k8s.ApiClient, namespace: str) -> list[Any]:
    """Create Deployment web, ReplicaSet web-7c9f and two pods; return the pods."""
    apps = k8s.AppsV1Api(api_client)
    spec = {"replicas": 2, "selector": {"matchLabels": LABELS}, "template": TEMPLATE}
    deployment = apps.create_namespaced_deployment(
        namespace, {"metadata": {"name": "web"}, "spec": spec}
    )
    replica_set = apps.create_namespaced_replica_set(
        namespace,
        {
            "metadata": {
                "name": "web-7c9f",
                "labels": LABELS,
                "ownerReferences": [owner_reference("Deployment", deployment)],
            },
            "spec": spec,
        },
    )
    core = k8s.CoreV1Api(api_client)
    owner = owner_reference("ReplicaSet", replica_set)
    return [create_pod(core, namespace, f"web-7c9f-{suffix}", owner) for suffix in "ab"]


def temper(control_plane: LocalControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "temper.cli", "rightsize", *args]
    command += ["--kubeconfig", str(control_plane.kubeconfig)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def recommendation_of(api_client: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", namespace)
    value: dict[str, Any] = orjson.loads(deployment.metadata.annotations[RECOMMENDATION])
    return value


async def collect_from_fake_agent(pods: list[FakePod], history: Path) -> None:
    async with FakeAgent(pods) as agent:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "temper.cli",
            "rightsize",
            "collect",
            "--observe-urls",
            agent.url,
            "--collect-interval-seconds",
            "1",
            "--ticks",
            "4",
            "--history-path",
            str(history),
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()


async def test_recommendation_lands_on_deployment(
    control_plane: LocalControlPlane, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    hot, calm = create_deployment(api_client, namespace)
    workers = [FakeThread(10 + i, f"worker-{i}", 0.05) for i in range(4)]
    fakes = [
        FakePod(
            namespace,
            hot.metadata.name,
            hot.metadata.uid,
            [FakeThread(1, "evloop", 0.95), *workers],
        ),
        FakePod(namespace, calm.metadata.name, calm.metadata.uid, workers),
    ]
    history = tmp_path / "history.sqlite"
    await collect_from_fake_agent(fakes, history)

    result = temper(control_plane, "recommend", "--history-path", str(history))
    assert result.returncode == 0, result.stderr
    value = recommendation_of(api_client, namespace)
    advice = value["containers"]["app"]
    assert value["v"] == 1
    assert value["status"] == "proposed"
    assert value["pods"] == 2
    # One core for the hot thread plus 4 x 0.05 core of workers; intervals are stored in
    # whole milliseconds, so allow a few millicores.
    assert 1190 <= advice["req_m"] <= 1210
    # Four 1-s intervals are too few for the tracking backtest, so it equals req_m.
    assert advice["trk_req_m"] == advice["req_m"]
    assert value["trk_s"] == 300
    assert advice["cur_req_m"] == 2000
    assert advice["lim_m"] is None
    assert [(f["kind"], f["group"], f["pods"]) for f in advice["findings"]] == [
        ("hot-thread", "evloop", 1)
    ]

    report = temper(control_plane, "report", "--history-path", str(history))
    assert report.returncode == 0, report.stderr
    assert f"{namespace}  deployment/web" in report.stdout
    assert f"kubectl patch deployment web -n {namespace} --type strategic" in report.stdout

    accepted = temper(control_plane, "accept", "deployment/web", "-n", namespace, "--note", "ok")
    assert accepted.returncode == 0, accepted.stderr
    assert recommendation_of(api_client, namespace)["status"] == "accepted"
    assert recommendation_of(api_client, namespace)["decision"]["note"] == "ok"

    # The same history gives the same values, so a new run keeps the decision.
    again = temper(control_plane, "recommend", "--history-path", str(history))
    assert again.returncode == 0, again.stderr
    assert recommendation_of(api_client, namespace)["status"] == "accepted"

    # The rightsizer never touches the pod template.
    template = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", namespace).spec.template
    assert template.spec.containers[0].resources.requests == {"cpu": "2"}


async def test_report_writes_html(
    control_plane: LocalControlPlane, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    [pod, _] = create_deployment(api_client, namespace)
    fake = FakePod(namespace, pod.metadata.name, pod.metadata.uid, [FakeThread(1, "main", 0.3)])
    history = tmp_path / "history.sqlite"
    await collect_from_fake_agent([fake], history)
    page = tmp_path / "report.html"
    result = temper(
        control_plane,
        "report",
        "--history-path",
        str(history),
        "--format",
        "json",
        "--html",
        str(page),
    )
    assert result.returncode == 0, result.stderr
    [document] = orjson.loads(result.stdout)
    assert document["workload"] == {"kind": "Deployment", "namespace": namespace, "name": "web"}
    assert document["recommendation"]["status"] == "proposed"
    html = page.read_text()
    assert "deployment/web" in html
    assert "data:image/png;base64," in html
    # report computes without writing the annotation.
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", namespace)
    assert RECOMMENDATION not in (deployment.metadata.annotations or {})


async def test_owner_resolution_kinds(
    control_plane: LocalControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    apps = k8s.AppsV1Api(api_client)
    core = k8s.CoreV1Api(api_client)
    selector = {"matchLabels": LABELS}
    stateful = apps.create_namespaced_stateful_set(
        namespace,
        {
            "metadata": {"name": "db"},
            "spec": {"selector": selector, "serviceName": "db", "template": TEMPLATE},
        },
    )
    daemons = apps.create_namespaced_daemon_set(
        namespace,
        {"metadata": {"name": "agent"}, "spec": {"selector": selector, "template": TEMPLATE}},
    )
    job_template = {
        "metadata": {"labels": LABELS},
        "spec": {"containers": [CONTAINER], "restartPolicy": "Never"},
    }
    job = k8s.BatchV1Api(api_client).create_namespaced_job(
        namespace, {"metadata": {"name": "backup"}, "spec": {"template": job_template}}
    )
    create_pod(core, namespace, "db-0", owner_reference("StatefulSet", stateful))
    create_pod(core, namespace, "agent-x1", owner_reference("DaemonSet", daemons))
    create_pod(core, namespace, "backup-q2", owner_reference("Job", job, "batch/v1"))
    create_pod(core, namespace, "bare", None)

    client = await KubeClient.connect(str(control_plane.kubeconfig))
    try:
        resolver = OwnerResolver(client)
        owners = {
            pod: await resolver.owner_of_pod(namespace, pod)
            for pod in ("db-0", "agent-x1", "backup-q2", "bare", "gone")
        }
    finally:
        await client.close()
    assert owners == {
        "db-0": Workload("StatefulSet", namespace, "db"),
        "agent-x1": Workload("DaemonSet", namespace, "agent"),
        "backup-q2": Workload("Job", namespace, "backup"),
        "bare": Workload("Pod", namespace, "bare"),
        "gone": None,
    }
