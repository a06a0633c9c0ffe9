"""Management plane REST API against the real control plane, served in-process on loopback."""

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from kubernetes import client as k8s
from openapi_spec_validator import validate

from plane.app import build_registry
from plane.settings import PlaneSettings
from plane.store import Role, Store
from temper import annotations
from temper.annotations import TierLoad, TierLoadEntry
from temper.cli import main as cli_main
from temper.controlplane import LocalControlPlane
from temper.tiers import Tier, priority_class_manifests
from tests.kubehelpers import pod_manifest
from tests.planeharness import (
    RolePlane,
    create_guarded_pods,
    create_tokens,
    eventually,
    fresh_node,
    fuzz_operations,
    http_status,
    plane_process,
    role_plane,
)

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def priority_classes(api_client: k8s.ApiClient) -> None:
    """The five Temper PriorityClasses, which pods naming them need at admission."""
    scheduling = k8s.SchedulingV1Api(api_client)
    for manifest in priority_class_manifests():
        try:
            scheduling.create_priority_class(manifest)
        except k8s.ApiException as error:
            if error.status != 409:
                raise


@pytest.fixture
async def plane(
    control_plane: LocalControlPlane, namespace: str, tmp_path: Path
) -> AsyncIterator[RolePlane]:
    """The plane with a fresh database; fleet safe mode uses the test's namespace."""
    settings = PlaneSettings(
        database_path=tmp_path / "plane.sqlite3", safe_mode_namespace=namespace
    )
    async with role_plane(control_plane, settings) as served:
        yield served


@pytest.fixture
def node_name(core_api: k8s.CoreV1Api) -> Iterator[str]:
    """A fresh Ready Node, deleted afterwards."""
    load = TierLoad(
        timestamp_seconds=1_700_000_000.0,
        node_cpu_millicores=4000,
        tiers={Tier.CRITICAL: TierLoadEntry(requested_cpu_millicores=500, pods=1)},
    )
    yield from fresh_node(
        core_api,
        "plane",
        annotations={
            annotations.TIER_LOAD: load.encode(),
            annotations.SCHEDULER: annotations.SCHEDULER_SCX_LAYERED,
        },
    )


def bound_pod(
    name: str,
    node: str,
    *,
    priority_class: str | None = None,
    cpu_limit: str | None = None,
    labels: dict[str, str] | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """A pod bound to ``node`` directly, without the scheduler."""
    manifest = pod_manifest(name, priority_class=priority_class, cpu_limit=cpu_limit)
    manifest["spec"]["nodeName"] = node
    if labels:
        manifest["metadata"]["labels"] = labels
    if owner:
        manifest["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": owner,
                "uid": str(uuid.uuid4()),
                "controller": True,
            }
        ]
    return manifest


async def node_pods(plane: RolePlane, node: str, count: int) -> list[dict[str, Any]] | None:
    status, body = await plane.call("GET", f"/api/v1/nodes/{node}/pods", Role.VIEWER)
    return body["items"] if status == 200 and len(body["items"]) == count else None


# -- the OpenAPI document -------------------------------------------------------------------


async def test_openapi_document_validates(plane: RolePlane) -> None:
    status, document = await plane.call("GET", "/api/v1/openapi.json", Role.VIEWER)
    assert status == 200
    validate(document)


async def test_openapi_lists_every_route(plane: RolePlane) -> None:
    _status, document = await plane.call("GET", "/api/v1/openapi.json", Role.VIEWER)
    for route in build_registry().routes:
        operation = document["paths"]["/api/v1" + route.path][route.method.lower()]
        assert operation["operationId"] == route.operation_id
        assert operation["x-temper-role"] == route.role.value


# -- authentication, roles and audit --------------------------------------------------------


async def test_request_without_token_is_401(plane: RolePlane) -> None:
    status, body = await plane.call("GET", "/api/v1/nodes", None)
    assert status == 401
    assert "Bearer" in body["error"]
    entry = plane.audit()[-1]
    assert (entry["outcome"], entry["status"], entry["token"]) == ("denied", 401, None)


async def test_unknown_token_is_401(plane: RolePlane) -> None:
    async with plane.http.get(
        plane.url + "/api/v1/nodes", headers={"Authorization": "Bearer temper_00_nope"}
    ) as response:
        assert response.status == 401
    entry = plane.audit()[-1]
    assert entry["detail"] == "unknown bearer token"


