"""``temper webhook``: run the CPU-overcommit mutating admission webhook."""

import argparse

from temper import settings as settings_tree
from webhook.settings import WebhookSettings

SUMMARY = "run the CPU-overcommit mutating admission webhook (L1)"
DESCRIPTION = (
    "Serve AdmissionReview v1 on POST /mutate over HTTPS. Pod creations in namespaces labelled "
    "temper.codes/overcommit=enabled get their CPU requests scaled by a per-tier factor "
    "(never limits, never the critical tier, system classes or Guaranteed pods), and the "
    "original requests are recorded in the annotation temper.codes/original-requests. "
    "Without --tls-cert-file a CA and serving certificate are generated; with "
    "--register-webhook-url the MutatingWebhookConfiguration temper-overcommit is created or "
    "updated at start."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add one option per field of WebhookSettings."""
    settings_tree.add_arguments(parser, WebhookSettings)


def run(args: argparse.Namespace) -> int:
    """Validate the settings and run the webhook until SIGTERM."""
    from webhook.service import run_webhook  # noqa: PLC0415 - keeps `temper --help` fast

    settings = settings_tree.load(WebhookSettings, "webhook", args)
    return run_webhook(settings)
