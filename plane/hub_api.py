"""The multi-cluster hub: a registry of peer planes, read views over every cluster, and
action forwarding that leaves the role check to the plane that owns the cluster.

Reads fan out to each peer with the viewer token an admin registered for it. Actions are
forwarded with the caller's own token for that peer, sent per request in the
``X-Temper-Peer-Token`` header or stored once by the caller. The peer authenticates that
token, checks its role and writes the audit entry, exactly as for a direct call. The hub never
acts with its registered read token, so a hub role grants nothing on a peer.
"""

import logging
import re
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from plane import hub_views
from plane.hub_client import PeerError
from plane.hub_schemas import (
    CLUSTER_HEADER,
    CREDENTIAL_REQUEST_SCHEMA,
    CREDENTIAL_SCHEMA,
    FORWARD_METHODS,
    FORWARD_PATH_PATTERN,
    HUB_CLUSTERS_SCHEMA,
    HUB_SAVINGS_SCHEMA,
    MAX_TOKEN_LENGTH,
    MAX_URL_LENGTH,
    PEER_NAME_PATTERN,
    PEER_NAME_SCHEMA,
    PEER_REQUEST_SCHEMA,
    PEER_SCHEMA,
    PEER_TOKEN_HEADER,
    TOKEN_PATTERN,
    TOKEN_SCHEMA,
    WHOAMI_SCHEMA,
    aggregate,
    list_of,
)
from plane.hub_service import HubRequestError, HubService, enabled_service
from plane.hub_store import Credential, HubStore, HubStoreError, Peer
from plane.routes import (
    PRINCIPAL_KEY,
    Handler,
    Parameter,
    Route,
    RouteRegistry,
    error_response,
)
from plane.savings_api import NAMESPACE_SCHEMA
from plane.schemas import NODE_SCHEMA, WORKLOAD_SCHEMA
from plane.store import Role

log = logging.getLogger(__name__)


# -- validation ---------------------------------------------------------------------------------


def _peer_name(request: web.Request, service: HubService) -> str:
    name = request.match_info["peer"]
    if len(name) > 63 or not PEER_NAME_PATTERN.match(name):
        raise HubRequestError(
            400, f"peer name {name[:100]!r} is invalid; use a DNS label such as east-1"
        )
    if name == service.settings.hub_cluster_name:
        raise HubRequestError(
            400,
            f"peer name {name!r} is this plane's own cluster name (--hub-cluster-name); "
            "choose another",
        )
    return name


def _host_allowed(url: URL, allowed: list[str]) -> bool:
    if not allowed:
        return True
    host = (url.host or "").lower()
    bracketed = f"[{host}]" if ":" in host else host
    candidates = {host, bracketed, f"{host}:{url.port}", f"{bracketed}:{url.port}"}
    return any(entry.strip().lower() in candidates for entry in allowed)


def validate_peer_url(raw: str, allowed: list[str]) -> str:
    """Return the normalised base URL of a peer; raise HubRequestError naming the problem."""
    try:
        url = URL(raw)
    except (ValueError, TypeError) as error:
        raise HubRequestError(400, f"peer url {raw[:200]!r} is not a URL: {error}") from error
    problem = None
    if url.scheme not in ("http", "https"):
        problem = "its scheme must be http or https"
    elif not url.host:
        problem = "it has no host"
    elif url.user is not None or url.password is not None:
        problem = "it must not carry a user or password; send the token in the token field"
    elif url.query_string or url.fragment:
        problem = "it must not have a query or fragment"
    elif not _host_allowed(url, allowed):
        problem = f"its host is not in --hub-allowed-peers ({', '.join(allowed)})"
    if problem is not None:
        raise HubRequestError(400, f"peer url {raw[:200]!r} is invalid: {problem}")
    return str(url).rstrip("/")


def validate_token(value: Any, where: str) -> str:
    """Return a token after checking it is printable ASCII without spaces."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_LENGTH:
        raise HubRequestError(
            400, f"{where} must be a string of 1 to {MAX_TOKEN_LENGTH} characters"
        )
    if not TOKEN_PATTERN.match(value):
        raise HubRequestError(400, f"{where} must be printable ASCII without spaces")
    return value


def validate_forward_path(path: str) -> str:
    """Return ``path`` when it names a plane API route other than the hub's own."""
    route, _, _query = path.partition("?")
    segments = route.split("/")[1:]
    problem = None
    if len(path) > MAX_URL_LENGTH or not FORWARD_PATH_PATTERN.match(path):
        problem = "it must start with /api/v1/ and contain only URL characters"
    elif "" in segments[:-1] or any(s in (".", "..") for s in segments):
        problem = "it must not contain empty, '.' or '..' segments"
    elif re.search("%2[ef]", route, re.IGNORECASE):
        problem = "it must not encode '.' or '/'"
    elif route.startswith("/api/v1/hub/") or route == "/api/v1/hub":
        problem = "forwarding to a peer's own hub routes is not supported"
    if problem is not None:
        raise HubRequestError(400, f"path {path[:200]!r} is invalid: {problem}")
    return path