# (method, path template, role, expected status); {node} is a fresh Node.
ROLE_TABLE = [
    ("GET", "/api/v1/nodes", Role.VIEWER, 200),
    ("GET", "/api/v1/clusters", Role.VIEWER, 200),
    ("POST", "/api/v1/nodes/{node}/cordon", Role.VIEWER, 403),
    ("POST", "/api/v1/nodes/{node}/cordon", Role.OPERATOR, 200),
    ("PUT", "/api/v1/nodes/{node}/safe-mode", Role.VIEWER, 403),
    ("PUT", "/api/v1/nodes/{node}/safe-mode", Role.OPERATOR, 200),
    ("POST", "/api/v1/nodes/{node}/drain", Role.VIEWER, 403),
    ("GET", "/api/v1/audit?format=jsonl", Role.VIEWER, 403),
    ("GET", "/api/v1/audit?format=jsonl", Role.OPERATOR, 403),
    ("GET", "/api/v1/audit?format=jsonl", Role.ADMIN, 200),
    ("POST", "/api/v1/nodes/{node}/uncordon", Role.ADMIN, 200),
]


@pytest.mark.parametrize(("method", "template", "role", "expected"), ROLE_TABLE)
async def test_role_allows_or_denies(
    plane: RolePlane, node_name: str, method: str, template: str, role: Role, expected: int
) -> None:
    path = template.format(node=node_name)
    status, _body = await plane.call(method, path, role)
    assert status == expected
    entry = plane.audit()[-1]
    assert entry["token"] == f"test-{role.value}"
    assert entry["outcome"] == ("allowed" if expected == 200 else "denied")
    assert entry["path"] == path


async def test_audit_export_contains_allowed_and_denied(plane: RolePlane) -> None:
    await plane.call("GET", "/api/v1/nodes", Role.VIEWER)
    await plane.call("GET", "/api/v1/audit", Role.VIEWER)
    status, text = await plane.call("GET", "/api/v1/audit?format=jsonl", Role.ADMIN)
    assert status == 200
    entries = [json.loads(line) for line in text.splitlines()]
    assert [(e["operation"], e["outcome"]) for e in entries] == [
        ("listNodes", "allowed"),
        ("exportAudit", "denied"),
    ]


async def test_audit_export_rejects_other_format(plane: RolePlane) -> None:
    status, body = await plane.call("GET", "/api/v1/audit?format=csv", Role.ADMIN)
    assert status == 400
    assert "jsonl" in body["error"]


