"""The extender behind the real kube-scheduler: pods land where the packing policy puts them.

The module runs ``temper extender`` as a subprocess on loopback and restarts kube-scheduler
with it as an ignorable, node-cache-capable extender of weight 5. Each test creates its own
Nodes with a label unique to the test and pods that select it, so only those Nodes are
candidates. At the end the scheduler is restarted without extenders.
"""

import json
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from extender.scoring import CRITICAL_CAPACITY_EXCEEDED, NEUTRAL_SCORE
from temper.annotations import TIER_LOAD, TierLoad, TierLoadEntry
from temper.controlplane import LocalControlPlane, SchedulerExtender
from temper.controlplane.process import ManagedProcess, free_port
from temper.tiers import Tier, priority_class_manifests
from tests.kubehelpers import bound_node, create_nodes, delete_nodes, pod_manifest, wait_for

pytestmark = pytest.mark.controlplane

# Values written by the tests stay fresh for three intervals, longer than this module runs.
PUBLISH_INTERVAL_SECONDS = 120
TEST_LABEL = "temper.codes/test-extender"
CRITICAL_CLASS = Tier.CRITICAL.priority_class


@dataclass
class RunningExtender:
    """The extender subprocess and its base URL (ending in a slash)."""

    process: ManagedProcess
    url: str


