"""The multi-cluster hub: three real planes (two in this process, one `temper plane serve`
subprocess) on loopback against the one real API server, each with its own safe-mode
namespace, database and tokens, plus a peer that refuses connections and one that never
responds."""

import asyncio
import contextlib
import logging
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jsonschema
import pytest
import schemathesis
from kubernetes import client as k8s

from plane.app import build_registry
from plane.hub_schemas import HUB_CLUSTERS_SCHEMA, PEER_SCHEMA, aggregate, list_of
from plane.hub_store import HubStore, HubStoreError, TokenCipher
from plane.schemas import NODE_SCHEMA
from plane.settings import PlaneSettings
from plane.store import Role
from temper import annotations
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from tests.planeharness import (
    PlaneClient,
    create_tokens,
    eventually,
    fresh_node,
    fuzz_operations,
    plane_in_process,
    plane_process,
)

pytestmark = pytest.mark.controlplane

HUB_TIMEOUT_SECONDS = 1.0


@pytest.fixture
def make_namespace(core_api: k8s.CoreV1Api) -> Iterator[Any]:
    """Create extra namespaces, force-deleting their pods afterwards."""
    created: list[str] = []

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        core_api.create_namespace({"metadata": {"name": name}})
        created.append(name)
        return name

    yield make
    for name in created:
        core_api.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        core_api.delete_namespace(name)


@pytest.fixture
def node_name(core_api: k8s.CoreV1Api) -> Iterator[str]:
    yield from fresh_node(core_api, "hub")


@dataclass
class Fleet:
    """The hub and the peer east, both in this process, with their tokens by name."""

    hub: PlaneClient
    east: PlaneClient
    hub_tokens: dict[str, str]
    east_tokens: dict[str, str]
    east_namespace: str
    hub_database: Path
    hub_key: Path

    async def register(self, name: str, url: str, token: str, verify: bool = True) -> Any:
        status, body = await self.hub.call(
            "PUT",
            f"/api/v1/hub/peers/{name}",
            self.hub_tokens["root"],
            {"url": url, "token": token, "verify": verify},
        )
        assert status == 200, body
        return body


@pytest.fixture
async def fleet(
    control_plane: LocalControlPlane, namespace: str, make_namespace: Any, tmp_path: Path
) -> AsyncIterator[Fleet]:
    """The hub and the peer east, with the hub's read token registered.

    Hub tokens: alice, bob and carol are viewers, root is an admin. East tokens: hub-reader
    and bob-east are viewers, alice-east and ops-east operators, admin-east an admin.
    """
    east_namespace = make_namespace()
    hub_database, east_database = tmp_path / "hub.sqlite3", tmp_path / "east.sqlite3"
    hub_tokens = create_tokens(
        hub_database,
        {"alice": Role.VIEWER, "bob": Role.VIEWER, "carol": Role.VIEWER, "root": Role.ADMIN},
    )
    east_tokens = create_tokens(
        east_database,
        {
            "hub-reader": Role.VIEWER,
            "alice-east": Role.OPERATOR,
            "bob-east": Role.VIEWER,
            "ops-east": Role.OPERATOR,
            "admin-east": Role.ADMIN,
        },
    )
    hub_key = tmp_path / "keys" / "hub.key"
    hub_settings = PlaneSettings(
        database_path=hub_database,
        safe_mode_namespace=namespace,
        hub_enabled=True,
        hub_cluster_name="central",
        hub_key_path=hub_key,
        hub_peer_timeout_seconds=HUB_TIMEOUT_SECONDS,
        hub_allowed_peers=["127.0.0.1"],
    )
    east_settings = PlaneSettings(database_path=east_database, safe_mode_namespace=east_namespace)
    async with (
        plane_in_process(control_plane, east_settings) as east,
        plane_in_process(control_plane, hub_settings) as hub,
    ):
        fleet = Fleet(hub, east, hub_tokens, east_tokens, east_namespace, hub_database, hub_key)
        await fleet.register("east", east.url, east_tokens["hub-reader"])
        yield fleet


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A loopback TCP server that accepts connections and never responds; yield its port."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


# -- reads --------------------------------------------------------------------------------------


