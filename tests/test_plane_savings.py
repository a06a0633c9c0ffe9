"""The plane's savings view: realized reclaim and identified opportunity, priced per machine
type, against real objects in the real API server."""

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kubernetes import client as k8s

from plane import packing
from plane.prices import PriceTableError, lookup, parse_price_table
from plane.savings import effective_request_millicores, original_overrides
from plane.savings_api import SAVINGS_SCHEMA
from plane.settings import PlaneSettings
from plane.store import Role
from rightsizer.annotation import ContainerAdvice, Status, WorkloadRecommendation
from temper import annotations
from temper.annotations import OriginalRequests
from temper.controlplane import LocalControlPlane
from temper.errors import InvalidAnnotationError
from tests.kubehelpers import create_nodes, delete_nodes, pod_manifest
from tests.planeharness import RolePlane, eventually, role_plane

pytestmark = pytest.mark.controlplane

INSTANCE_TYPE = "node.kubernetes.io/instance-type"
CPU_CORE_HOUR = 0.04
NODE_HOUR = 0.16
DEFAULT_CPU_CORE_HOUR = 0.1
DEFAULT_NODE_HOUR = 0.5


# -- pure parts -------------------------------------------------------------------------------

PACKING_CASES = {
    # (bin capacities, requests, nodes needed)
    "empty": ([1000, 1000], [], 0),
    "one fits": ([1000, 1000], [600], 1),
    "two do not share": ([1000, 1000], [600, 600], 2),
    "decreasing order fills": ([1000, 1000], [300, 700, 300, 700], 2),
    "overflow opens node of largest size": ([1000], [800, 800, 800], 3),
    "zero requests need no node": ([1000], [0, 0], 0),
    "oversized request gets own node": ([1000], [1500, 200], 2),
    "fixed pods shrink capacity": ([400, 400], [300, 300, 300], 3),
}


@pytest.mark.parametrize("case", list(PACKING_CASES))
def test_packing_counts_nodes(case: str) -> None:
    capacities, requests, expected = PACKING_CASES[case]
    bins = [packing.Bin(f"n{i}", capacity) for i, capacity in enumerate(capacities)]
    assert packing.nodes_needed(bins, requests) == expected


def spec_with(
    containers: list[tuple[str, str | None]],
    init: list[tuple[str, str | None, bool]] | None = None,
) -> dict[str, Any]:
    def container(name: str, cpu: str | None) -> dict[str, Any]:
        resources = {"requests": {"cpu": cpu}} if cpu is not None else {}
        return {"name": name, "resources": resources}

    spec: dict[str, Any] = {"containers": [container(n, c) for n, c in containers]}
    if init:
        spec["initContainers"] = [
            {**container(n, c), **({"restartPolicy": "Always"} if sidecar else {})}
            for n, c, sidecar in init
        ]
    return spec


def test_effective_request_adds_sidecars() -> None:
    spec = spec_with([("app", "500m")], [("proxy", "100m", True), ("setup", "2", False)])
    # The classic init container runs beside the sidecar: 2000m + 100m beats 500m + 100m.
    assert effective_request_millicores(spec) == 2100


def test_effective_request_uses_originals() -> None:
    spec = spec_with([("app", "300m"), ("log", "50m")], [("proxy", "50m", True)])
    raw = OriginalRequests(
        containers={"app": "500m", "log": None}, init_containers={"proxy": "100m"}
    ).encode()
    overrides = original_overrides(raw)
    assert effective_request_millicores(spec) == 400
    assert effective_request_millicores(spec, overrides) == 600


def test_effective_request_pod_level_wins() -> None:
    spec = spec_with([("app", "300m")])
    spec["resources"] = {"requests": {"cpu": "2"}}
    spec["overhead"] = {"cpu": "250m"}
    assert effective_request_millicores(spec) == 2250


def test_original_overrides_rejects_bad_quantity() -> None:
    raw = json.dumps({"v": 1, "cpu": {"app": "lots"}})
    with pytest.raises(InvalidAnnotationError, match=r"'app'.*lots"):
        original_overrides(raw)


