"""A fake agent: serves ``/observe`` snapshots (schema v1) on loopback for rightsizer tests.

Thread counters grow with wall time at each FakeThread's rates, so successive requests
return cumulative counters as a real agent would.
"""

import time
from types import TracebackType

import orjson
from aiohttp import web

from tests.observesnapshots import FakePod, snapshot_body


class FakeAgent:
    """An aiohttp server on 127.0.0.1 with ``GET /observe``; use ``async with``."""

    def __init__(self, pods: list[FakePod], node: str = "node-a", status: int = 200) -> None:
        self.pods = pods
        self.node = node
        self.status = status
        self.body_override: bytes | None = None
        self.requests = 0
        self._started = time.time()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _observe(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status, text="fake agent failure")
        body = self.body_override
        if body is None:
            body = orjson.dumps(snapshot_body(self.pods, time.time(), self._started, self.node))
        return web.Response(body=body, content_type="application/json")

    async def __aenter__(self) -> "FakeAgent":
        app = web.Application()
        app.router.add_get("/observe", self._observe)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/observe"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
