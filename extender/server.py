"""HTTP side of the extender: kube-scheduler's filter and prioritize verbs, probes, metrics.

kube-scheduler sends ExtenderArgs with Go field names (``Pod``, ``Nodes``, ``NodeNames``).
With ``nodeCacheCapable: true`` only ``NodeNames`` is set, and the tier loads come from the
watch-fed cache. Otherwise ``Nodes`` carries whole Node objects. Their annotations are then
read directly, and the filter echoes the objects of the passing nodes in ``Nodes``.
"""

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from extender import scoring
from extender.scoring import CRITICAL_CAPACITY_EXCEEDED, FilterOutcome, NodeCapacity
from extender.settings import ExtenderSettings
from extender.table import CapacityTable, NodeColumns, columns_of
from temper.errors import InvalidQuantityError
from temper.kube import JsonObject

log = logging.getLogger(__name__)

# Fine-grained below 2 ms, the range of a healthy handler, so p50 and p99 read to 0.1 ms.
LATENCY_BUCKETS_SECONDS = (
    0.0001,
    0.0002,
    0.0003,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class NodeLoadSource(Protocol):
    """Node data source of the handlers, implemented by :class:`extender.cache.NodeCache`."""

    def ready(self) -> bool: ...

    @property
    def capacities(self) -> CapacityTable: ...

    def capacity_from_annotations(
        self, node_name: str, annotations: Mapping[str, Any] | None
    ) -> NodeCapacity | None: ...

    def age_seconds(self) -> float | None: ...


class InvalidRequestError(ValueError):
    """The body is not a valid ExtenderArgs document; the message names the field."""


@dataclass(frozen=True)
class ExtenderArgs:
    """A parsed request: ``node_list`` is the received NodeList in full-object mode, else None."""

    pod: JsonObject
    node_names: list[str]
    node_list: JsonObject | None


def parse_extender_args(body: bytes) -> ExtenderArgs:
    """Validate an ExtenderArgs body; raise InvalidRequestError naming the bad field."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequestError(f"request body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise InvalidRequestError("request body must be a JSON object (ExtenderArgs)")

    pod = document.get("Pod")
    if not isinstance(pod, dict):
        raise InvalidRequestError(f"field Pod is {_short(pod)}, expected a Pod object")

    names = document.get("NodeNames")
    if names is not None:
        # set(map(type, ...)) runs in C; this list can hold thousands of names.
        if not isinstance(names, list) or set(map(type, names)) - {str}:
            raise InvalidRequestError(
                f"field NodeNames is {_short(names)}, expected a list of node names"
            )
        return ExtenderArgs(pod=pod, node_names=names, node_list=None)

    node_list = document.get("Nodes")
    if node_list is None:
        raise InvalidRequestError(
            "fields NodeNames and Nodes are both missing; send NodeNames (nodeCacheCapable) "
            "or Nodes"
        )
    items = node_list.get("items") if isinstance(node_list, dict) else None
    if not isinstance(items, list):
        raise InvalidRequestError(f"field Nodes is {_short(node_list)}, expected a NodeList")

    names = []
    for index, node in enumerate(items):
        name = (node.get("metadata") or {}).get("name") if isinstance(node, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"Nodes.items[{index}] has no metadata.name")
        names.append(name)
    return ExtenderArgs(pod=pod, node_names=names, node_list=node_list)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _without(items: list[Any], positions: frozenset[int]) -> list[Any]:
    if not positions:
        return items
    return [item for index, item in enumerate(items) if index not in positions]


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")


class ExtenderMetrics:
    """Prometheus metrics of one app, in a registry of its own."""

    def __init__(self, source: NodeLoadSource) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "temper_extender_request_duration_seconds",
            "Time spent handling one extender call, in seconds",
            ["verb"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "temper_extender_decisions",
            "Per-node decisions (filter: passed, passed_without_data, rejected, where only "
            "critical pods are filtered and the other pods pass every node; prioritize: scored, "
            "neutral) and rejected requests (invalid_request, too_large)",
            ["verb", "outcome"],
            registry=self.registry,
        )
        age = Gauge(
            "temper_extender_node_cache_age_seconds",
            "Seconds since the Node watch last delivered a change (NaN before the first)",
            registry=self.registry,
        )
        age.set_function(lambda: _age_or_nan(source))
        nodes = Gauge(
            "temper_extender_nodes_with_tier_load",
            "Nodes in the cache with a valid tier-load value, fresh or stale",
            registry=self.registry,
        )
        nodes.set_function(lambda: len(source.capacities))
        # Children looked up once, because labels() takes a lock and builds a tuple per call.
        self.filter_duration = self.duration.labels("filter")
        self.prioritize_duration = self.duration.labels("prioritize")
        self.filter_decisions = {
            outcome: self.decisions.labels("filter", outcome.value) for outcome in FilterOutcome
        }
        self.prioritize_scored = self.decisions.labels("prioritize", "scored")
        self.prioritize_neutral = self.decisions.labels("prioritize", "neutral")


def _age_or_nan(source: NodeLoadSource) -> float:
    age = source.age_seconds()
    return math.nan if age is None else age


class ExtenderHandlers:
    """Request handlers bound to a node source, the settings and a clock."""

    def __init__(
        self,
        source: NodeLoadSource,
        settings: ExtenderSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.max_request_bytes = settings.max_request_bytes
        self.max_age_seconds = scoring.STALE_AFTER_INTERVALS * settings.publish_interval_seconds
        self.clock = clock
        self.metrics = ExtenderMetrics(source)

    async def _read_args(self, verb: str, request: web.Request) -> ExtenderArgs:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as error:
            self.metrics.decisions.labels(verb, "too_large").inc()
            raise RequestRejectedError(
                413,
                f"request body exceeds {self.max_request_bytes} bytes; raise "
                "--max-request-bytes or enable nodeCacheCapable in the scheduler config",
            ) from error
        try:
            return parse_extender_args(body)
        except InvalidRequestError as error:
            self.metrics.decisions.labels(verb, "invalid_request").inc()
            raise RequestRejectedError(400, f"invalid ExtenderArgs: {error}") from error

    def _demand(self, verb: str, args: ExtenderArgs) -> scoring.PodDemand:
        try:
            return scoring.pod_demand(args.pod)
        except InvalidQuantityError as error:
            self.metrics.decisions.labels(verb, "invalid_request").inc()
            raise RequestRejectedError(400, f"invalid ExtenderArgs: field Pod: {error}") from error

    def _columns(self, args: ExtenderArgs, demand: scoring.PodDemand) -> NodeColumns:
        """Return ``ts`` and ``free_t`` of each requested node for the pod's tier, in order."""
        if args.node_list is None:
            return self.source.capacities.columns(demand.tier, args.node_names)
        # Full-object mode: the annotations come with the request.
        capacities = [
            self.source.capacity_from_annotations(
                name, (node.get("metadata") or {}).get("annotations")
            )
            for name, node in zip(args.node_names, args.node_list["items"], strict=True)
        ]
        return columns_of(demand.tier, capacities)

    async def filter(self, request: web.Request) -> web.Response:
        """POST /filter: reject nodes whose critical capacity cannot hold a critical pod."""
        with self.metrics.filter_duration.time():
            try:
                args = await self._read_args("filter", request)
                demand = self._demand("filter", args)
            except RequestRejectedError as rejected:
                rejected.log("filter")
                return _filter_error(rejected)

            if scoring.is_filtered(demand):
                columns = self._columns(args, demand)
                fresh = columns.fresh(self.clock(), self.max_age_seconds)
                decisions = scoring.filter_columns(demand, fresh, columns.free_millicores)
            else:
                # Most pods: no per-node work at all.
                decisions = scoring.pass_all(len(args.node_names))
            for outcome, count in decisions.counts.items():
                if count:
                    self.metrics.filter_decisions[outcome].inc(count)

            rejected_positions = decisions.rejected
            rejected_names = sorted(args.node_names[index] for index in rejected_positions)
            result: dict[str, Any] = {
                "NodeNames": None,
                "Nodes": None,
                "FailedNodes": {},
                "FailedAndUnresolvableNodes": dict.fromkeys(
                    rejected_names, CRITICAL_CAPACITY_EXCEEDED
                ),
                "Error": "",
            }
            if args.node_list is None:
                result["NodeNames"] = _without(args.node_names, rejected_positions)
            else:
                passing = _without(args.node_list["items"], rejected_positions)
                result["Nodes"] = {**args.node_list, "items": passing}
            return _json(result)

    async def prioritize(self, request: web.Request) -> web.Response:
        """POST /prioritize: score each node 0..10 by the packing policy."""
        with self.metrics.prioritize_duration.time():
            try:
                args = await self._read_args("prioritize", request)
                demand = self._demand("prioritize", args)
            except RequestRejectedError as rejected:
                rejected.log("prioritize")
                return _json({"Error": rejected.message}, rejected.status)

            columns = self._columns(args, demand)
            fresh = columns.fresh(self.clock(), self.max_age_seconds)
            scores = scoring.score_columns(
                demand.cpu_request_millicores, fresh, columns.free_millicores
            )

            scored = int(np.count_nonzero(fresh))
            neutral = len(fresh) - scored
            if neutral:
                self.metrics.prioritize_neutral.inc(neutral)
            if scored:
                self.metrics.prioritize_scored.inc(scored)
            return _json(
                [
                    {"Host": name, "Score": score}
                    for name, score in zip(args.node_names, scores.tolist(), strict=True)
                ]
            )

    async def healthz(self, _request: web.Request) -> web.Response:
        """GET /healthz: the process serves HTTP."""
        return web.Response(text="ok\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        """GET /readyz: 200 once the cache has loaded Nodes and bound pods, else 503."""
        if self.source.ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="node cache not synced yet\n")

    async def metrics_page(self, _request: web.Request) -> web.Response:
        """GET /metrics in the Prometheus text format."""
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


class RequestRejectedError(Exception):
    """An invalid or oversized request, rejected with HTTP ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def log(self, verb: str) -> None:
        # The decisions counter counts every rejection; the log keeps the detail.
        log.warning(
            "rejected extender request",
            extra={"verb": verb, "status": self.status, "error": self.message},
        )


def _filter_error(rejected: RequestRejectedError) -> web.Response:
    document: dict[str, Any] = {
        "NodeNames": None,
        "Nodes": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": rejected.message,
    }
    return _json(document, rejected.status)


def build_app(
    source: NodeLoadSource,
    settings: ExtenderSettings,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Return the aiohttp application; bodies above ``max_request_bytes`` get HTTP 413."""
    app = web.Application(client_max_size=settings.max_request_bytes)
    handlers = ExtenderHandlers(source, settings, clock)
    app.router.add_post("/filter", handlers.filter)
    app.router.add_post("/prioritize", handlers.prioritize)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics_page)
    return app