INVALID_TABLES = {
    "negative price": ("machineTypes: {m1: {cpuCoreHour: -1, nodeHour: 1}}", "cpuCoreHour"),
    "missing node price": ("machineTypes: {m1: {cpuCoreHour: 1}}", "nodeHour"),
    "unknown key": ("machineTypez: {}", "machineTypez"),
    "not a mapping": ("- 1\n- 2", "must be a mapping"),
    "not yaml": ("machineTypes: {m1: [", "not valid YAML"),
}


@pytest.mark.parametrize("case", list(INVALID_TABLES))
def test_price_table_rejects_invalid(case: str) -> None:
    text, message = INVALID_TABLES[case]
    with pytest.raises(PriceTableError, match=message) as raised:
        parse_price_table(text, "/etc/prices.yaml")
    assert "/etc/prices.yaml" in str(raised.value)


def test_price_table_lookup_sources() -> None:
    table = parse_price_table(
        json.dumps(
            {
                "currency": "EUR",
                "machineTypes": {"m1": {"cpuCoreHour": 1, "nodeHour": 4}},
                "default": {"cpuCoreHour": 2, "nodeHour": 8},
            }
        ),
        "prices.json",
    )
    without_default = table.model_copy(update={"default": None})
    assert lookup(table, "m1").source == "table"
    assert lookup(table, "m2").source == "default"
    assert lookup(table, None).source == "default"
    assert lookup(without_default, "m2").source == "none"
    assert lookup(None, "m1").price is None


# -- the plane against the real API server ----------------------------------------------------


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def price_file(tmp_path: Path, suffix: str) -> Path:
    """Prices for the machine types sv-a-<suffix> and sv-b-<suffix>, with no default."""
    path = tmp_path / "prices.yaml"
    path.write_text(
        "currency: EUR\n"
        "machineTypes:\n"
        f"  sv-a-{suffix}: {{cpuCoreHour: {CPU_CORE_HOUR}, nodeHour: {NODE_HOUR}}}\n"
        f"  sv-b-{suffix}: {{cpuCoreHour: {CPU_CORE_HOUR}, nodeHour: {NODE_HOUR}}}\n"
    )
    return path


@asynccontextmanager
async def served_plane(
    control_plane: LocalControlPlane, namespace: str, database: Path, prices: Path | None
) -> AsyncIterator[RolePlane]:
    """A plane with one token per role (named test-<role>) and the price table ``prices``."""
    settings = PlaneSettings(
        database_path=database, safe_mode_namespace=namespace, price_table_path=prices
    )
    async with role_plane(control_plane, settings) as plane:
        yield plane


@pytest.fixture
async def plane(
    control_plane: LocalControlPlane, namespace: str, tmp_path: Path, price_file: Path
) -> AsyncIterator[RolePlane]:
    async with served_plane(control_plane, namespace, tmp_path / "p.sqlite3", price_file) as served:
        yield served


@pytest.fixture
def nodes(core_api: k8s.CoreV1Api) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    delete_nodes(core_api, created)


def add_nodes(
    core_api: k8s.CoreV1Api,
    created: list[str],
    prefix: str,
    count: int,
    machine_type: str | None,
    cpu: str,
) -> list[str]:
    names = [f"{prefix}-{index}" for index in range(count)]
    labels = {INSTANCE_TYPE: machine_type} if machine_type else {}
    create_nodes(core_api, names, labels=labels, cpu=cpu)
    created.extend(names)
    return names