def test_audit_rows_cannot_change(tmp_path: Path) -> None:
    store = Store(tmp_path / "plane.sqlite3")
    store.append_audit(
        principal=None, method="GET", path="/", operation=None, outcome="denied", status=401,
        detail="",
    )  # fmt: skip
    database = store._db  # the raw connection, to attempt what the module never does
    for statement in ("UPDATE audit SET outcome = 'allowed'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            database.execute(statement)
    assert len(store.audit_entries()) == 1
    store.close()


def test_token_is_stored_hashed(tmp_path: Path) -> None:
    store = Store(tmp_path / "plane.sqlite3")
    token = store.create_token("ci", Role.OPERATOR)
    secret = token.rsplit("_", 1)[-1].encode()
    stored = (tmp_path / "plane.sqlite3").read_bytes()
    store.close()
    assert secret not in stored


def test_token_authenticates_to_its_role(tmp_path: Path) -> None:
    store = Store(tmp_path / "plane.sqlite3")
    token = store.create_token("ci", Role.OPERATOR)
    principal = store.authenticate(token)
    wrong = store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"))
    store.close()
    assert principal is not None
    assert (principal.name, principal.role) == ("ci", Role.OPERATOR)
    assert wrong is None


# -- read endpoints ---------------------------------------------------------------------------


async def test_nodes_report_tier_load_and_scheduler(plane: RolePlane, node_name: str) -> None:
    async def node() -> dict[str, Any] | None:
        status, body = await plane.call("GET", f"/api/v1/nodes/{node_name}", Role.VIEWER)
        return body if status == 200 else None

    summary = await eventually(node)
    assert summary["allocatable"]["cpu"] == "4"
    assert summary["scheduler"] == "scx_layered"
    assert summary["tierLoad"]["nodeCpuMillicores"] == 4000
    assert summary["tierLoad"]["tiers"]["critical"]["requestedCpuMillicores"] == 500
    _status, listing = await plane.call("GET", "/api/v1/nodes", Role.VIEWER)
    assert node_name in [item["name"] for item in listing["items"]]


async def test_unknown_node_is_404(plane: RolePlane) -> None:
    for method, path in (
        ("GET", "/api/v1/nodes/plane-missing"),
        ("GET", "/api/v1/nodes/plane-missing/pods"),
        ("POST", "/api/v1/nodes/plane-missing/cordon"),
    ):
        status, _body = await plane.call(method, path, Role.OPERATOR)
        assert status == 404, path


async def test_invalid_node_name_is_400(plane: RolePlane) -> None:
    status, body = await plane.call("GET", "/api/v1/nodes/Not_A_Name", Role.VIEWER)
    assert status == 400
    assert "Not_A_Name" in body["error"]


@pytest.mark.usefixtures("priority_classes")
async def test_node_pods_report_tier_and_layer(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str, node_name: str
) -> None:
    for manifest in (
        bound_pod("crit", node_name, priority_class="temper-critical", cpu_limit="1"),
        bound_pod("batch", node_name, priority_class="temper-low", cpu_limit="500m"),
        bound_pod("web", node_name),
    ):
        core_api.create_namespaced_pod(namespace, manifest)
    pods = await eventually(lambda: node_pods(plane, node_name, 3))
    layers = {pod["name"]: (pod["tier"], pod["layer"]) for pod in pods}
    assert layers == {
        "crit": ("critical", "critical"),
        "batch": ("low", "low-limited"),
        "web": ("normal", "normal"),
    }


async def test_workloads_group_pods_by_owner(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str, node_name: str
) -> None:
    for name in ("web-1", "web-2"):
        core_api.create_namespaced_pod(namespace, bound_pod(name, node_name, owner="web"))
    core_api.create_namespaced_pod(namespace, bound_pod("lone", node_name))

    async def workloads() -> list[dict[str, Any]] | None:
        status, body = await plane.call(
            "GET", f"/api/v1/workloads?namespace={namespace}", Role.VIEWER
        )
        return body["items"] if status == 200 and len(body["items"]) == 2 else None

    items = await eventually(workloads)
    assert [(w["kind"], w["name"], w["pods"]) for w in items] == [
        ("Pod", "lone", 1),
        ("ReplicaSet", "web", 2),
    ]
    assert items[1]["nodes"] == [node_name]


async def test_cluster_summary_counts_nodes_and_pods(plane: RolePlane, node_name: str) -> None:
    async def summary() -> dict[str, Any] | None:
        _status, body = await plane.call("GET", "/api/v1/clusters", Role.VIEWER)
        cluster: dict[str, Any] = body["items"][0]
        return cluster if cluster["nodes"] >= 1 else None

    cluster = await eventually(summary)
    assert cluster["name"] == "local"
    assert set(cluster["podsPerTier"]) == {tier.value for tier in Tier}
    assert cluster["fleetSafeModeRequested"] is False


# -- operator actions -------------------------------------------------------------------------


async def test_cordon_and_uncordon_set_unschedulable(
    plane: RolePlane, core_api: k8s.CoreV1Api, node_name: str
) -> None:
    status, _body = await plane.call("POST", f"/api/v1/nodes/{node_name}/cordon", Role.OPERATOR)
    assert status == 200
    assert core_api.read_node(node_name).spec.unschedulable is True
    status, _body = await plane.call("POST", f"/api/v1/nodes/{node_name}/uncordon", Role.OPERATOR)
    assert status == 200
    assert not core_api.read_node(node_name).spec.unschedulable


async def test_node_safe_mode_sets_and_removes_annotation(
    plane: RolePlane, core_api: k8s.CoreV1Api, node_name: str
) -> None:
    path = f"/api/v1/nodes/{node_name}/safe-mode"
    await plane.call("PUT", path, Role.OPERATOR)
    node_annotations = core_api.read_node(node_name).metadata.annotations
    assert node_annotations[annotations.SAFE_MODE_REQUESTED] == "true"
    await plane.call("DELETE", path, Role.OPERATOR)
    node_annotations = core_api.read_node(node_name).metadata.annotations or {}
    assert annotations.SAFE_MODE_REQUESTED not in node_annotations


async def test_fleet_safe_mode_uses_namespace(
    plane: RolePlane, core_api: k8s.CoreV1Api, namespace: str
) -> None:
    status, _body = await plane.call("PUT", "/api/v1/safe-mode", Role.OPERATOR)
    assert status == 200
    namespace_annotations = core_api.read_namespace(namespace).metadata.annotations
    assert namespace_annotations[annotations.SAFE_MODE_REQUESTED] == "true"

    async def fleet_flag() -> bool | None:
        _status, body = await plane.call("GET", "/api/v1/clusters", Role.VIEWER)
        return body["items"][0]["fleetSafeModeRequested"] or None

    assert await eventually(fleet_flag)
    await plane.call("DELETE", "/api/v1/safe-mode", Role.OPERATOR)
    namespace_annotations = core_api.read_namespace(namespace).metadata.annotations or {}
    assert annotations.SAFE_MODE_REQUESTED not in namespace_annotations


def set_pdb_status(
    policy: k8s.PolicyV1Api, namespace: str, name: str, *, healthy: int, allowed: int
) -> None:
    """Write the status the disruption controller would, since none runs here."""
    generation = policy.read_namespaced_pod_disruption_budget(name, namespace).metadata.generation
    policy.patch_namespaced_pod_disruption_budget_status(
        name,
        namespace,
        {
            "status": {
                "currentHealthy": healthy,
                "desiredHealthy": healthy,
                "expectedPods": healthy,
                "disruptionsAllowed": allowed,
                "observedGeneration": generation,
            }
        },
    )


async def test_drain_honours_pod_disruption_budget(
    plane: RolePlane,
    api_client: k8s.ApiClient,
    core_api: k8s.CoreV1Api,
    namespace: str,
    node_name: str,
) -> None:
    labels = {"app": "guarded"}
    pods = [bound_pod(name, node_name, labels=labels) for name in ("guarded-1", "guarded-2")]
    policy = create_guarded_pods(
        api_client, namespace, pods, labels, budget="guard", min_available=2
    )
    set_pdb_status(policy, namespace, "guard", healthy=2, allowed=0)

    # timeoutSeconds 0: one pass, without retries (tests/test_plane_explorer.py covers them).
    status, result = await plane.call(
        "POST", f"/api/v1/nodes/{node_name}/drain", Role.OPERATOR, {"timeoutSeconds": 0}
    )
    assert status == 200
    assert sorted(pod["name"] for pod in result["blocked"]) == ["guarded-1", "guarded-2"]
    assert result["evicted"] == []
    assert "429" in result["blocked"][0]["reason"]
    assert core_api.read_node(node_name).spec.unschedulable is True

    set_pdb_status(policy, namespace, "guard", healthy=2, allowed=1)
    status, result = await plane.call(
        "POST",
        f"/api/v1/nodes/{node_name}/drain",
        Role.OPERATOR,
        {"gracePeriodSeconds": 30, "timeoutSeconds": 0},
    )
    assert status == 200
    assert len(result["evicted"]) == 1
    assert len(result["blocked"]) == 1


async def test_drain_rejects_invalid_body(plane: RolePlane, node_name: str) -> None:
    status, body = await plane.call(
        "POST", f"/api/v1/nodes/{node_name}/drain", Role.OPERATOR, {"gracePeriodSeconds": -1}
    )
    assert status == 400
    assert "gracePeriodSeconds" in body["error"]


# -- the command line -------------------------------------------------------------------------


def test_token_create_prints_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "plane.sqlite3"
    arguments = ["plane", "token", "create", "--name", "ci", "--role", "viewer"]
    assert cli_main([*arguments, "--database-path", str(database)]) == 0
    token = capsys.readouterr().out.strip()
    assert cli_main([*arguments, "--database-path", str(database)]) == 2
    assert "already exists" in capsys.readouterr().err
    store = Store(database)
    principal = store.authenticate(token)
    store.close()
    assert principal is not None
    assert principal.role == Role.VIEWER


def test_serve_answers_on_loopback(
    control_plane: LocalControlPlane, tmp_path: Path, namespace: str
) -> None:
    with serving_plane(control_plane, tmp_path, namespace) as (base, token):
        assert http_status(f"{base}/api/v1/nodes", token) == 200
        assert http_status(f"{base}/api/v1/nodes") == 401


# -- generated requests ---------------------------------------------------------------------


@contextmanager
def serving_plane(
    control_plane: LocalControlPlane, workdir: Path, namespace: str
) -> Iterator[tuple[str, str]]:
    """Run ``temper plane serve`` on a free loopback port; yield its URL and an admin token."""
    database = workdir / "plane.sqlite3"
    token = create_tokens(database, {"ci": Role.ADMIN})["ci"]
    with plane_process(control_plane, database, namespace) as base:
        yield base, token


def test_generated_requests_get_no_server_error(
    control_plane: LocalControlPlane, tmp_path: Path, namespace: str
) -> None:
    schema = schemathesis.openapi.from_dict(build_registry().openapi())
    with serving_plane(control_plane, tmp_path, namespace) as (base, token):

        def send(case: Any) -> int:
            # Stream the response because the event stream and followed logs never end by
            # themselves. Only the status is checked.
            kwargs = case.as_transport_kwargs(
                base_url=base, headers={"Authorization": f"Bearer {token}"}
            )
            with requests.request(**kwargs, stream=True, timeout=30) as response:
                return int(response.status_code)

        statuses, server_errors = fuzz_operations(schema, send)
    assert len(statuses) >= len(build_registry().routes)
    assert server_errors == []


@pytest.mark.parametrize("after_seq", ["-1", "x", str(2**63)])
async def test_audit_export_rejects_invalid_after_seq(plane: RolePlane, after_seq: str) -> None:
    status, body = await plane.call("GET", f"/api/v1/audit?afterSeq={after_seq}", Role.ADMIN)
    assert status == 400
    assert "afterSeq" in body["error"]
