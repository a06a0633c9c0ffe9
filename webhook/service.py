"""Run the overcommit webhook: TLS, the HTTPS server, certificate reload and registration."""

import asyncio

from temper.kube import KubeClient
from temper.service import run_service
from temper.tasks import TaskOwner
from webhook.certificates import build_serving_tls
from webhook.registration import register_until_done, webhook_configuration_manifest
from webhook.server import WebhookServer
from webhook.settings import WebhookSettings


async def _register(
    client: KubeClient, url: str, server: WebhookServer, ca_bundle_pem: bytes | None
) -> None:
    manifest = webhook_configuration_manifest(url=url, ca_bundle_pem=ca_bundle_pem)
    await register_until_done(client, manifest)
    server.ready = True


async def serve(settings: WebhookSettings, stop: asyncio.Event) -> None:
    """Serve admission requests until ``stop`` is set, then shut down within the timeout.

    The MutatingWebhookConfiguration stays in place on shutdown: it fails open, so pods are
    admitted unchanged while no webhook runs.
    """
    tls = build_serving_tls(settings)
    client: KubeClient | None = None
    if settings.register_webhook_url is not None:
        client = await KubeClient.connect(settings.kubeconfig)
    server = WebhookServer(settings, tls.context)
    tasks = TaskOwner("webhook")
    try:
        # Half of the shutdown budget goes to requests in flight, a quarter to background tasks.
        await server.start(shutdown_timeout_seconds=settings.shutdown_timeout_seconds / 2)
        if tls.reloader is not None:
            tasks.spawn("tls-reload", tls.reloader.run())
        if client is not None and settings.register_webhook_url is not None:
            tasks.spawn(
                "register",
                _register(client, settings.register_webhook_url, server, tls.ca_bundle_pem),
            )
        else:
            server.ready = True
        await stop.wait()
    finally:
        await tasks.close(timeout_seconds=settings.shutdown_timeout_seconds / 4)
        await server.stop()
        if client is not None:
            await client.close()


def run_webhook(settings: WebhookSettings) -> int:
    """Run the webhook until SIGTERM or SIGINT and return the exit code."""

    async def main(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    return run_service("temper webhook", settings, main)