def reclaimed_pod(
    name: str,
    node: str | None,
    *,
    current: str,
    original: str | None,
    owner: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """A pod with request ``current`` and, when ``original`` is given, the webhook's record."""
    manifest = pod_manifest(name, cpu_request=current)
    if node:
        manifest["spec"]["nodeName"] = node
    else:
        # No scheduler has this name, so the pod stays pending.
        manifest["spec"]["schedulerName"] = "test-no-scheduler"
    if original is not None:
        manifest["metadata"]["annotations"] = {
            annotations.ORIGINAL_REQUESTS: OriginalRequests(containers={"app": original}).encode()
        }
    if owner:
        kind, owner_name, uid = owner
        manifest["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": owner_name,
                "uid": uid,
                "controller": True,
            }
        ]
    return manifest


def recommendation(request_millicores: int, current: int, status: Status) -> str:
    """The annotation the rightsizer writes for a one-container workload."""
    advice = ContainerAdvice(
        request_millicores=request_millicores,
        limit_millicores=None,
        limit_reason="no CPU limit",
        current_request_millicores=current,
        current_limit_millicores=None,
        confidence=0.9,
        basis="window",
    )
    value = WorkloadRecommendation(
        timestamp_seconds=time.time(),
        window_start_seconds=time.time() - 3600,
        window_end_seconds=time.time(),
        observed_seconds=3600.0,
        pods=2,
        containers={"app": advice},
        status=status,
    )
    return value.encode()


def workload_manifest(
    kind: str, name: str, request: str, recommendation_value: str | None
) -> dict[str, Any]:
    labels = {"app": name}
    metadata: dict[str, Any] = {"name": name}
    if recommendation_value is not None:
        metadata["annotations"] = {annotations.RECOMMENDATION: recommendation_value}
    spec: dict[str, Any] = {
        "replicas": 2,
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.invalid/app:1",
                        "resources": {"requests": {"cpu": request}},
                    }
                ]
            },
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": spec}


async def savings_of(plane: RolePlane, namespace: str) -> dict[str, Any]:
    status, body = await plane.call("GET", f"/api/v1/savings?namespace={namespace}")
    assert status == 200, body
    jsonschema.validate(body, SAVINGS_SCHEMA)
    return body


def workload(body: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    for namespace in body["namespaces"]:
        for item in namespace["workloads"]:
            if (item["kind"], item["name"]) == (kind, name):
                return dict(item)
    return None


def machine_type(body: dict[str, Any], name: str | None) -> dict[str, Any]:
    [row] = [r for r in body["realized"]["nodes"]["machineTypes"] if r["machineType"] == name]
    return dict(row)


async def test_realized_reclaim_per_workload(
    plane: RolePlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    suffix: str,
) -> None:
    [node] = add_nodes(core_api, nodes, f"sv-{suffix}", 1, f"sv-a-{suffix}", "8")
    apps = k8s.AppsV1Api(api_client)
    deployment = apps.create_namespaced_deployment(
        namespace, workload_manifest("Deployment", "web", "500m", None)
    )
    replica_set = workload_manifest("ReplicaSet", "web-5d8", "500m", None)
    replica_set["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "web",
            "uid": deployment.metadata.uid,
            "controller": True,
        }
    ]
    created = apps.create_namespaced_replica_set(namespace, replica_set)
    owner = ("ReplicaSet", "web-5d8", created.metadata.uid)
    for index in range(2):
        core_api.create_namespaced_pod(
            namespace,
            reclaimed_pod(f"web-{index}", node, current="300m", original="500m", owner=owner),
        )
    core_api.create_namespaced_pod(
        namespace, reclaimed_pod("lone", None, current="100m", original="250m")
    )
    core_api.create_namespaced_pod(
        namespace, reclaimed_pod("untouched", node, current="1", original=None)
    )

    async def ready() -> dict[str, Any] | None:
        body = await savings_of(plane, namespace)
        return body if body["realized"]["cpu"]["pods"] == 3 else None

    body = await eventually(ready)
    web = workload(body, "Deployment", "web")
    assert web is not None
    assert web["realized"]["cpuMillicores"] == 400
    assert web["realized"]["pods"] == 2
    assert web["realized"]["perHour"] == pytest.approx(0.4 * CPU_CORE_HOUR)
    lone = workload(body, "Pod", "lone")
    assert lone is not None
    # A pending pod has no Node, and the table has no default price.
    assert lone["realized"]["unpricedCpuMillicores"] == 150
    assert lone["realized"]["perHour"] == 0
    assert workload(body, "Pod", "untouched") is None
    totals = body["realized"]["cpu"]
    assert totals["cpuMillicores"] == 550
    assert totals["perMonth"] == pytest.approx(0.4 * CPU_CORE_HOUR * 730)
    assert body["pricing"]["currency"] == "EUR"


