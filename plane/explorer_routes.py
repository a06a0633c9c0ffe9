"""The explorer's endpoints: pod detail, manifests, container logs, revision history and
diffs, per-pod performance and scheduling, the live event stream, trace download and the
rollout restart. ``declare_routes`` adds them to the registry; ``setup`` attaches their state
to the application."""

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from plane import explorer, performance
from plane.agents import AgentClient, AgentError
from plane.cache import ClusterCache
from plane.events import KINDS, EventHub, StreamFilter, TooManySubscribersError
from plane.explorer_schemas import (
    CONTAINER_SCHEMA,
    DIFF_SCHEMA,
    EVENT_STREAM_SCHEMA,
    MANIFEST_SCHEMA,
    NAMESPACE_SCHEMA,
    PERFORMANCE_SCHEMA,
    POD_DETAIL_SCHEMA,
    RESTART_RESULT_SCHEMA,
    REVISIONS_SCHEMA,
    SCHEDULING_SCHEMA,
    WORKLOAD_KIND_SCHEMA,
)
from plane.routes import Handler, Parameter, Route, RouteRegistry, error_response
from plane.schemas import NAME_SCHEMA
from plane.settings import PlaneSettings
from plane.store import Role
from temper.errors import KubernetesError
from temper.kube import KubeClient

log = logging.getLogger(__name__)

# How often a stream that has nothing to send checks whether its client is still there.
DISCONNECT_CHECK_SECONDS = 1.0
MAX_TAIL_LINES = 1_000_000
MAX_SINCE_SECONDS = 10 * 365 * 86400
MAX_REVISION = 2**31 - 1


@dataclass
class ExplorerState:
    """State shared by the explorer's handlers: clients, settings and the event hub."""

    client: KubeClient
    cache: ClusterCache
    settings: PlaneSettings
    agents: AgentClient
    hub: EventHub
    closing: asyncio.Event = field(default_factory=asyncio.Event)


EXPLORER_KEY = web.AppKey("explorer", ExplorerState)


class ParameterError(Exception):
    """A path or query parameter is invalid; the message names it, its value and the fix."""


# -- parameters -------------------------------------------------------------------------------


def _pattern_parameter(request: web.Request, name: str, schema: Mapping[str, Any]) -> str:
    value = request.match_info[name]
    if len(value) > int(schema["maxLength"]) or not re.match(schema["pattern"], value):
        raise ParameterError(
            f"{name} {value[:300]!r} is not a valid Kubernetes name: lower-case letters, digits "
            f"and '-' (and '.' in object names), at most {schema['maxLength']} characters"
        )
    return value


def _namespace(request: web.Request) -> str:
    return _pattern_parameter(request, "namespace", NAMESPACE_SCHEMA)


def _name(request: web.Request, name: str) -> str:
    return _pattern_parameter(request, name, NAME_SCHEMA)


def _kind(request: web.Request) -> explorer.WorkloadKind:
    value = request.match_info["kind"]
    kind = explorer.WORKLOAD_KINDS.get(value)
    if kind is None:
        raise ParameterError(
            f"kind {value[:100]!r} is not supported; use one of "
            f"{', '.join(sorted(explorer.WORKLOAD_KINDS))}"
        )
    return kind


