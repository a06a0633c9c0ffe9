"""The hub's state on the application, and the error its handlers raise."""

from dataclasses import dataclass

from aiohttp import web

from plane.cache import ClusterCache
from plane.hub_client import PeerClient
from plane.hub_store import HubStore, TokenCipher
from plane.settings import PlaneSettings


class HubRequestError(Exception):
    """A request to a hub route is invalid; carries the HTTP status and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class HubService:
    """The hub routes' dependencies: settings, peer registry, HTTP client and local cache."""

    settings: PlaneSettings
    store: HubStore | None
    client: PeerClient
    cache: ClusterCache


HUB_KEY = web.AppKey("hub", HubService)


def enabled_service(request: web.Request) -> tuple[HubService, HubStore]:
    """Return the hub and its peer store; raise 404 when the hub is not enabled."""
    service = request.app[HUB_KEY]
    if service.store is None:
        raise HubRequestError(
            404,
            "the hub is not enabled on this plane; start it with --hub-enabled "
            "(TEMPER_PLANE_HUB_ENABLED=true)",
        )
    return service, service.store


def setup(app: web.Application, settings: PlaneSettings, cache: ClusterCache) -> None:
    """Attach the hub to ``app``; without --hub-enabled its routes return 404."""
    store = None
    if settings.hub_enabled:
        store = HubStore(settings.database_path, TokenCipher(settings.hub_key_path))
    client = PeerClient(settings.hub_peer_timeout_seconds, settings.hub_ca_file)
    app[HUB_KEY] = HubService(settings, store, client, cache)

    async def close(_app: web.Application) -> None:
        await client.close()
        if store is not None:
            store.close()

    app.on_cleanup.append(close)