async def test_nodes_freed_by_packing(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str, nodes: list[str], suffix: str
) -> None:
    type_b = f"sv-b-{suffix}"
    names = add_nodes(core_api, nodes, f"svb-{suffix}", 2, type_b, "1")
    # Four pods of 500m, cut to 250m: the originals fill both 1-CPU nodes, the current
    # requests fit on one.
    for index in range(4):
        pod = reclaimed_pod(f"batch-{index}", names[index % 2], current="250m", original="500m")
        core_api.create_namespaced_pod(namespace, pod)

    async def ready() -> dict[str, Any] | None:
        body = await savings_of(plane, namespace)
        row = machine_type(body, type_b)
        return body if row["nodesNeededOriginal"] == 2 else None

    body = await eventually(ready)
    row = machine_type(body, type_b)
    assert row["nodes"] == 2
    assert row["nodesNeededCurrent"] == 1
    assert row["nodesFreed"] == 1
    assert row["priceSource"] == "table"
    assert row["perHour"] == pytest.approx(NODE_HOUR)
    assert row["perMonth"] == pytest.approx(NODE_HOUR * 730)


async def test_daemonset_pods_stay_on_their_node(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str, nodes: list[str], suffix: str
) -> None:
    type_b = f"sv-b-{suffix}"
    names = add_nodes(core_api, nodes, f"svd-{suffix}", 2, type_b, "1")
    daemon = ("DaemonSet", "agent", str(uuid.uuid4()))
    for index, node in enumerate(names):
        pod = reclaimed_pod(f"agent-{index}", node, current="600m", original=None, owner=daemon)
        core_api.create_namespaced_pod(namespace, pod)
    for index in range(2):
        pod = reclaimed_pod(f"app-{index}", names[index], current="300m", original="400m")
        core_api.create_namespaced_pod(namespace, pod)

    async def ready() -> dict[str, Any] | None:
        body = await savings_of(plane, namespace)
        return body if body["realized"]["cpu"]["pods"] == 2 else None

    body = await eventually(ready)
    row = machine_type(body, type_b)
    # 400m fits once beside each node's 600m DaemonSet pod, and so does 300m: nothing freed.
    assert row["nodesNeededOriginal"] == 2
    assert row["nodesNeededCurrent"] == 2
    assert row["nodesFreed"] == 0


