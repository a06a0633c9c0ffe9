"""Run the management plane: watch cache, token store and the REST API server."""

import asyncio
import logging

from aiohttp import web

from plane.app import build_app
from plane.cache import ClusterCache
from plane.settings import PlaneSettings
from plane.store import Store
from temper.kube import KubeClient
from temper.service import run_service

log = logging.getLogger(__name__)


async def serve(settings: PlaneSettings, stop: asyncio.Event) -> None:
    """Serve the API until ``stop`` is set."""
    store = Store(settings.database_path)
    client = await KubeClient.connect(settings.kubeconfig)
    cache = ClusterCache(client, settings.safe_mode_namespace)
    cache.start()
    runner = web.AppRunner(build_app(settings, client, store, cache), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.listen_address, settings.port)
        await site.start()
        log.info(
            "plane API listening",
            extra={
                "address": settings.listen_address,
                "port": settings.port,
                "api_server": client.host,
                "database": str(settings.database_path),
            },
        )
        await stop.wait()
    finally:
        await runner.cleanup()
        await cache.close(settings.shutdown_timeout_seconds / 2)
        await client.close()
        store.close()


def run_plane(settings: PlaneSettings) -> int:
    """Run the plane until SIGTERM or SIGINT; return the exit code."""
    return run_service("temper plane", settings, lambda stop: serve(settings, stop))