async def _json_body(
    request: web.Request, schema_keys: set[str], required: set[str]
) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise HubRequestError(400, f"request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise HubRequestError(400, f"request body must be a JSON object, got {str(body)[:100]}")
    problems = []
    if unknown := sorted(set(body) - schema_keys):
        problems.append(f"unknown fields {', '.join(unknown)}")
    if missing := sorted(required - set(body)):
        problems.append(f"missing fields {', '.join(missing)}")
    if problems:
        raise HubRequestError(
            400,
            f"invalid request body: {'; '.join(problems)}; the fields are "
            f"{', '.join(sorted(schema_keys))}",
        )
    verify = body.get("verify", True)
    if not isinstance(verify, bool):
        raise HubRequestError(400, f"verify must be true or false, got {verify!r}")
    return body


# -- identity -----------------------------------------------------------------------------------


async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL_KEY]
    return web.json_response({"name": principal.name, "role": principal.role.value})


async def _verify_token(service: HubService, peer: str, url: str, token: str) -> tuple[str, str]:
    """Return the token's (name, role) on the peer, from its /api/v1/whoami."""
    try:
        response = await service.client.request(peer, url, "GET", "/api/v1/whoami", token=token)
    except PeerError as error:
        raise HubRequestError(
            502, f"cannot verify the token: {error}; fix the URL, or send verify: false"
        ) from error
    if response.status in (401, 403):
        raise HubRequestError(
            400, f"peer {peer} rejected the token (HTTP {response.status}); check the token"
        )
    try:
        body = response.json() if response.status == 200 else None
    except PeerError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise HubRequestError(
            400,
            f"peer {peer} responded to GET /api/v1/whoami with HTTP {response.status} and no "
            "identity; is the URL a Temper plane? Send verify: false to skip the check",
        )
    return body["name"], str(body.get("role"))


# -- the peer registry --------------------------------------------------------------------------


def _credential_json(credential: Credential | None) -> dict[str, Any] | None:
    if credential is None:
        return None
    return {
        "peer": credential.peer,
        "tokenName": credential.token_name,
        "tokenRole": credential.token_role,
        "updatedAtSeconds": credential.updated_at_seconds,
    }


def _peer_json(peer: Peer, credential: Credential | None) -> dict[str, Any]:
    return {
        "name": peer.name,
        "url": peer.url,
        "tokenName": peer.token_name,
        "tokenRole": peer.token_role,
        "createdBy": peer.created_by,
        "updatedAtSeconds": peer.updated_at_seconds,
        "myCredential": _credential_json(credential),
    }


async def list_peers(request: web.Request) -> web.Response:
    _service, store = enabled_service(request)
    mine = store.credentials(request[PRINCIPAL_KEY].name)
    peers = [_peer_json(peer, mine.get(peer.name)) for peer in store.peers()]
    return web.json_response({"items": peers})


async def put_peer(request: web.Request) -> web.Response:
    service, store = enabled_service(request)
    name = _peer_name(request, service)
    body = await _json_body(request, {"url", "token", "verify"}, {"url", "token"})
    if not isinstance(body["url"], str):
        raise HubRequestError(400, f"url must be a string, got {body['url']!r}")
    url = validate_peer_url(body["url"], service.settings.hub_allowed_peers)
    token = validate_token(body["token"], "token")
    token_name = token_role = None
    if body.get("verify", True):
        token_name, token_role = await _verify_token(service, name, url, token)
        if token_role != Role.VIEWER.value:
            raise HubRequestError(
                400,
                f"the token for peer {name} has role {token_role} there; register a viewer "
                "token, because the hub only reads with it and actions use each caller's own "
                "token",
            )
    principal = request[PRINCIPAL_KEY].name
    peer = store.put_peer(
        name, url, token, token_name=token_name, token_role=token_role, created_by=principal
    )
    return web.json_response(_peer_json(peer, store.credentials(principal).get(name)))