async def test_opportunity_from_recommendations(
    plane: RolePlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    suffix: str,
) -> None:
    [node] = add_nodes(core_api, nodes, f"svo-{suffix}", 1, f"sv-a-{suffix}", "16")
    apps = k8s.AppsV1Api(api_client)
    cases = {
        # name: (kind, template request, pod request, recommended, status)
        "shrink": ("StatefulSet", "1", "1", 400, Status.PROPOSED),
        "grow": ("StatefulSet", "200m", "200m", 500, Status.ACCEPTED),
        "skip": ("StatefulSet", "1", "1", 100, Status.DISMISSED),
        "done": ("StatefulSet", "250m", "250m", 250, Status.ACCEPTED),
    }
    for name, (kind, template, pod_request, recommended, status) in cases.items():
        value = recommendation(recommended, 1000, status)
        created = apps.create_namespaced_stateful_set(
            namespace, workload_manifest(kind, name, template, value)
        )
        for index in range(2):
            pod = reclaimed_pod(
                f"{name}-{index}",
                node,
                current=pod_request,
                original=None,
                owner=(kind, name, created.metadata.uid),
            )
            core_api.create_namespaced_pod(namespace, pod)

    async def ready() -> dict[str, Any] | None:
        body = await savings_of(plane, namespace)
        counted = sum(
            (workload(body, "StatefulSet", name) or {"opportunity": {"pods": 0}})["opportunity"][
                "pods"
            ]
            for name in cases
        )
        return body if counted == 6 else None

    body = await eventually(ready)
    shrink = workload(body, "StatefulSet", "shrink")
    assert shrink is not None
    assert shrink["opportunity"]["cpuMillicores"] == 1200
    assert shrink["opportunity"]["perHour"] == pytest.approx(1.2 * CPU_CORE_HOUR)
    assert shrink["recommendation"]["status"] == "proposed"
    assert shrink["recommendation"]["applied"] is False
    grow = workload(body, "StatefulSet", "grow")
    assert grow is not None
    assert grow["opportunity"]["cpuMillicores"] == 0
    assert grow["opportunity"]["underProvisionedCpuMillicores"] == 600
    skip = workload(body, "StatefulSet", "skip")
    assert skip is not None
    assert skip["opportunity"]["cpuMillicores"] == 0
    assert skip["recommendation"]["status"] == "dismissed"
    done = workload(body, "StatefulSet", "done")
    assert done is not None
    assert done["recommendation"]["applied"] is True
    assert done["opportunity"]["cpuMillicores"] == 0
    assert body["opportunity"]["cpu"]["cpuMillicores"] == 1200
    assert body["opportunity"]["dismissedRecommendations"] >= 1
    # The opportunity never mixes with the realized reclaim.
    assert body["realized"]["cpu"]["cpuMillicores"] == 0


async def test_invalid_annotations_are_reported(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str
) -> None:
    broken = pod_manifest("broken", cpu_request="100m")
    broken["metadata"]["annotations"] = {annotations.ORIGINAL_REQUESTS: '{"v": 9}'}
    core_api.create_namespaced_pod(namespace, broken)
    odd = pod_manifest("odd", cpu_request="100m")
    odd["metadata"]["annotations"] = {annotations.RECOMMENDATION: '{"v": 1, "status": "maybe"}'}
    core_api.create_namespaced_pod(namespace, odd)

    async def problems() -> list[dict[str, str]] | None:
        body = await savings_of(plane, namespace)
        mine = [p for p in body["problems"] if f" {namespace}/" in p["object"]]
        return mine if len(mine) == 2 else None

    found = {p["object"]: p["error"] for p in await eventually(problems)}
    assert "v=9" in found[f"pod {namespace}/broken"]
    assert "'maybe'" in found[f"pod {namespace}/odd"]


async def test_unpriced_machine_type_is_explicit(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str, nodes: list[str], suffix: str
) -> None:
    unknown = f"sv-unknown-{suffix}"
    [node] = add_nodes(core_api, nodes, f"svu-{suffix}", 1, unknown, "4")
    core_api.create_namespaced_pod(
        namespace, reclaimed_pod("p", node, current="100m", original="300m")
    )

    async def ready() -> dict[str, Any] | None:
        body = await savings_of(plane, namespace)
        return body if body["realized"]["cpu"]["pods"] == 1 else None

    body = await eventually(ready)
    assert body["realized"]["cpu"]["unpricedCpuMillicores"] == 200
    row = machine_type(body, unknown)
    assert row["priceSource"] == "none"
    assert row["price"] is None
    assert row["perHour"] is None