def wait_ready(url: str, process: ManagedProcess) -> None:
    def ready() -> bool:
        assert process.exit_code() is None, f"extender exited:\n{process.tail()}"
        try:
            with urllib.request.urlopen(url + "readyz", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_for(ready, timeout_seconds=60)


@pytest.fixture(scope="module")
def critical_class(api_client: k8s.ApiClient) -> Iterator[None]:
    """The temper-critical PriorityClass, created for this module if it is missing."""
    scheduling = k8s.SchedulingV1Api(api_client)
    manifest = next(
        m for m in priority_class_manifests() if m["metadata"]["name"] == CRITICAL_CLASS
    )
    created = False
    try:
        scheduling.create_priority_class(manifest)
        created = True
    except k8s.ApiException as error:
        if error.status != 409:
            raise
    yield
    if created:
        scheduling.delete_priority_class(CRITICAL_CLASS)


@pytest.fixture(scope="module")
def extender(
    control_plane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningExtender]:
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("extender") / "extender.log"
    command = [
        sys.executable,
        "-m",
        "temper.cli",
        "extender",
        "--kubeconfig",
        str(control_plane.kubeconfig),
        "--port",
        str(port),
        "--publish-interval-seconds",
        str(PUBLISH_INTERVAL_SECONDS),
    ]
    process = ManagedProcess("temper-extender", command, log_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url, process)
        control_plane.start_scheduler(
            extenders=[SchedulerExtender(url_prefix=url.rstrip("/"), weight=5)]
        )
        yield RunningExtender(process, url)
    finally:
        control_plane.start_scheduler()
        process.stop()


@pytest.fixture
def node_label() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def nodes(core_api: k8s.CoreV1Api) -> Iterator[list[str]]:
    """Names of the Nodes the test created; they are deleted afterwards."""
    created: list[str] = []
    yield created
    delete_nodes(core_api, created)


def tier_load(age_seconds: float = 0.0, normal: int = 0, critical: int = 0) -> str:
    return TierLoad(
        timestamp_seconds=time.time() - age_seconds,
        node_cpu_millicores=4000,
        tiers={
            Tier.NORMAL: TierLoadEntry(protection_capacity_millicores=normal),
            Tier.CRITICAL: TierLoadEntry(protection_capacity_millicores=critical),
        },
    ).encode()


def add_node(core: k8s.CoreV1Api, nodes: list[str], label: str, suffix: str, value: str) -> str:
    name = f"ext-{label}-{suffix}"
    create_nodes(core, [name], labels={TEST_LABEL: label}, annotations={TIER_LOAD: value})
    nodes.append(name)
    return name


def pod(name: str, label: str, cpu: str = "1", priority_class: str | None = None) -> Any:
    return pod_manifest(
        name,
        cpu_request=cpu,
        priority_class=priority_class,
        node_selector={TEST_LABEL: label},
    )


def call_extender(extender: RunningExtender, verb: str, manifest: Any, names: list[str]) -> Any:
    """Send one cache-capable call to the running extender, as kube-scheduler does."""
    body = json.dumps({"Pod": manifest, "Nodes": None, "NodeNames": names}).encode()
    request = urllib.request.Request(
        extender.url + verb, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.load(reply)


def extender_scores(extender: RunningExtender, manifest: Any, names: list[str]) -> dict[str, int]:
    return {
        entry["Host"]: entry["Score"]
        for entry in call_extender(extender, "prioritize", manifest, names)
    }


def wait_until_cached(extender: RunningExtender, names: list[str]) -> None:
    """Wait until the extender's watch has fresh values for ``names``.

    A critical pod larger than any node is rejected exactly by the nodes with fresh data.
    """
    probe = pod_manifest("probe", cpu_request="1000", priority_class=CRITICAL_CLASS)
    wait_for(
        lambda: not call_extender(extender, "filter", probe, names)["NodeNames"],
    )


def wait_bound(core: k8s.CoreV1Api, namespace: str, name: str) -> str:
    return wait_for(lambda: bound_node(core, namespace, name))


def test_pods_fill_tightest_node_first(
    extender: RunningExtender,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    node_label: str,
) -> None:
    roomy = add_node(core_api, nodes, node_label, "roomy", tier_load(normal=4000))
    snug = add_node(core_api, nodes, node_label, "snug", tier_load(normal=1500))
    add_node(core_api, nodes, node_label, "small", tier_load(normal=600))
    first = pod("first", node_label)
    wait_until_cached(extender, [roomy, snug])

    core_api.create_namespaced_pod(namespace, first)
    assert wait_bound(core_api, namespace, "first") == snug

    # The first pod took 1000m of snug's 1500m since its value, so the next one no longer fits.
    wait_for(lambda: extender_scores(extender, first, [snug])[snug] == 0)
    core_api.create_namespaced_pod(namespace, pod("second", node_label))
    assert wait_bound(core_api, namespace, "second") == roomy


@pytest.mark.usefixtures("critical_class")
def test_critical_pod_skips_node_without_capacity(
    extender: RunningExtender,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    node_label: str,
) -> None:
    add_node(core_api, nodes, node_label, "fenced", tier_load(normal=8000, critical=500))
    spare = add_node(core_api, nodes, node_label, "spare", tier_load(normal=8000, critical=2000))
    manifest = pod("critical", node_label, priority_class=CRITICAL_CLASS)
    wait_until_cached(extender, nodes)

    core_api.create_namespaced_pod(namespace, manifest)
    assert wait_bound(core_api, namespace, "critical") == spare


@pytest.mark.usefixtures("critical_class")
def test_critical_pod_pends_when_no_capacity(
    extender: RunningExtender,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    node_label: str,
) -> None:
    add_node(core_api, nodes, node_label, "fenced", tier_load(normal=8000, critical=500))
    manifest = pod("critical", node_label, priority_class=CRITICAL_CLASS)
    wait_until_cached(extender, nodes)

    core_api.create_namespaced_pod(namespace, manifest)

    def unschedulable_message() -> str | None:
        status = core_api.read_namespaced_pod("critical", namespace).status
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                return str(condition.message)
        return None

    message = wait_for(unschedulable_message)
    assert CRITICAL_CAPACITY_EXCEEDED in message
    assert bound_node(core_api, namespace, "critical") is None


def test_stale_value_scores_neutral(
    extender: RunningExtender,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    node_label: str,
) -> None:
    # Fresh, "full" would score 0; stale, it scores 5 and beats roomy's 3.
    stale_age = 3 * PUBLISH_INTERVAL_SECONDS + 60
    full = add_node(core_api, nodes, node_label, "full", tier_load(stale_age, normal=100))
    roomy = add_node(core_api, nodes, node_label, "roomy", tier_load(normal=4000))
    manifest = pod("web", node_label)
    wait_until_cached(extender, [roomy])
    assert extender_scores(extender, manifest, [full, roomy]) == {full: NEUTRAL_SCORE, roomy: 3}

    core_api.create_namespaced_pod(namespace, manifest)
    assert wait_bound(core_api, namespace, "web") == full


@pytest.mark.usefixtures("critical_class")
def test_pods_scheduled_while_extender_down(
    extender: RunningExtender,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    node_label: str,
) -> None:
    # The extender would reject this node for the critical pod; stopped, it is skipped.
    fenced = add_node(core_api, nodes, node_label, "fenced", tier_load(critical=0))
    extender.process.stop()
    assert extender.process.exit_code() == 0

    core_api.create_namespaced_pod(
        namespace, pod("critical", node_label, priority_class=CRITICAL_CLASS)
    )
    assert wait_bound(core_api, namespace, "critical") == fenced
