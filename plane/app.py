"""The aiohttp application of the management plane: read endpoints over the watch cache
and operator actions against the API server."""

import json
import logging
import re
from typing import Any

from aiohttp import web

from plane import actions, explorer_routes, hub_api, hub_service, savings_api, views
from plane.cache import ClusterCache
from plane.routes import Parameter, Route, RouteRegistry, error_response
from plane.schemas import (
    ACTION_RESULT_SCHEMA,
    CLUSTER_SCHEMA,
    DRAIN_REQUEST_SCHEMA,
    DRAIN_RESULT_SCHEMA,
    NAME_SCHEMA,
    NODE_SCHEMA,
    POD_SCHEMA,
    WORKLOAD_SCHEMA,
    list_of,
)
from plane.settings import PlaneSettings
from plane.store import Role, Store, audit_jsonl
from plane.ui import install_ui
from temper.errors import KubernetesError
from temper.kube import KubeClient

log = logging.getLogger(__name__)

CLUSTER_NAME = "local"
# Largest value of a signed 64-bit SQLite INTEGER, the type of the audit sequence number.
MAX_SQLITE_INTEGER = 2**63 - 1

CACHE_KEY = web.AppKey("cache", ClusterCache)
CLIENT_KEY = web.AppKey("client", KubeClient)
STORE_KEY = web.AppKey("store", Store)
SETTINGS_KEY = web.AppKey("settings", PlaneSettings)
REGISTRY_KEY = web.AppKey("registry", RouteRegistry)

_NAME_PATTERN = re.compile(NAME_SCHEMA["pattern"])

NODE_PARAMETER = Parameter("node", "path", "Name of the Node", NAME_SCHEMA)


def _name_parameter(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if len(value) > NAME_SCHEMA["maxLength"] or not _NAME_PATTERN.match(value):
        raise web.HTTPBadRequest(
            text=json.dumps(
                {"error": f"{name} {value[:300]!r} is not a valid Kubernetes object name"}
            ),
            content_type="application/json",
        )
    return value


def _kube_error(error: KubernetesError, object_name: str) -> web.Response:
    if error.status == 404:
        return error_response(404, f"{object_name} not found")
    log.warning("API server request failed", extra={"object": object_name, "error": str(error)})
    return error_response(502, f"{object_name}: {error}")


# -- read endpoints -------------------------------------------------------------------------


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[REGISTRY_KEY].openapi())


async def list_clusters(request: web.Request) -> web.Response:
    cache = request.app[CACHE_KEY]
    summary = views.cluster_summary(
        CLUSTER_NAME,
        cache.nodes.store.values(),
        cache.pods.store.values(),
        fleet_safe_mode=cache.fleet_safe_mode(),
    )
    return web.json_response({"items": [summary]})


async def list_nodes(request: web.Request) -> web.Response:
    store = request.app[CACHE_KEY].nodes.store
    return web.json_response({"items": [views.node_summary(store[key]) for key in sorted(store)]})


async def get_node(request: web.Request) -> web.Response:
    name = _name_parameter(request, "node")
    node = request.app[CACHE_KEY].nodes.store.get(name)
    if node is None:
        return error_response(404, f"node {name} not found")
    return web.json_response(views.node_summary(node))


async def list_node_pods(request: web.Request) -> web.Response:
    name = _name_parameter(request, "node")
    cache = request.app[CACHE_KEY]
    if name not in cache.nodes.store:
        return error_response(404, f"node {name} not found")
    return web.json_response({"items": [views.pod_summary(pod) for pod in cache.pods_on(name)]})


async def list_workloads(request: web.Request) -> web.Response:
    namespace = request.query.get("namespace")
    pods = [
        pod
        for pod in request.app[CACHE_KEY].pods.store.values()
        if not namespace or (pod.get("metadata") or {}).get("namespace") == namespace
    ]
    return web.json_response({"items": views.workload_summaries(pods)})


async def export_audit(request: web.Request) -> web.StreamResponse:
    output_format = request.query.get("format", "jsonl")
    if output_format != "jsonl":
        return error_response(400, f"format {output_format!r} is not supported; use jsonl")
    raw_after = request.query.get("afterSeq", "0")
    try:
        after_seq = int(raw_after)
    except ValueError:
        after_seq = -1
    if not 0 <= after_seq <= MAX_SQLITE_INTEGER:
        return error_response(
            400, f"afterSeq {raw_after[:50]!r} is not an integer from 0 to {MAX_SQLITE_INTEGER}"
        )
    entries = request.app[STORE_KEY].audit_entries(after_seq)
    return web.Response(text="".join(audit_jsonl(entries)), content_type="application/x-ndjson")