async def test_hub_reads_every_cluster(
    fleet: Fleet,
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    make_namespace: Any,
    node_name: str,
    tmp_path: Path,
) -> None:
    west_namespace = make_namespace()
    west_database = tmp_path / "west.sqlite3"
    west_tokens = create_tokens(west_database, {"hub-reader": Role.VIEWER})
    core_api.patch_namespace(
        fleet.east_namespace,
        {"metadata": {"annotations": {annotations.SAFE_MODE_REQUESTED: "true"}}},
    )
    with plane_process(control_plane, west_database, west_namespace) as west_url:
        await fleet.register("west", west_url, west_tokens["hub-reader"])
        await fleet.register("gone", f"http://127.0.0.1:{free_port()}", "x", verify=False)
        async with silent_server() as port:
            await fleet.register("stuck", f"http://127.0.0.1:{port}", "x", verify=False)

            async def clusters() -> dict[str, dict[str, Any]] | None:
                status, body = await fleet.hub.call(
                    "GET", "/api/v1/hub/clusters", fleet.hub_tokens["alice"]
                )
                assert status == 200, body
                jsonschema.validate(body, HUB_CLUSTERS_SCHEMA)
                found = by_name(body["items"])
                east = found["east"]["summary"]
                return found if east and east["fleetSafeModeRequested"] else None

            found = await eventually(clusters)
            status, nodes = await fleet.hub.call(
                "GET", "/api/v1/hub/nodes", fleet.hub_tokens["alice"]
            )

    assert set(found) == {"central", "east", "west", "gone", "stuck"}
    assert found["central"]["local"] is True
    assert found["central"]["summary"]["fleetSafeModeRequested"] is False
    assert found["east"]["reachable"] is True
    assert found["east"]["summary"]["name"] == "east"
    assert found["west"]["reachable"] is True
    assert found["west"]["summary"]["fleetSafeModeRequested"] is False
    assert found["gone"]["reachable"] is False
    assert "gone" in found["gone"]["error"]
    assert found["gone"]["summary"] is None
    assert found["stuck"]["reachable"] is False
    assert "did not respond" in found["stuck"]["error"]
    assert found["stuck"]["latencyMilliseconds"] < HUB_TIMEOUT_SECONDS * 1000 * 3

    assert status == 200
    jsonschema.validate(nodes, aggregate(NODE_SCHEMA))
    clusters_with_node = {item["cluster"] for item in nodes["items"] if item["name"] == node_name}
    assert clusters_with_node == {"central", "east", "west"}
    unreachable = {c["name"] for c in nodes["clusters"] if not c["reachable"]}
    assert unreachable == {"gone", "stuck"}


async def test_hub_savings_per_cluster(fleet: Fleet) -> None:
    status, body = await fleet.hub.call("GET", "/api/v1/hub/savings", fleet.hub_tokens["bob"])
    assert status == 200, body
    items = by_name(body["items"])
    assert set(items) == {"central", "east"}
    for name in ("central", "east"):
        assert items[name]["reachable"] is True, items[name]["error"]
        assert "cpuMillicores" in items[name]["savings"]["realizedCpu"]
        assert "nodesFreed" in items[name]["savings"]["realizedNodes"]


# -- forwarding -----------------------------------------------------------------------------


async def store_credential(fleet: Fleet, user: str, token: str) -> Any:
    status, body = await fleet.hub.call(
        "PUT", "/api/v1/hub/peers/east/credential", fleet.hub_tokens[user], {"token": token}
    )
    assert status == 200, body
    return body


def forward_path(method: str, path: str, cluster: str = "east") -> str:
    """The hub route that forwards ``method path`` to ``cluster``, with the query encoded."""
    query = urlencode({"method": method, "path": path}, safe="/")
    return f"/api/v1/hub/clusters/{cluster}/forward?{query}"


