"""HTTP routes of the observation: ``GET /observe`` and ``GET /trace?seconds=N``."""

import logging
import time

import orjson
from aiohttp import web

from agent.observe.observer import Observer
from agent.observe.trace import TraceBusyError, TraceCapture, TraceUnavailableError

log = logging.getLogger(__name__)


def add_routes(app: web.Application, observer: Observer, capture: TraceCapture) -> None:
    """Register /observe and /trace on the agent's application."""

    async def observe(_: web.Request) -> web.Response:
        if observer.sampled_at is None:
            return web.json_response(
                {"error": "no sample taken yet; retry after one observe interval"}, status=503
            )
        return web.Response(body=orjson.dumps(observer.snapshot()), content_type="application/json")

    async def trace(request: web.Request) -> web.StreamResponse:
        raw = request.query.get("seconds", "5")
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= capture.max_seconds:
            return web.json_response(
                {
                    "error": f"invalid seconds={raw!r}: give a number above 0 and at most "
                    f"{capture.max_seconds:g} (trace_max_seconds)"
                },
                status=400,
            )
        try:
            data = await capture.capture(seconds)
        except TraceBusyError as error:
            return web.json_response({"error": str(error)}, status=409)
        except TraceUnavailableError as error:
            log.error("trace capture failed", extra={"error": str(error)})
            return web.json_response({"error": str(error)}, status=503)
        name = f"temper-{observer.settings.node_name}-{int(time.time())}.trace.txt"
        return web.Response(
            body=data,
            content_type="text/plain",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    app.router.add_get("/observe", observe)
    app.router.add_get("/trace", trace)