# -- operator actions -----------------------------------------------------------------------


def _action_result(obj: str, action: str) -> web.Response:
    return web.json_response({"object": obj, "action": action})


async def _set_unschedulable(request: web.Request, unschedulable: bool) -> web.Response:
    name = _name_parameter(request, "node")
    action = "cordon" if unschedulable else "uncordon"
    try:
        await actions.set_unschedulable(request.app[CLIENT_KEY], name, unschedulable)
    except KubernetesError as error:
        return _kube_error(error, f"node {name}")
    return _action_result(f"node/{name}", action)


async def cordon_node(request: web.Request) -> web.Response:
    return await _set_unschedulable(request, True)


async def uncordon_node(request: web.Request) -> web.Response:
    return await _set_unschedulable(request, False)


async def _drain_options(request: web.Request) -> tuple[int | None, float]:
    """Read a drain's grace period and timeout from the body, else from the settings."""
    settings = request.app[SETTINGS_KEY]
    grace: Any = settings.eviction_grace_period_seconds
    timeout: Any = settings.drain_timeout_seconds
    if not request.can_read_body:
        return grace, timeout
    try:
        body: Any = await request.json()
    except json.JSONDecodeError as error:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"request body is not valid JSON: {error}"}),
            content_type="application/json",
        ) from error
    valid = isinstance(body, dict) and not set(body) - {"gracePeriodSeconds", "timeoutSeconds"}
    if valid:
        grace = body.get("gracePeriodSeconds", grace)
        timeout = body.get("timeoutSeconds", timeout)
        grace_valid = grace is None or (
            isinstance(grace, int) and not isinstance(grace, bool) and 0 <= grace <= 86400
        )
        timeout_valid = (
            isinstance(timeout, int | float)
            and not isinstance(timeout, bool)
            and 0 <= timeout <= 3600
        )
        valid = grace_valid and timeout_valid
    if not valid:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "error": f"invalid drain request {str(body)[:200]}; expected an object "
                    "with an optional integer gracePeriodSeconds between 0 and 86400 and an "
                    "optional number timeoutSeconds between 0 and 3600"
                }
            ),
            content_type="application/json",
        )
    return grace, float(timeout)


async def drain_node(request: web.Request) -> web.Response:
    name = _name_parameter(request, "node")
    grace, timeout = await _drain_options(request)
    try:
        result = await actions.drain(
            request.app[CLIENT_KEY],
            name,
            grace,
            timeout_seconds=timeout,
            retry_interval_seconds=request.app[SETTINGS_KEY].drain_retry_interval_seconds,
        )
    except KubernetesError as error:
        return _kube_error(error, f"node {name}")
    return web.json_response({"node": name, **result})


async def _node_safe_mode(request: web.Request, requested: bool) -> web.Response:
    name = _name_parameter(request, "node")
    try:
        await actions.set_safe_mode(request.app[CLIENT_KEY], actions.node_path(name), requested)
    except KubernetesError as error:
        return _kube_error(error, f"node {name}")
    return _action_result(f"node/{name}", "safe-mode-on" if requested else "safe-mode-off")


async def request_node_safe_mode(request: web.Request) -> web.Response:
    return await _node_safe_mode(request, True)


async def clear_node_safe_mode(request: web.Request) -> web.Response:
    return await _node_safe_mode(request, False)


async def _fleet_safe_mode(request: web.Request, requested: bool) -> web.Response:
    namespace = request.app[SETTINGS_KEY].safe_mode_namespace
    path = f"/api/v1/namespaces/{namespace}"
    try:
        await actions.set_safe_mode(request.app[CLIENT_KEY], path, requested)
    except KubernetesError as error:
        return _kube_error(error, f"namespace {namespace}")
    return _action_result(
        f"namespace/{namespace}", "safe-mode-on" if requested else "safe-mode-off"
    )


async def request_fleet_safe_mode(request: web.Request) -> web.Response:
    return await _fleet_safe_mode(request, True)


async def clear_fleet_safe_mode(request: web.Request) -> web.Response:
    return await _fleet_safe_mode(request, False)


# -- the registry -----------------------------------------------------------------------------