async def test_forward_checks_role_at_owner(
    fleet: Fleet, core_api: k8s.CoreV1Api, node_name: str
) -> None:
    alice = await store_credential(fleet, "alice", fleet.east_tokens["alice-east"])
    bob = await store_credential(fleet, "bob", fleet.east_tokens["bob-east"])
    assert (alice["tokenName"], alice["tokenRole"]) == ("alice-east", "operator")
    assert (bob["tokenName"], bob["tokenRole"]) == ("bob-east", "viewer")
    cordon = forward_path("POST", f"/api/v1/nodes/{node_name}/cordon")

    status, body = await fleet.hub.call("POST", cordon, fleet.hub_tokens["bob"])
    assert status == 403
    assert body["error"].startswith("cluster east: role viewer may not cordonNode")
    assert not core_api.read_node(node_name).spec.unschedulable

    status, body = await fleet.hub.call("POST", cordon, fleet.hub_tokens["alice"])
    assert status == 200, body
    assert body == {"object": f"node/{node_name}", "action": "cordon"}
    assert core_api.read_node(node_name).spec.unschedulable is True

    east_audit = await fleet.east.audit(fleet.east_tokens["admin-east"])
    cordons = [
        (entry["token"], entry["role"], entry["outcome"], entry["status"])
        for entry in east_audit
        if entry["operation"] == "cordonNode"
    ]
    assert cordons == [
        ("bob-east", "viewer", "denied", 403),
        ("alice-east", "operator", "allowed", 200),
    ]
    hub_audit = await fleet.hub.audit(fleet.hub_tokens["root"])
    forwards = [
        (entry["token"], entry["status"], entry["path"])
        for entry in hub_audit
        if entry["operation"] == "forwardToCluster"
    ]
    assert forwards == [("bob", 403, cordon), ("alice", 200, cordon)]


async def test_forward_with_header_token(fleet: Fleet, node_name: str) -> None:
    uncordon = forward_path("POST", f"/api/v1/nodes/{node_name}/uncordon")
    header = {"X-Temper-Peer-Token": fleet.east_tokens["ops-east"]}
    status, body = await fleet.hub.call("POST", uncordon, fleet.hub_tokens["carol"], None, header)
    assert status == 200, body
    assert body["action"] == "uncordon"
    east_audit = await fleet.east.audit(fleet.east_tokens["admin-east"])
    uncordons = [(e["token"], e["outcome"]) for e in east_audit if e["operation"] == "uncordonNode"]
    assert uncordons == [("ops-east", "allowed")]


async def test_forward_passes_body_and_unknown_token(fleet: Fleet, node_name: str) -> None:
    await store_credential(fleet, "alice", fleet.east_tokens["alice-east"])
    drain = forward_path("POST", f"/api/v1/nodes/{node_name}/drain")
    status, body = await fleet.hub.call(
        "POST", drain, fleet.hub_tokens["alice"], {"gracePeriodSeconds": -5}
    )
    assert status == 400
    assert "gracePeriodSeconds" in body["error"]
    header = {"X-Temper-Peer-Token": "temper_0000_unknown"}
    status, body = await fleet.hub.call("POST", drain, fleet.hub_tokens["carol"], None, header)
    assert status == 403
    assert "did not accept your token" in body["error"]


async def test_forward_without_credential_is_rejected(fleet: Fleet, node_name: str) -> None:
    cordon = forward_path("POST", f"/api/v1/nodes/{node_name}/cordon")
    status, body = await fleet.hub.call("POST", cordon, fleet.hub_tokens["carol"])
    assert status == 400
    assert "no token of yours for cluster east" in body["error"]
    assert "X-Temper-Peer-Token" in body["error"]
    east_audit = await fleet.east.audit(fleet.east_tokens["admin-east"])
    # The hub's registered read token was used for reads only, never for the action.
    assert "cordonNode" not in {entry["operation"] for entry in east_audit}
    assert {entry["token"] for entry in east_audit} <= {"hub-reader", "admin-east"}


FORWARD_ERRORS = {
    "method": ("east", "TRACE", "/api/v1/nodes", 400, "method 'TRACE'"),
    "outside api": ("east", "GET", "/healthz", 400, "must start with /api/v1/"),
    "dot segments": ("east", "GET", "/api/v1/nodes/../audit", 400, "'..'"),
    "encoded slash": ("east", "GET", "/api/v1/nodes%2f..", 400, "encode"),
    "peer hub": ("east", "GET", "/api/v1/hub/peers", 400, "hub routes"),
    "unknown cluster": ("north", "GET", "/api/v1/nodes", 404, "peer north is not registered"),
    "local cluster": ("central", "GET", "/api/v1/nodes", 400, "this plane"),
}


@pytest.mark.parametrize("case", list(FORWARD_ERRORS))
async def test_forward_rejects_invalid(fleet: Fleet, case: str) -> None:
    cluster, method, path, expected, message = FORWARD_ERRORS[case]
    url = forward_path(method, path, cluster)
    status, body = await fleet.hub.call("POST", url, fleet.hub_tokens["alice"])
    assert status == expected
    assert message in body["error"]


# -- the registry ---------------------------------------------------------------------------


