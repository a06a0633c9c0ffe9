"""A fake kube-apiserver on loopback for tests of list/watch clients.

Each collection path gets scripted list bodies and watch streams, so a test can send what a
real API server sends only rarely: an expired resourceVersion, an ERROR event, a watch that
ends. The fake records every request it receives.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client as k8s_client

from temper.kube import KubeClient

JsonObject = dict[str, Any]
# Put into FakeCollection.events to end the open watch stream.
END_OF_STREAM: JsonObject = {"type": "__end_of_stream__"}


@dataclass
class FakeCollection:
    """Scripted responses for one collection path, and the requests received for it.

    ``lists`` are served in order, the last one again for every later list request.
    ``watch_statuses`` give the HTTP status of the watch requests in order (200 once the list
    is used up). ``events`` feed the open watch stream.
    """

    lists: list[JsonObject]
    watch_statuses: list[int] = field(default_factory=list)
    events: asyncio.Queue[JsonObject] = field(default_factory=asyncio.Queue)
    list_requests: list[dict[str, str]] = field(default_factory=list)
    watch_requests: list[dict[str, str]] = field(default_factory=list)


def object_list(resource_version: str, items: list[JsonObject]) -> JsonObject:
    """A list body with ``metadata.resourceVersion``."""
    return {"metadata": {"resourceVersion": resource_version}, "items": items}


def expired_status() -> JsonObject:
    """The Status object the API server sends for a resourceVersion it no longer has."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "too old resource version: 10 (20)",
        "reason": "Expired",
        "code": 410,
    }


class FakeApiServer:
    """Serves GET list and watch requests for the registered collection paths."""

    def __init__(self) -> None:
        self.collections: dict[str, FakeCollection] = {}
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self._get)

    def add(self, path: str, collection: FakeCollection) -> FakeCollection:
        """Register the scripted responses for a collection path such as ``/api/v1/nodes``."""
        self.collections[path] = collection
        return collection

    async def _get(self, request: web.Request) -> web.StreamResponse:
        collection = self.collections.get(request.path)
        if collection is None:
            return web.json_response({"code": 404}, status=404)
        query = dict(request.query)
        if query.get("watch") != "true":
            collection.list_requests.append(query)
            index = min(len(collection.list_requests), len(collection.lists)) - 1
            return web.json_response(collection.lists[index])

        collection.watch_requests.append(query)
        position = len(collection.watch_requests) - 1
        statuses = collection.watch_statuses
        status = statuses[position] if position < len(statuses) else 200
        if status != 200:
            return web.json_response({**expired_status(), "code": status}, status=status)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        while request.transport is not None and not request.transport.is_closing():
            try:
                event = await asyncio.wait_for(collection.events.get(), 0.05)
            except TimeoutError:
                continue
            if event is END_OF_STREAM:
                break
            await response.write(orjson.dumps(event) + b"\n")
        return response


@asynccontextmanager
async def serve(fake: FakeApiServer) -> AsyncIterator[KubeClient]:
    """Start the fake on 127.0.0.1 and yield a KubeClient connected to it."""
    server = TestServer(fake.app, host="127.0.0.1", shutdown_timeout=1.0)
    await server.start_server()
    configuration = k8s_client.Configuration(host=str(server.make_url("")).rstrip("/"))
    client = KubeClient(k8s_client.ApiClient(configuration=configuration))
    try:
        yield client
    finally:
        await client.close()
        await server.close()


async def wait_until(check: Callable[[], bool], timeout_seconds: float = 5.0) -> None:
    """Poll ``check`` on the event loop; raise TimeoutError naming the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_seconds} s")
        await asyncio.sleep(0.01)