def build_registry() -> RouteRegistry:
    """Declare every route of ``/api/v1``."""
    registry = RouteRegistry(
        "Temper management plane",
        "Read the cluster's Temper state (nodes, pods and their tiers, workloads) and run "
        "operator actions (cordon, drain, safe mode). Every request needs a bearer token.",
    )
    viewer, operator, admin = Role.VIEWER, Role.OPERATOR, Role.ADMIN
    nodes = list_of(NODE_SCHEMA)
    for route in (
        Route("GET", "/openapi.json", "getOpenAPI", "This OpenAPI document", viewer,
              get_openapi, {"type": "object"}),
        Route("GET", "/clusters", "listClusters", "Summary of each cluster", viewer,
              list_clusters, list_of(CLUSTER_SCHEMA),
              description="This slice serves one cluster, named local."),
        Route("GET", "/nodes", "listNodes", "Nodes with allocatable, scheduler and tier load",
              viewer, list_nodes, nodes),
        Route("GET", "/nodes/{node}", "getNode", "One Node", viewer, get_node, NODE_SCHEMA,
              (NODE_PARAMETER,)),
        Route("GET", "/nodes/{node}/pods", "listNodePods",
              "Pods bound to a Node with tier and layer", viewer, list_node_pods,
              list_of(POD_SCHEMA), (NODE_PARAMETER,),
              description="The layer is derived from the node agent's rules, not read from "
              "the node."),
        Route("GET", "/workloads", "listWorkloads", "Pods grouped by namespace and controller",
              viewer, list_workloads, list_of(WORKLOAD_SCHEMA),
              (Parameter("namespace", "query", "Only this namespace", NAME_SCHEMA, False),)),
        Route("POST", "/nodes/{node}/cordon", "cordonNode", "Mark a Node unschedulable",
              operator, cordon_node, ACTION_RESULT_SCHEMA, (NODE_PARAMETER,)),
        Route("POST", "/nodes/{node}/uncordon", "uncordonNode", "Mark a Node schedulable",
              operator, uncordon_node, ACTION_RESULT_SCHEMA, (NODE_PARAMETER,)),
        Route("POST", "/nodes/{node}/drain", "drainNode",
              "Cordon a Node and evict its pods, honouring PodDisruptionBudgets",
              operator, drain_node, DRAIN_RESULT_SCHEMA, (NODE_PARAMETER,),
              request_schema=DRAIN_REQUEST_SCHEMA,
              description="Mirror and DaemonSet pods are skipped. Evictions a "
              "PodDisruptionBudget blocks (HTTP 429) are retried until timeoutSeconds, then "
              "the drain waits for the evicted pods to go; pods still blocked are listed "
              "under blocked and complete is false."),
        Route("PUT", "/nodes/{node}/safe-mode", "requestNodeSafeMode",
              "Request safe mode on a Node", operator, request_node_safe_mode,
              ACTION_RESULT_SCHEMA, (NODE_PARAMETER,)),
        Route("DELETE", "/nodes/{node}/safe-mode", "clearNodeSafeMode",
              "Resume enforcement on a Node", operator, clear_node_safe_mode,
              ACTION_RESULT_SCHEMA, (NODE_PARAMETER,)),
        Route("PUT", "/safe-mode", "requestFleetSafeMode", "Request safe mode on every Node",
              operator, request_fleet_safe_mode, ACTION_RESULT_SCHEMA),
        Route("DELETE", "/safe-mode", "clearFleetSafeMode", "Resume enforcement fleet-wide",
              operator, clear_fleet_safe_mode, ACTION_RESULT_SCHEMA),
        Route("GET", "/audit", "exportAudit", "The audit log as JSON lines", admin,
              export_audit, {"type": "string"},
              (Parameter("format", "query", "Output format", {"type": "string",
                         "enum": ["jsonl"]}, False),
               Parameter("afterSeq", "query", "Only entries with a higher sequence number",
                         {"type": "integer", "minimum": 0, "maximum": MAX_SQLITE_INTEGER}, False)),
              response_media_type="application/x-ndjson"),
    ):  # fmt: skip
        registry.add(route)
    savings_api.declare_routes(registry)
    explorer_routes.declare_routes(registry)
    hub_api.declare_routes(registry)
    return registry


async def healthz(request: web.Request) -> web.Response:
    """Report 200 once the watch cache has listed everything once, 503 before."""
    if request.app[CACHE_KEY].synced:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="watch cache not synced yet\n")


def build_app(
    settings: PlaneSettings, client: KubeClient, store: Store, cache: ClusterCache
) -> web.Application:
    """Build the application; the caller starts and stops ``cache``."""
    app = web.Application()
    registry = build_registry()
    app[CACHE_KEY] = cache
    app[CLIENT_KEY] = client
    app[STORE_KEY] = store
    app[SETTINGS_KEY] = settings
    app[REGISTRY_KEY] = registry
    registry.install(app, store)
    savings_api.setup(app, client, settings)
    explorer_routes.setup(app, client, cache, settings)
    hub_service.setup(app, settings, cache)
    app.router.add_get("/healthz", healthz)
    install_ui(app)
    return app