async def test_registry_needs_admin(fleet: Fleet) -> None:
    for method in ("PUT", "DELETE"):
        status, body = await fleet.hub.call(
            method,
            "/api/v1/hub/peers/east",
            fleet.hub_tokens["alice"],
            {"url": fleet.east.url, "token": "x"},
        )
        assert status == 403
        assert "admin" in body["error"]
    audit = await fleet.hub.audit(fleet.hub_tokens["root"])
    denied = [(e["operation"], e["token"]) for e in audit if e["outcome"] == "denied"]
    assert denied == [("putHubPeer", "alice"), ("deleteHubPeer", "alice")]
    status, body = await fleet.hub.call("GET", "/api/v1/hub/peers", fleet.hub_tokens["alice"])
    assert [peer["name"] for peer in body["items"]] == ["east"]


async def test_registry_removes_peer(fleet: Fleet) -> None:
    root = fleet.hub_tokens["root"]
    status, _body = await fleet.hub.call("DELETE", "/api/v1/hub/peers/east", root)
    assert status == 200
    status, body = await fleet.hub.call("DELETE", "/api/v1/hub/peers/east", root)
    assert status == 404
    assert "peer east is not registered" in body["error"]
    _status, body = await fleet.hub.call("GET", "/api/v1/hub/clusters", root)
    assert [item["name"] for item in body["items"]] == ["central"]


REGISTRATION_ERRORS = {
    "scheme": ({"url": "ftp://127.0.0.1:1"}, 400, "scheme must be http or https"),
    "user in url": ({"url": "http://u:p@127.0.0.1:1"}, 400, "user or password"),
    "query": ({"url": "http://127.0.0.1:1/?a=b"}, 400, "query"),
    "host not allowed": ({"url": "http://peer.example.test"}, 400, "--hub-allowed-peers"),
    "token with space": ({"token": "a b"}, 400, "printable ASCII"),
    "unknown field": ({"tls": True}, 400, "unknown fields tls"),
    "operator token": ({"token": "east:alice-east"}, 400, "has role operator"),
    "wrong token": ({"token": "temper_00_wrong"}, 400, "rejected the token (HTTP 401)"),
    "unreachable": ({"url": "closed-port"}, 502, "cannot verify the token"),
}


@pytest.mark.parametrize("case", list(REGISTRATION_ERRORS))
async def test_registration_rejects_invalid(fleet: Fleet, case: str) -> None:
    change, expected, message = REGISTRATION_ERRORS[case]
    body = {"url": fleet.east.url, "token": fleet.east_tokens["hub-reader"], **change}
    if body["url"] == "closed-port":
        body["url"] = f"http://127.0.0.1:{free_port()}"
    if str(body["token"]).startswith("east:"):
        body["token"] = fleet.east_tokens[body["token"].removeprefix("east:")]
    status, answer = await fleet.hub.call(
        "PUT", "/api/v1/hub/peers/north", fleet.hub_tokens["root"], body
    )
    assert status == expected
    assert message in answer["error"]


async def test_peer_named_like_local_cluster_is_rejected(fleet: Fleet) -> None:
    status, body = await fleet.hub.call(
        "PUT",
        "/api/v1/hub/peers/central",
        fleet.hub_tokens["root"],
        {"url": fleet.east.url, "token": "x", "verify": False},
    )
    assert status == 400
    assert "own cluster name" in body["error"]


# -- secrecy ----------------------------------------------------------------------------------