def _int_query(request: web.Request, name: str, minimum: int, maximum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise ParameterError(f"{name} {raw[:50]!r} is not an integer from {minimum} to {maximum}")
    return value


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise ParameterError(f"{name} {raw[:50]!r} is not a boolean; use true or false")
    return raw == "true"


def _float_query(
    request: web.Request, name: str, default: float, maximum: float, setting: str
) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= maximum:
        raise ParameterError(
            f"{name} {raw[:50]!r} is not a number above 0 and at most {maximum:g} ({setting})"
        )
    return value


def _handle_errors(handler: Handler) -> Handler:
    """Turn the explorer's exceptions into JSON error responses."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ParameterError as error:
            return error_response(400, str(error))
        except explorer.ExplorerError as error:
            return error_response(error.status, error.message)
        except AgentError as error:
            return error_response(error.status, error.message)

    return wrapped


def _state(request: web.Request) -> ExplorerState:
    return request.app[EXPLORER_KEY]


def _timeout(request: web.Request) -> float:
    return _state(request).settings.kube_request_timeout_seconds


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


# -- pods -------------------------------------------------------------------------------------


_PodPanelBuilder = Callable[[KubeClient, AgentClient, str, str, float], Awaitable[dict[str, Any]]]


def _pod_panel_handler(build_panel: _PodPanelBuilder) -> Handler:
    """Make a handler that returns the JSON panel ``build_panel`` builds for the path's pod."""

    @_handle_errors
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace, name = _namespace(request), _name(request, "pod")
        state = _state(request)
        panel = await build_panel(state.client, state.agents, namespace, name, _timeout(request))
        return web.json_response(panel)

    return handler


get_pod = _pod_panel_handler(explorer.pod_detail)
get_pod_performance = _pod_panel_handler(performance.pod_performance)
get_pod_scheduling = _pod_panel_handler(performance.pod_scheduling)


@_handle_errors
async def get_pod_manifest(request: web.Request) -> web.StreamResponse:
    namespace, name = _namespace(request), _name(request, "pod")
    pod = await explorer.read(
        _state(request).client,
        explorer.pod_path(namespace, name),
        f"pod {namespace}/{name}",
        _timeout(request),
    )
    return web.json_response(explorer.without_managed_fields(pod))


def _log_error(error: KubernetesError, pod: str, container: str, node: str) -> web.Response:
    message = str(error)
    if error.status == 404:
        return error_response(404, f"pod {pod} or its container {container} not found")
    if error.status == 400:
        # The API server passes on the kubelet's refusals, e.g. a container still waiting.
        return error_response(409, f"no logs for container {container} of pod {pod}: {message}")
    log.warning(
        "container logs unavailable",
        extra={"pod": pod, "container": container, "node": node, "error": message},
    )
    return error_response(
        502,
        f"the API server could not get the logs of container {container} of pod {pod} from "
        f"the kubelet of node {node}: {message}",
    )


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    closing: asyncio.Event,
) -> str:
    """Copy ``upstream``'s body to ``response`` until it ends, the client goes away or the
    plane shuts down; return which of the three happened."""
    reader = upstream.content
    while not closing.is_set():
        try:
            chunk = await asyncio.wait_for(reader.readany(), DISCONNECT_CHECK_SECONDS)
        except TimeoutError:
            if _client_gone(request):
                return "client disconnected"
            continue
        except (aiohttp.ClientError, OSError) as error:
            log.warning("upstream stream broke", extra={"path": request.path, "error": repr(error)})
            return "upstream broke"
        if not chunk:
            return "upstream ended"
        try:
            await response.write(chunk)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return "client disconnected"
    return "plane shutting down"


async def _relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: Mapping[str, str],
    closing: asyncio.Event,
) -> tuple[web.StreamResponse, str]:
    """Stream ``upstream``'s body to the client with ``headers``, then close ``upstream``.

    Return the response and how the stream ended: an outcome of ``_pump``, "not started" or
    "client disconnected".
    """
    response = web.StreamResponse(headers=headers)
    outcome = "not started"
    try:
        await response.prepare(request)
        outcome = await _pump(request, response, upstream, closing)
        if outcome == "upstream ended":
            await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        outcome = "client disconnected"
    finally:
        upstream.close()
    return response, outcome


