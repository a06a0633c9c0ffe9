"""``temper rightsize apply``: an apply pass every apply interval, with /metrics and /healthz.

The history file must exist (``collect`` writes it, possibly in another process: SQLite's
WAL mode lets this one read meanwhile). A pass that fails on an API server error is logged
and counted, and the next interval tries again.
"""

import asyncio
import contextlib
import logging
import time
from typing import TextIO

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rightsizer.applier import ApplyMetrics, PodOutcome, TrackingApplier
from rightsizer.resizeplan import SkipReason
from rightsizer.settings import RightsizerSettings
from rightsizer.store import HistoryStore
from temper.errors import KubernetesError, TemperError
from temper.kube import KubeClient

log = logging.getLogger(__name__)


def metrics_app(metrics: ApplyMetrics) -> web.Application:
    """Return the /metrics and /healthz application."""

    async def metrics_page(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    return app


def render_outcomes(outcomes: list[PodOutcome]) -> str:
    """Return one row per container changed or skipped, and one per pod skipped whole."""
    if not outcomes:
        return "no opted-in pods (label temper.codes/rightsize-apply=tracking)"
    rows = [["NAMESPACE", "POD", "CONTAINER", "CPU REQUEST", "ACTION"]]
    for outcome in outcomes:
        plan = outcome.plan
        for change in plan.changes:
            text = outcome.action.value + (f": {outcome.message}" if outcome.message else "")
            if change.bound is not None:
                text += f" ({change.bound.value} bound; tracking {change.tracking_millicores}m)"
            request = f"{change.old_millicores}m -> {change.new_millicores}m"
            rows.append([plan.namespace, plan.name, change.name, request, text])
        for skip in plan.skips:
            if skip.reason is SkipReason.RATE_LIMITED:
                continue
            text = f"skipped ({skip.reason.value}): {skip.detail}"
            rows.append([plan.namespace, plan.name, skip.container or "-", "-", text])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


async def serve_applier(
    settings: RightsizerSettings,
    stop: asyncio.Event,
    ticks: int | None = None,
    out: TextIO | None = None,
) -> None:
    """Run apply passes every apply interval until ``stop`` is set or ``ticks`` passes ran.

    ``out``, when given, receives the table of each pass. The metrics server runs only
    without ``ticks``, so a one-off run beside a running service needs no port of its own.
    """
    store = HistoryStore.open_existing(settings.history_path)
    metrics = ApplyMetrics()
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    client: KubeClient | None = None
    try:
        client = await KubeClient.connect(settings.kubeconfig)
        address = "-"
        if ticks is None:
            await runner.setup()
            site = web.TCPSite(runner, settings.listen_address, settings.port)
            try:
                await site.start()
            except OSError as error:
                raise TemperError(
                    f"cannot listen on {settings.listen_address}:{settings.port}: {error}; "
                    "choose another --listen-address or --port"
                ) from error
            address = site.name
        applier = TrackingApplier(settings, client, store, metrics)
        interval_seconds = settings.apply_interval_minutes * 60
        log.info(
            "applier started" if applier.enabled else "applier started as a dry run",
            extra={
                "apply_tracking_enabled": applier.enabled,
                "interval_seconds": interval_seconds,
                "max_resized_pods": settings.apply_max_resized_pods,
                "metrics": address,
            },
        )
        passes = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                outcomes = await applier.run_pass()
            except KubernetesError as error:
                metrics.pass_failures.inc()
                log.error(
                    "apply pass failed, retrying in the next interval",
                    extra={"error": str(error), "retry_in_seconds": interval_seconds},
                )
            else:
                if out is not None:
                    print(render_outcomes(outcomes), file=out, flush=True)
            passes += 1
            if ticks is not None and passes >= ticks:
                break
            delay = max(0.0, interval_seconds - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        log.info("applier stopped", extra={"passes": passes})
    finally:
        await runner.cleanup()
        if client is not None:
            await client.close()
        store.close()
