"""The ``temper extender`` service: the node cache and the HTTP server, until SIGTERM."""

import asyncio
import logging

from aiohttp import web

from extender.cache import NodeCache
from extender.server import build_app
from extender.settings import ExtenderSettings
from temper.errors import TemperError
from temper.kube import KubeClient
from temper.service import run_service
from temper.tasks import TaskOwner

log = logging.getLogger(__name__)


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
    """Run the extender until SIGTERM or SIGINT and return the exit code."""
    return run_service("temper extender", settings, lambda stop: serve(settings, stop))