@_handle_errors
async def get_container_logs(request: web.Request) -> web.StreamResponse:
    namespace, name = _namespace(request), _name(request, "pod")
    container = _pattern_parameter(request, "container", CONTAINER_SCHEMA)
    tail_lines = _int_query(request, "tailLines", 0, MAX_TAIL_LINES)
    since_seconds = _int_query(request, "sinceSeconds", 1, MAX_SINCE_SECONDS)
    follow = _bool_query(request, "follow")
    previous = _bool_query(request, "previous")
    timestamps = _bool_query(request, "timestamps")
    state = _state(request)
    pod_key = f"{namespace}/{name}"
    pod = await explorer.read(
        state.client, explorer.pod_path(namespace, name), f"pod {pod_key}", _timeout(request)
    )
    names = explorer.container_names(pod)
    if container not in names:
        return error_response(
            404, f"container {container} not found in pod {pod_key}; its containers: "
            f"{', '.join(names)}"
        )  # fmt: skip
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    if not node:
        return error_response(409, f"pod {pod_key} is not bound to a node yet; it has no logs")
    params: dict[str, Any] = {
        "container": container,
        "tailLines": tail_lines,
        "sinceSeconds": since_seconds,
        "follow": "true" if follow else None,
        "previous": "true" if previous else None,
        "timestamps": "true" if timestamps else None,
        "limitBytes": None if follow else state.settings.log_limit_bytes,
    }
    try:
        upstream = await state.client.stream(
            explorer.pod_path(namespace, name) + "/log",
            params,
            timeout_seconds=None if follow else _timeout(request),
        )
    except KubernetesError as error:
        return _log_error(error, pod_key, container, node)
    started = time.monotonic()
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    response, outcome = await _relay(request, upstream, headers, state.closing)
    if follow:
        log.info(
            "log stream ended",
            extra={
                "pod": pod_key,
                "container": container,
                "why": outcome,
                "seconds": round(time.monotonic() - started, 1),
            },
        )
    return response


# -- workloads --------------------------------------------------------------------------------


_Result = TypeVar("_Result")


@dataclass(frozen=True)
class _WorkloadTarget:
    """The workload that a request's path names, and the client and timeout to reach it."""

    namespace: str
    kind: explorer.WorkloadKind
    name: str
    client: KubeClient
    timeout_seconds: float

    @classmethod
    def parse(cls, request: web.Request) -> "_WorkloadTarget":
        """Read the namespace, kind and name path parameters. Raise ParameterError if invalid."""
        namespace, kind, name = _namespace(request), _kind(request), _name(request, "name")
        return cls(namespace, kind, name, _state(request).client, _timeout(request))

    async def call(
        self,
        operation: Callable[
            [KubeClient, explorer.WorkloadKind, str, str, float], Awaitable[_Result]
        ],
    ) -> _Result:
        """Call an explorer workload function with this workload and return its result."""
        return await operation(
            self.client, self.kind, self.namespace, self.name, self.timeout_seconds
        )


@_handle_errors
async def get_workload_manifest(request: web.Request) -> web.StreamResponse:
    target = _WorkloadTarget.parse(request)
    obj = await target.call(explorer.workload)
    return web.json_response(explorer.without_managed_fields(obj))


@_handle_errors
async def list_workload_revisions(request: web.Request) -> web.StreamResponse:
    target = _WorkloadTarget.parse(request)
    entries = await target.call(explorer.revisions)
    return web.json_response(
        {
            "namespace": target.namespace,
            "kind": target.kind.kind,
            "name": target.name,
            "items": entries,
        }
    )


@_handle_errors
async def diff_workload_revisions(request: web.Request) -> web.StreamResponse:
    target = _WorkloadTarget.parse(request)
    from_revision = _int_query(request, "from", 0, MAX_REVISION)
    to_revision = _int_query(request, "to", 0, MAX_REVISION)
    entries = await target.call(explorer.revisions)
    diff = explorer.revision_diff(
        target.kind,
        target.namespace,
        target.name,
        entries,
        from_revision=from_revision,
        to_revision=to_revision,
    )
    return web.json_response(diff)


@_handle_errors
async def restart_workload(request: web.Request) -> web.StreamResponse:
    target = _WorkloadTarget.parse(request)
    restarted_at = await target.call(explorer.rollout_restart)
    return web.json_response(
        {
            "object": f"{target.kind.kind.lower()}/{target.namespace}/{target.name}",
            "action": "restart",
            "restartedAt": restarted_at,
        }
    )


# -- nodes: trace -----------------------------------------------------------------------------


@_handle_errors
async def download_node_trace(request: web.Request) -> web.StreamResponse:
    node = _name(request, "node")
    state = _state(request)
    seconds = _float_query(
        request, "seconds", 5.0, state.settings.trace_max_seconds, "--trace-max-seconds"
    )
    await explorer.read(state.client, f"/api/v1/nodes/{node}", f"node {node}", _timeout(request))
    url, upstream = await state.agents.open_trace(node, seconds)
    disposition = upstream.headers.get(
        "Content-Disposition",
        f'attachment; filename="temper-{node}-{int(time.time())}.trace.txt"',
    )
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Disposition": disposition,
        "Cache-Control": "no-cache",
    }
    response, outcome = await _relay(request, upstream, headers, state.closing)
    log.info(
        "trace download ended",
        extra={"node": node, "agent": url, "seconds": seconds, "why": outcome},
    )
    return response