async def delete_peer(request: web.Request) -> web.Response:
    service, store = enabled_service(request)
    name = _peer_name(request, service)
    if not store.delete_peer(name):
        raise HubRequestError(404, f"peer {name} is not registered")
    return web.json_response({"object": f"peer/{name}", "action": "delete"})


def _registered_peer(store: HubStore, name: str) -> Peer:
    peer = store.peer(name)
    if peer is None:
        raise HubRequestError(
            404,
            f"peer {name} is not registered; an admin adds it with PUT /api/v1/hub/peers/{name}",
        )
    return peer


async def put_credential(request: web.Request) -> web.Response:
    service, store = enabled_service(request)
    peer = _registered_peer(store, _peer_name(request, service))
    body = await _json_body(request, {"token", "verify"}, {"token"})
    token = validate_token(body["token"], "token")
    token_name = token_role = None
    if body.get("verify", True):
        token_name, token_role = await _verify_token(service, peer.name, peer.url, token)
    credential = store.put_credential(
        request[PRINCIPAL_KEY].name, peer.name, token, token_name=token_name, token_role=token_role
    )
    return web.json_response(_credential_json(credential))


async def delete_credential(request: web.Request) -> web.Response:
    service, store = enabled_service(request)
    name = _peer_name(request, service)
    if not store.delete_credential(request[PRINCIPAL_KEY].name, name):
        raise HubRequestError(404, f"you have no stored token for peer {name}")
    return web.json_response({"object": f"peer/{name}/credential", "action": "delete"})


# -- action forwarding --------------------------------------------------------------------------


async def forward(request: web.Request) -> web.StreamResponse:
    service, store = enabled_service(request)
    cluster = request.match_info["cluster"]
    if cluster == service.settings.hub_cluster_name:
        raise HubRequestError(
            400, f"cluster {cluster} is this plane; call its /api/v1 routes directly"
        )
    if len(cluster) > 63 or not PEER_NAME_PATTERN.match(cluster):
        raise HubRequestError(400, f"cluster {cluster[:100]!r} is not a valid peer name")
    peer = _registered_peer(store, cluster)
    method = request.query.get("method", "")
    if method not in FORWARD_METHODS:
        raise HubRequestError(
            400, f"method {method[:20]!r} is invalid; use one of {', '.join(FORWARD_METHODS)}"
        )
    path = validate_forward_path(request.query.get("path", ""))
    raw_body = await request.read()
    if raw_body:
        try:
            orjson.loads(raw_body)
        except orjson.JSONDecodeError as error:
            raise HubRequestError(400, f"request body is not valid JSON: {error}") from error

    principal = request[PRINCIPAL_KEY].name
    header = request.headers.get(PEER_TOKEN_HEADER)
    if header is not None:
        token = validate_token(header, f"the {PEER_TOKEN_HEADER} header")
        source = "header"
    else:
        try:
            stored = store.credential_token(principal, peer.name)
        except HubStoreError as error:
            raise HubRequestError(400, str(error)) from error
        if stored is None:
            raise HubRequestError(
                400,
                f"no token of yours for cluster {peer.name}: send it in the "
                f"{PEER_TOKEN_HEADER} header or store it with PUT /api/v1/hub/peers/"
                f"{peer.name}/credential; the hub never acts with its own read token",
            )
        token, source = stored, "stored"

    log.info(
        "forwarding request to peer",
        extra={
            "peer": peer.name,
            "method": method,
            "path": path,
            "principal": principal,
            "credential": source,
        },
    )
    try:
        response = await service.client.request(
            peer.name, peer.url, method, path, token=token, body=raw_body or None
        )
    except PeerError as error:
        log.warning("forwarded request failed", extra={"peer": peer.name, "error": str(error)})
        raise HubRequestError(502, str(error)) from error
    log.info(
        "peer responded to forwarded request",
        extra={"peer": peer.name, "method": method, "path": path, "status": response.status},
    )
    return _forwarded_response(peer.name, response.status, response.content_type, response.body)


def _forwarded_response(cluster: str, status: int, content_type: str, body: bytes) -> web.Response:
    headers = {CLUSTER_HEADER: cluster}
    if status < 400:
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)
    message = body[:1000].decode(errors="replace")
    if content_type == "application/json":
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            message = decoded["error"]
    if status == 401:
        # The caller is authenticated at the hub; it is the peer that rejected their token.
        status = 403
        message = f"did not accept your token for it: {message}"
    response = error_response(status, f"cluster {cluster}: {message}")
    response.headers.update(headers)
    return response


# -- declarations -------------------------------------------------------------------------------