async def test_default_price_covers_unknown_type(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    suffix: str,
    tmp_path: Path,
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {"default": {"cpuCoreHour": DEFAULT_CPU_CORE_HOUR, "nodeHour": DEFAULT_NODE_HOUR}}
        )
    )
    unlabelled = add_nodes(core_api, nodes, f"svn-{suffix}", 1, None, "4")
    core_api.create_namespaced_pod(
        namespace, reclaimed_pod("p", unlabelled[0], current="100m", original="300m")
    )
    async with served_plane(control_plane, namespace, tmp_path / "d.sqlite3", prices) as plane:

        async def ready() -> dict[str, Any] | None:
            body = await savings_of(plane, namespace)
            return body if body["realized"]["cpu"]["pods"] == 1 else None

        body = await eventually(ready)
    assert body["realized"]["cpu"]["perHour"] == pytest.approx(0.2 * DEFAULT_CPU_CORE_HOUR)
    assert body["realized"]["cpu"]["unpricedCpuMillicores"] == 0
    row = machine_type(body, None)
    assert row["priceSource"] == "default"
    assert body["pricing"]["currency"] == "USD"


async def test_no_price_table_reports_cpu_only(
    control_plane: LocalControlPlane, core_api: k8s.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    core_api.create_namespaced_pod(
        namespace, reclaimed_pod("p", None, current="100m", original="300m")
    )
    async with served_plane(control_plane, namespace, tmp_path / "n.sqlite3", None) as plane:

        async def ready() -> dict[str, Any] | None:
            body = await savings_of(plane, namespace)
            return body if body["realized"]["cpu"]["pods"] == 1 else None

        body = await eventually(ready)
        _status, table = await plane.call("GET", "/api/v1/savings/prices")
    assert body["pricing"]["configured"] is False
    assert body["realized"]["cpu"]["cpuMillicores"] == 200
    assert body["realized"]["cpu"]["perHour"] is None
    assert body["realized"]["cpu"]["perMonth"] is None
    assert table["configured"] is False


async def test_price_table_reloads_and_keeps_last_valid(
    plane: RolePlane, price_file: Path, suffix: str
) -> None:
    _status, before = await plane.call("GET", "/api/v1/savings/prices")
    assert set(before["machineTypes"]) == {f"sv-a-{suffix}", f"sv-b-{suffix}"}

    changed_text = "currency: GBP\nmachineTypes: {m9: {cpuCoreHour: 1, nodeHour: 2}}\n"
    await asyncio.to_thread(price_file.write_text, changed_text)
    _status, changed = await plane.call("GET", "/api/v1/savings/prices")
    assert changed["currency"] == "GBP"
    assert set(changed["machineTypes"]) == {"m9"}

    invalid_text = "machineTypes: {m9: {cpuCoreHour: -5, nodeHour: 2}}\n"
    await asyncio.to_thread(price_file.write_text, invalid_text)
    _status, broken = await plane.call("GET", "/api/v1/savings/prices")
    assert broken["currency"] == "GBP"
    assert "cpuCoreHour" in broken["error"]
    assert str(price_file) in broken["error"]


async def test_savings_roles_and_audit(plane: RolePlane) -> None:
    for role in Role:
        status, _body = await plane.call("GET", "/api/v1/savings", role)
        assert status == 200, role
    status, body = await plane.call("GET", "/api/v1/savings", None)
    assert status == 401
    assert "Bearer" in body["error"]
    entries = plane.audit()
    assert [(e["operation"], e["outcome"], e["token"]) for e in entries] == [
        ("getSavings", "allowed", "test-viewer"),
        ("getSavings", "allowed", "test-operator"),
        ("getSavings", "allowed", "test-admin"),
        ("getSavings", "denied", None),
    ]


async def test_invalid_namespace_is_400(plane: RolePlane) -> None:
    status, body = await plane.call("GET", "/api/v1/savings?namespace=Not_A_Namespace")
    assert status == 400
    assert "Not_A_Namespace" in body["error"]


def test_serve_rejects_invalid_price_table(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("machineTypes: {m1: {cpuCoreHour: abc, nodeHour: 1}}\n")
    command = [
        sys.executable, "-m", "temper.cli", "plane", "serve",
        "--kubeconfig", str(control_plane.kubeconfig),
        "--database-path", str(tmp_path / "plane.sqlite3"),
        "--price-table-path", str(prices), "--port", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert str(prices) in result.stderr
    assert "machineTypes.m1.cpuCoreHour" in result.stderr