# -- live events ------------------------------------------------------------------------------


def _stream_filter(request: web.Request) -> StreamFilter:
    raw_kinds = request.query.get("kinds")
    kinds = frozenset(KINDS)
    if raw_kinds is not None:
        kinds = frozenset(part.strip() for part in raw_kinds.split(",") if part.strip())
        if not kinds or kinds - set(KINDS):
            raise ParameterError(
                f"kinds {raw_kinds[:100]!r} is not a comma-separated list of {', '.join(KINDS)}"
            )
    namespace = request.query.get("namespace", "")
    if namespace and not re.match(NAMESPACE_SCHEMA["pattern"], namespace[:64]):
        raise ParameterError(f"namespace {namespace[:100]!r} is not a valid namespace name")
    node = request.query.get("node", "")
    if node and (len(node) > 253 or not re.match(NAME_SCHEMA["pattern"], node)):
        raise ParameterError(f"node {node[:100]!r} is not a valid Node name")
    return StreamFilter(kinds, namespace, node)


@_handle_errors
async def stream_events(request: web.Request) -> web.StreamResponse:
    stream_filter = _stream_filter(request)
    snapshot = request.query.get("snapshot", "true")
    if snapshot not in ("true", "false"):
        raise ParameterError(f"snapshot {snapshot[:50]!r} is not a boolean; use true or false")
    state = _state(request)
    hub = state.hub
    try:
        subscriber = hub.subscribe(stream_filter)
    except TooManySubscribersError as error:
        return error_response(503, f"{error}; close another stream or retry later")
    # Subscribing and taking the snapshot happen without a pause in between, so the queue
    # contains exactly the changes after the snapshot.
    initial = hub.snapshot(stream_filter) if snapshot == "true" else []
    keepalive = state.settings.events_keepalive_seconds
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    outcome = "plane shutting down"
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n\n")
        for event in initial:
            await response.write(event.encode(with_id=False))
        await response.write(b'event: synced\ndata: {"snapshot": %d}\n\n' % len(initial))
        last_write = time.monotonic()
        while not state.closing.is_set():
            try:
                event = subscriber.queue.get_nowait()
            except asyncio.QueueEmpty:
                if subscriber.overflowed:
                    await response.write(
                        b'event: overflow\ndata: {"error": "this client fell more than '
                        + str(hub.queue_size).encode()
                        + b" events behind and missed changes; reconnect for a fresh "
                        b'snapshot"}\n\n'
                    )
                    outcome = "overflow"
                    break
                if _client_gone(request):
                    outcome = "client disconnected"
                    break
                if time.monotonic() - last_write >= keepalive:
                    await response.write(b": keepalive %d\n\n" % int(time.time()))
                    last_write = time.monotonic()
                wait = min(DISCONNECT_CHECK_SECONDS, keepalive)
                try:
                    event = await asyncio.wait_for(subscriber.queue.get(), wait)
                except TimeoutError:
                    continue
            await response.write(event.encode())
            last_write = time.monotonic()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        outcome = "client disconnected"
    finally:
        hub.unsubscribe(subscriber)
    log.info("event stream ended", extra={"why": outcome})
    return response


# -- declarations -----------------------------------------------------------------------------

NAMESPACE_PARAMETER = Parameter("namespace", "path", "Namespace", NAMESPACE_SCHEMA)
POD_PARAMETER = Parameter("pod", "path", "Name of the Pod", NAME_SCHEMA)
KIND_PARAMETER = Parameter(
    "kind", "path", "Workload resource: deployments, statefulsets or daemonsets",
    WORKLOAD_KIND_SCHEMA,
)  # fmt: skip
WORKLOAD_NAME_PARAMETER = Parameter("name", "path", "Name of the workload", NAME_SCHEMA)
POD_PATH = "/namespaces/{namespace}/pods/{pod}"
WORKLOAD_PATH = "/namespaces/{namespace}/workloads/{kind}/{name}"
AGENT_ERRORS = ((504, "The node agent did not answer within --agent-timeout-seconds"),)
_BOOLEAN = {"type": "string", "enum": ["true", "false"]}