async def test_peer_tokens_stay_secret(
    fleet: Fleet, node_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await store_credential(fleet, "alice", fleet.east_tokens["alice-east"])
    await fleet.hub.call(
        "POST",
        forward_path("POST", f"/api/v1/nodes/{node_name}/cordon"),
        fleet.hub_tokens["alice"],
    )
    header = {"X-Temper-Peer-Token": fleet.east_tokens["ops-east"]}
    await fleet.hub.call(
        "POST",
        forward_path("POST", f"/api/v1/nodes/{node_name}/uncordon"),
        fleet.hub_tokens["bob"],
        None,
        header,
    )
    secrets = [fleet.east_tokens[name] for name in ("hub-reader", "alice-east", "ops-east")]

    status, peers = await fleet.hub.call("GET", "/api/v1/hub/peers", fleet.hub_tokens["alice"])
    assert status == 200
    jsonschema.validate(peers, list_of(PEER_SCHEMA))
    [east] = peers["items"]
    assert east["tokenName"] == "hub-reader"
    assert east["myCredential"]["tokenName"] == "alice-east"
    listing = str(peers)
    audit = str(await fleet.hub.audit(fleet.hub_tokens["root"]))
    database = await asyncio.to_thread(fleet.hub_database.read_bytes)
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in secrets:
        assert secret not in listing
        assert secret not in audit
        assert secret.encode() not in database
        assert secret.rsplit("_", 1)[-1].encode() not in database
        assert secret not in logs
    assert "forwarding request to peer" in logs
    mode = stat.S_IMODE(os.stat(fleet.hub_key).st_mode)
    assert mode == 0o600


def test_other_key_cannot_decrypt(tmp_path: Path) -> None:
    database = tmp_path / "hub.sqlite3"
    first = HubStore(database, TokenCipher(tmp_path / "first.key"))
    first.put_peer("east", "http://127.0.0.1:1", "temper_ab_secret", token_name=None,
                   token_role=None, created_by="root")  # fmt: skip
    assert first.peer_token("east") == "temper_ab_secret"
    first.close()
    second = HubStore(database, TokenCipher(tmp_path / "second.key"))
    with pytest.raises(HubStoreError, match=r"second\.key is not the one"):
        second.peer_token("east")
    second.close()


def test_short_key_file_is_rejected(tmp_path: Path) -> None:
    key = tmp_path / "short.key"
    key.write_text("too-short\n")
    cipher = TokenCipher(key)
    with pytest.raises(HubStoreError, match="at least 32"):
        cipher.encrypt("x")


# -- a plane without the hub ------------------------------------------------------------------


async def test_disabled_hub_answers_404(
    control_plane: LocalControlPlane, namespace: str, tmp_path: Path
) -> None:
    database = tmp_path / "plain.sqlite3"
    tokens = create_tokens(database, {"viewer": Role.VIEWER})
    settings = PlaneSettings(database_path=database, safe_mode_namespace=namespace)
    async with plane_in_process(control_plane, settings) as plane:
        status, body = await plane.call("GET", "/api/v1/hub/clusters", tokens["viewer"])
        assert status == 404
        assert "--hub-enabled" in body["error"]
        status, body = await plane.call("GET", "/api/v1/whoami", tokens["viewer"])
        assert status == 200
        assert body == {"name": "viewer", "role": "viewer"}


# -- generated requests -----------------------------------------------------------------------

FUZZED_PREFIXES = ("/api/v1/hub", "/api/v1/savings", "/api/v1/whoami")


def test_generated_hub_requests_get_no_server_error(
    control_plane: LocalControlPlane, make_namespace: Any, tmp_path: Path
) -> None:
    """A hub and one peer as `temper plane serve` processes; the hub may reach only that
    peer's port, so generated peer URLs never leave loopback."""
    peer_database, hub_database = tmp_path / "peer.sqlite3", tmp_path / "hub.sqlite3"
    peer_tokens = create_tokens(peer_database, {"reader": Role.VIEWER})
    hub_tokens = create_tokens(hub_database, {"root": Role.ADMIN})
    schema = schemathesis.openapi.from_dict(build_registry().openapi())
    with plane_process(control_plane, peer_database, make_namespace()) as peer_url:
        peer_port = peer_url.rsplit(":", 1)[1]
        hub_arguments = [
            "--hub-enabled",
            "--hub-key-path", str(tmp_path / "hub.key"),
            "--hub-allowed-peers", f"127.0.0.1:{peer_port}",
            "--hub-peer-timeout-seconds", "2",
        ]  # fmt: skip
        with plane_process(
            control_plane, hub_database, make_namespace(), *hub_arguments
        ) as hub_url:
            headers = {"Authorization": f"Bearer {hub_tokens['root']}"}
            registration = {"url": peer_url, "token": peer_tokens["reader"]}

            async def register() -> int:
                async with (
                    aiohttp.ClientSession() as http,
                    http.put(
                        f"{hub_url}/api/v1/hub/peers/east", json=registration, headers=headers
                    ) as response,
                ):
                    return response.status

            assert asyncio.run(register()) == 200

            def send(case: Any) -> int:
                response = case.call(base_url=hub_url, headers=headers, timeout=30)
                return int(response.status_code)

            statuses, server_errors = fuzz_operations(schema, send, FUZZED_PREFIXES)
    fuzzed = [
        r for r in build_registry().routes if ("/api/v1" + r.path).startswith(FUZZED_PREFIXES)
    ]
    assert len(statuses) >= len(fuzzed)
    assert 200 in statuses
    assert server_errors == []
