"""The hub's read views: every cluster's summary, Nodes, workloads and savings totals.

Each read goes to every registered peer concurrently, with the peer's read token and within
--hub-peer-timeout-seconds. A peer that fails is listed with the reason.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from plane import views
from plane.hub_client import PeerError
from plane.hub_schemas import NAMESPACE_PATTERN
from plane.hub_service import HUB_KEY, HubRequestError, HubService, enabled_service
from plane.hub_store import HubStore, HubStoreError, Peer
from plane.savings_api import SAVINGS_KEY

log = logging.getLogger(__name__)


@dataclass
class ClusterRead:
    """One cluster's response to a fanned-out read."""

    name: str
    local: bool
    url: str | None
    body: Any = None
    error: str | None = None
    latency_milliseconds: float | None = None

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "local": self.local,
            "url": self.url,
            "reachable": self.error is None,
            "error": self.error,
            "latencyMilliseconds": self.latency_milliseconds,
        }


async def _read_peer(service: HubService, store: HubStore, peer: Peer, path: str) -> ClusterRead:
    result = ClusterRead(peer.name, False, peer.url)
    started = time.monotonic()
    try:
        token = store.peer_token(peer.name)
        if token is None:
            raise PeerError(f"peer {peer.name} was removed meanwhile")
        result.body = await service.client.get_json(peer.name, peer.url, path, token)
    except (PeerError, HubStoreError) as error:
        result.error = str(error)
        log.warning("hub read from peer failed", extra={"peer": peer.name, "error": str(error)})
    result.latency_milliseconds = round((time.monotonic() - started) * 1000, 1)
    return result


LocalRead = Callable[[], Awaitable[Any]]


async def _fan_out(request: web.Request, path: str, local: LocalRead) -> list[ClusterRead]:
    """Read ``path`` from every peer concurrently, and this cluster's response from ``local``."""
    service, store = enabled_service(request)
    local_read = ClusterRead(service.settings.hub_cluster_name, True, None)
    started = time.monotonic()
    try:
        local_read.body = await local()
    except HubRequestError as error:
        local_read.error = str(error)
    local_read.latency_milliseconds = round((time.monotonic() - started) * 1000, 1)
    peers = await asyncio.gather(
        *(_read_peer(service, store, peer, path) for peer in store.peers())
    )
    return [local_read, *peers]


def _items(read: ClusterRead) -> list[dict[str, Any]] | None:
    """Return the ``items`` list of a read, or set its error when the body has none."""
    body = read.body
    if read.error is not None:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        read.error = f"cluster {read.name} sent a body without an items list"
        return None
    return [item for item in body["items"] if isinstance(item, dict)]


async def hub_clusters(request: web.Request) -> web.Response:
    service = request.app[HUB_KEY]

    async def local() -> Any:
        summary = views.cluster_summary(
            service.settings.hub_cluster_name,
            service.cache.nodes.store.values(),
            service.cache.pods.store.values(),
            fleet_safe_mode=service.cache.fleet_safe_mode(),
        )
        return {"items": [summary]}

    items = []
    for read in await _fan_out(request, "/api/v1/clusters", local):
        found = _items(read)
        summary = {**found[0], "name": read.name} if found else None
        items.append({**read.status(), "summary": summary})
    return web.json_response({"items": items})


async def _aggregated(request: web.Request, path: str, local: LocalRead) -> web.Response:
    items: list[dict[str, Any]] = []
    clusters = []
    for read in await _fan_out(request, path, local):
        found = _items(read)
        items.extend({"cluster": read.name, **item} for item in found or [])
        clusters.append(read.status())
    return web.json_response({"items": items, "clusters": clusters})


async def hub_nodes(request: web.Request) -> web.Response:
    cache = request.app[HUB_KEY].cache

    async def local() -> Any:
        store = cache.nodes.store
        return {"items": [views.node_summary(store[key]) for key in sorted(store)]}

    return await _aggregated(request, "/api/v1/nodes", local)


async def hub_workloads(request: web.Request) -> web.Response:
    cache = request.app[HUB_KEY].cache
    namespace = request.query.get("namespace")
    path = "/api/v1/workloads"
    if namespace is not None:
        if len(namespace) > 63 or not NAMESPACE_PATTERN.match(namespace):
            raise HubRequestError(400, f"namespace {namespace[:100]!r} is not a valid name")
        path += f"?namespace={quote(namespace)}"

    async def local() -> Any:
        pods = [
            pod
            for pod in cache.pods.store.values()
            if namespace is None or (pod.get("metadata") or {}).get("namespace") == namespace
        ]
        return {"items": views.workload_summaries(pods)}

    return await _aggregated(request, path, local)


def _savings_totals(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    realized = body.get("realized") or {}
    nodes = dict(realized.get("nodes") or {})
    nodes.pop("machineTypes", None)
    return {
        "currency": (body.get("pricing") or {}).get("currency"),
        "realizedCpu": realized.get("cpu") or {},
        "realizedNodes": nodes,
        "opportunityCpu": (body.get("opportunity") or {}).get("cpu") or {},
    }


async def hub_savings(request: web.Request) -> web.Response:
    app = request.app

    async def local() -> Any:
        service = app[SAVINGS_KEY]
        pending = await service.cache.wait_synced(service.sync_timeout_seconds)
        if pending:
            raise HubRequestError(502, f"the local savings cache has not listed {pending}")
        return service.report().body(None, service.book)

    items = []
    for read in await _fan_out(request, "/api/v1/savings", local):
        totals = _savings_totals(read.body) if read.error is None else None
        if read.error is None and totals is None:
            read.error = f"cluster {read.name} sent an invalid savings body"
        items.append({**read.status(), "savings": totals})
    return web.json_response({"items": items})