def _errors_as_json(handler: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HubRequestError as error:
            return error_response(error.status, str(error))

    return handle


PEER_PARAMETER = Parameter("peer", "path", "Name of the peer plane", PEER_NAME_SCHEMA)
CLUSTER_PARAMETER = Parameter("cluster", "path", "Name of the peer's cluster", PEER_NAME_SCHEMA)


def declare_routes(registry: RouteRegistry) -> None:
    """Add the identity route and the hub routes to ``registry``."""
    viewer, admin = Role.VIEWER, Role.ADMIN
    guarded = _errors_as_json
    aggregate_note = (
        "Fans out to every registered peer with its read token, concurrently and with "
        "--hub-peer-timeout-seconds each; unreachable peers are listed with the reason."
    )
    for route in (
        Route("GET", "/whoami", "whoami", "The name and role of the caller's token", viewer,
              guarded(whoami), WHOAMI_SCHEMA,
              description="A hub calls it to verify tokens stored for this plane."),
        Route("GET", "/hub/peers", "listHubPeers", "Registered peer planes (never their tokens)",
              viewer, guarded(list_peers), list_of(PEER_SCHEMA)),
        Route("PUT", "/hub/peers/{peer}", "putHubPeer",
              "Register or replace a peer plane with a viewer token for reads", admin,
              guarded(put_peer), PEER_SCHEMA, (PEER_PARAMETER,),
              request_schema=PEER_REQUEST_SCHEMA,
              description="The token is stored encrypted and is never returned."),
        Route("DELETE", "/hub/peers/{peer}", "deleteHubPeer",
              "Remove a peer and every user's stored token for it", admin,
              guarded(delete_peer), {"type": "object"}, (PEER_PARAMETER,)),
        Route("PUT", "/hub/peers/{peer}/credential", "putHubCredential",
              "Store the caller's own token for a peer, used to forward their actions",
              viewer, guarded(put_credential), CREDENTIAL_SCHEMA, (PEER_PARAMETER,),
              request_schema=CREDENTIAL_REQUEST_SCHEMA,
              description="Kept per hub token name and stored encrypted; the peer checks "
              "its role on every forwarded request."),
        Route("DELETE", "/hub/peers/{peer}/credential", "deleteHubCredential",
              "Remove the caller's stored token for a peer", viewer,
              guarded(delete_credential), {"type": "object"}, (PEER_PARAMETER,)),
        Route("GET", "/hub/clusters", "listHubClusters",
              "Summary of this cluster and every peer's", viewer, guarded(hub_views.hub_clusters),
              HUB_CLUSTERS_SCHEMA, description=aggregate_note),
        Route("GET", "/hub/nodes", "listHubNodes", "Nodes of every cluster", viewer,
              guarded(hub_views.hub_nodes), aggregate(NODE_SCHEMA), description=aggregate_note),
        Route("GET", "/hub/workloads", "listHubWorkloads", "Workloads of every cluster",
              viewer, guarded(hub_views.hub_workloads), aggregate(WORKLOAD_SCHEMA),
              (Parameter("namespace", "query", "Only this namespace", NAMESPACE_SCHEMA, False),),
              description=aggregate_note),
        Route("GET", "/hub/savings", "listHubSavings", "Savings totals of every cluster",
              viewer, guarded(hub_views.hub_savings), HUB_SAVINGS_SCHEMA,
              description=aggregate_note + " Amounts are not added up across clusters, "
              "whose price tables and currencies may differ."),
        Route("POST", "/hub/clusters/{cluster}/forward", "forwardToCluster",
              "Forward a request to a peer plane with the caller's own token for it", viewer,
              guarded(forward), {}, (
                  CLUSTER_PARAMETER,
                  Parameter("method", "query", "HTTP method to send to the peer",
                            {"type": "string", "enum": list(FORWARD_METHODS)}),
                  Parameter("path", "query", "Path and query on the peer, under /api/v1/",
                            {"type": "string", "pattern": "^/api/v1/", "maxLength": 2048}),
                  Parameter(PEER_TOKEN_HEADER, "header", "The caller's token for the peer; "
                            "default: the one stored with putHubCredential", TOKEN_SCHEMA,
                            False),
              ),
              request_schema={"description": "JSON body sent to the peer unchanged"},
              description="The peer authenticates the caller's token, checks its role and "
              "writes its own audit entry. Its status and body are returned, errors as "
              "{\"error\": \"cluster NAME: ...\"}; a 401 of the peer becomes 403."),
    ):  # fmt: skip
        registry.add(route)
