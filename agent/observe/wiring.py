"""The observation as the agent service uses it: one object, its routes and its task."""

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.cgroups import CgroupLayout
from agent.observe.collector import ObserveCollector
from agent.observe.observer import Observer
from agent.observe.routes import add_routes
from agent.observe.trace import TraceCapture
from agent.settings import AgentSettings


class Observation:
    """Sampler, linter and trace capture, enabled by ``observe_enabled``."""

    def __init__(
        self,
        settings: AgentSettings,
        layout: CgroupLayout,
        pods: Callable[[], Iterable[Mapping[str, Any]]],
        registry: CollectorRegistry,
    ) -> None:
        self.enabled = settings.observe_enabled
        self.observer = Observer(settings, layout, pods)
        self.capture = TraceCapture(
            settings.tracefs_path, settings.trace_max_seconds, settings.trace_max_bytes
        )
        if self.enabled:
            registry.register(ObserveCollector(self.observer))

    def add_routes(self, app: web.Application) -> None:
        """Serve /observe and /trace when enabled."""
        if self.enabled:
            add_routes(app, self.observer, self.capture)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the background sampling task (return at once when disabled)."""
        if self.enabled:
            await self.observer.run(stop)
