"""The ``temper extender`` service: the node cache and the HTTP server, until SIGTERM."""

import asyncio
import logging

import uvloop
from aiohttp import web

from extender.cache import NodeCache
from extender.server import build_app
from extender.settings import ExtenderSettings
from temper.errors import TemperError
from temper.kube import KubeClient
from temper.service import freeze_long_lived_objects, run_service
from temper.tasks import TaskOwner

log = logging.getLogger(__name__)


async def freeze_after_first_lists(cache: NodeCache) -> None:
    """Exclude the cache's initial lists and the imports from garbage collection.

    With 5,000 Nodes and 5,000 bound pods cached, a full collection would otherwise walk
    every one of their objects while a request waits (see ``freeze_long_lived_objects``).
    NOTE: objects of later watch events and relists are collected as before, so the cost of
    a full collection grows again with the pods bound after the freeze and after a relist.
    """
    await cache.wait_ready()
    frozen = freeze_long_lived_objects()
    log.info(
        "first lists loaded, excluded their objects from garbage collection",
        extra={"frozen_objects": frozen},
    )


async def serve(settings: ExtenderSettings, stop: asyncio.Event) -> None:
    """Watch Nodes and bound pods, serve the extender verbs, and return once ``stop`` is set."""
    client = await KubeClient.connect(settings.kubeconfig)
    cache = NodeCache(client)
    tasks = TaskOwner("extender")
    # Half of the shutdown budget for in-flight requests, the rest for the watches.
    grace_seconds = settings.shutdown_timeout_seconds / 2
    runner = web.AppRunner(
        build_app(cache, settings), access_log=None, shutdown_timeout=grace_seconds
    )
    try:
        tasks.spawn("node-cache", cache.run())
        tasks.spawn("gc-freeze", freeze_after_first_lists(cache))
        await runner.setup()
        site = web.TCPSite(runner, settings.listen_address, settings.port)
        try:
            await site.start()
        except OSError as error:
            raise TemperError(
                f"cannot listen on {settings.listen_address}:{settings.port}: {error}; "
                "choose another --listen-address or --port"
            ) from error
        log.info(
            "extender listening",
            extra={"addresses": runner.addresses, "api_server": client.host},
        )
        await stop.wait()
    finally:
        await runner.cleanup()
        await tasks.close(grace_seconds)
        await client.close()


def run_extender(settings: ExtenderSettings) -> int:
    """Run the extender on a uvloop event loop until SIGTERM or SIGINT; return the exit code.

    kube-scheduler waits for every call, and uvloop's HTTP path used less CPU per request
    than the asyncio loop in bench/extender_cpu.py.
    """
    # NOTE: run_service calls asyncio.run, whose loop_factory argument needs Python 3.12, so
    # the loop comes in through the policy, which Python 3.14 deprecates.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return run_service("temper extender", settings, lambda stop: serve(settings, stop))