def declare_routes(registry: RouteRegistry) -> None:
    """Add the explorer's routes to ``registry``."""
    viewer, operator = Role.VIEWER, Role.OPERATOR
    pod_parameters = (NAMESPACE_PARAMETER, POD_PARAMETER)
    workload_parameters = (NAMESPACE_PARAMETER, KIND_PARAMETER, WORKLOAD_NAME_PARAMETER)
    for route in (
        Route("GET", POD_PATH, "getPod",
              "Pod detail: containers, tier, PriorityClass, layer, QoS class, owners", viewer,
              get_pod, POD_DETAIL_SCHEMA, pod_parameters,
              description="Read from the API server. layer.expected follows the agent's "
              "rules; layer.reported is the layer of the node agent's current config that "
              "matches the pod's cgroup, or null with agentError when the agent does not "
              "answer. The owner chain follows controlling owner references (ReplicaSet, "
              "Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicationController)."),
        Route("GET", POD_PATH + "/manifest", "getPodManifest", "The Pod's manifest", viewer,
              get_pod_manifest, MANIFEST_SCHEMA, pod_parameters,
              description="As the API server returns it, without metadata.managedFields."),
        Route("GET", POD_PATH + "/containers/{container}/logs", "getContainerLogs",
              "A container's log, or a live stream of it with follow=true", viewer,
              get_container_logs, {"type": "string"},
              (*pod_parameters,
               Parameter("container", "path", "Name of the container", CONTAINER_SCHEMA),
               Parameter("tailLines", "query", "Only the last N lines",
                         {"type": "integer", "minimum": 0, "maximum": MAX_TAIL_LINES}, False),
               Parameter("sinceSeconds", "query", "Only lines of the last N seconds",
                         {"type": "integer", "minimum": 1, "maximum": MAX_SINCE_SECONDS},
                         False),
               Parameter("follow", "query", "Keep the response open and send new lines as "
                         "chunked text until the container stops or the client disconnects",
                         _BOOLEAN, False),
               Parameter("previous", "query", "The previous, terminated instance's log",
                         _BOOLEAN, False),
               Parameter("timestamps", "query", "Prefix each line with its RFC 3339 time",
                         _BOOLEAN, False)),
              response_media_type="text/plain",
              description="The API server fetches the log from the kubelet of the pod's "
              "node. Without follow, at most --log-limit-bytes are returned. 409: the pod is "
              "not bound to a node or the kubelet refuses (e.g. the container has not "
              "started); 502: the API server cannot reach the kubelet.",
              extra_responses=((409, "The pod is not on a node, or its container has no "
                                "log yet"),)),
        Route("GET", POD_PATH + "/performance", "getPodPerformance",
              "The node agent's per-thread CPU and run-queue data of a pod", viewer,
              get_pod_performance, PERFORMANCE_SCHEMA, pod_parameters,
              description="Fetched from the /observe endpoint of the agent on the pod's "
              "node. Counters are cumulative since the agent first saw each thread. 502: no "
              "agent found, unreachable or failing; 504: no answer in time.",
              extra_responses=((409, "The pod is not bound to a node"), *AGENT_ERRORS)),
        Route("GET", POD_PATH + "/scheduling", "getPodScheduling",
              "Tier, PriorityClass, layer and the node's tier load of a pod", viewer,
              get_pod_scheduling, SCHEDULING_SCHEMA, pod_parameters,
              description="The layer as in getPod; nodeTierLoad is the parsed "
              "temper.codes/tier-load of the pod's node with the entry of the pod's tier."),
        Route("GET", WORKLOAD_PATH, "getWorkloadManifest",
              "A Deployment's, StatefulSet's or DaemonSet's manifest", viewer,
              get_workload_manifest, MANIFEST_SCHEMA, workload_parameters,
              description="As the API server returns it, without metadata.managedFields."),
        Route("GET", WORKLOAD_PATH + "/revisions", "listWorkloadRevisions",
              "Revision history with each revision's pod template", viewer,
              list_workload_revisions, REVISIONS_SCHEMA, workload_parameters,
              description="A Deployment's revisions are its ReplicaSets, numbered by "
              "deployment.kubernetes.io/revision; a StatefulSet's and a DaemonSet's are their "
              "ControllerRevisions. Oldest first."),
        Route("GET", WORKLOAD_PATH + "/revisions/diff", "diffWorkloadRevisions",
              "Unified diff between the pod templates of two revisions", viewer,
              diff_workload_revisions, DIFF_SCHEMA,
              (*workload_parameters,
               Parameter("from", "query", "Older revision; default: the one before to",
                         {"type": "integer", "minimum": 0, "maximum": MAX_REVISION}, False),
               Parameter("to", "query", "Newer revision; default: the current one",
                         {"type": "integer", "minimum": 0, "maximum": MAX_REVISION}, False))),
        Route("POST", WORKLOAD_PATH + "/restart", "restartWorkload",
              "Rollout restart: set kubectl.kubernetes.io/restartedAt on the pod template",
              operator, restart_workload, RESTART_RESULT_SCHEMA, workload_parameters,
              description="As kubectl rollout restart: the controller then replaces the "
              "pods. 409 for a paused Deployment, or a StatefulSet or DaemonSet whose update "
              "strategy is OnDelete.",
              extra_responses=((409, "Paused, or not a RollingUpdate strategy"),)),
        Route("GET", "/nodes/{node}/trace", "downloadNodeTrace",
              "Capture a scheduler trace on a Node's agent and download it", operator,
              download_node_trace, {"type": "string"},
              (Parameter("node", "path", "Name of the Node", NAME_SCHEMA),
               Parameter("seconds", "query", "Capture length; default 5",
                         {"type": "number", "exclusiveMinimum": 0, "maximum": 600}, False)),
              response_media_type="text/plain",
              description="Proxies the agent's /trace: the ftrace text format that the "
              "Perfetto UI opens, streamed back as the agent sends it. 409 (another capture "
              "runs on that agent) and 400 are the agent's own answers.",
              extra_responses=((409, "A capture is already running on that agent"),
                               *AGENT_ERRORS)),
        Route("GET", "/events/stream", "streamEvents",
              "Live Node and Pod changes as server-sent events", viewer, stream_events,
              EVENT_STREAM_SCHEMA,
              (Parameter("kinds", "query", "Comma-separated: nodes, pods (default both)",
                         {"type": "string", "maxLength": 20}, False),
               Parameter("namespace", "query", "Only pods of this namespace",
                         NAMESPACE_SCHEMA, False),
               Parameter("node", "query", "Only this Node and the pods bound to it",
                         NAME_SCHEMA, False),
               Parameter("snapshot", "query", "Start with every matching object as ADDED "
                         "(default true)", _BOOLEAN, False)),
              response_media_type="text/event-stream",
              description="Fed by the watch cache. Each change is one event named node or "
              "pod whose data is {type, kind, key, object}, object being the summary the "
              "read endpoints return; changes that leave the summary as it was are not sent. "
              "After the snapshot comes event synced. Idle streams get a keepalive comment "
              "every --events-keepalive-seconds. A client more than --events-queue-size "
              "events behind gets event overflow and the stream ends. Browsers cannot set "
              "the Authorization header on EventSource: read the stream with fetch().",
              extra_responses=((503, "--events-max-clients streams are already open"),)),
    ):  # fmt: skip
        registry.add(route)


def setup(
    app: web.Application, client: KubeClient, cache: ClusterCache, settings: PlaneSettings
) -> None:
    """Attach the explorer's state to ``app`` and feed the event hub from ``cache``."""
    hub = EventHub(settings.events_queue_size, settings.events_max_clients)
    hub.prime("nodes", cache.nodes.store.values())
    hub.prime("pods", cache.pods.store.values())
    cache.add_listener(hub.publish)
    state = ExplorerState(client, cache, settings, AgentClient(client, settings), hub)
    app[EXPLORER_KEY] = state

    async def stop_streams(_app: web.Application) -> None:
        # Streams end within DISCONNECT_CHECK_SECONDS, so shutdown does not wait for clients.
        state.closing.set()

    async def close(_app: web.Application) -> None:
        await state.agents.close()

    app.on_shutdown.append(stop_streams)
    app.on_cleanup.append(close)
