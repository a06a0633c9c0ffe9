"""``temper webhook``: run the CPU-overcommit mutating admission webhook, or revert its work."""

import argparse

from temper import settings as settings_tree
from webhook.settings import RevertSettings, WebhookSettings

SUMMARY = "run the CPU-overcommit mutating admission webhook (L1)"
DESCRIPTION = (
    "Serve AdmissionReview v1 on POST /mutate over HTTPS. Pod creations in namespaces labelled "
    "temper.codes/overcommit=enabled get their CPU requests scaled by a per-tier factor "
    "(never limits, never the critical tier, system classes or Guaranteed pods), clamped to "
    "the namespace's LimitRange min and maxLimitRequestRatio, and the original requests are "
    "recorded in the annotation temper.codes/original-requests. The webhook watches "
    "LimitRanges, so it needs list and watch on limitranges. Without --tls-cert-file a CA and "
    "serving certificate are generated; with --register-webhook-url the "
    "MutatingWebhookConfiguration temper-overcommit is created or updated at start.\n\n"
    "`temper webhook revert` lists the mutated pods and, with --apply, resizes them back to "
    "their original CPU requests."
)
REVERT_SUMMARY = "list mutated pods; with --apply, resize them back to their original requests"
REVERT_DESCRIPTION = (
    "List the pods that carry temper.codes/original-requests, with each container's CPU "
    "request and the original it would get back. Nothing changes without --apply. With "
    "--apply, every pod that has not terminated is resized in place through the pods/resize "
    "subresource (Kubernetes 1.33 or newer) and its annotation is removed, so a second run "
    "does nothing. A pod whose resize the API server rejects keeps its annotation, is reported "
    "with the reason, and makes the command exit with 1. Needs list on pods, and patch on pods "
    "and pods/resize."
)
ACTION_DEST = "webhook_action"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add one option per field of WebhookSettings, and the ``revert`` action."""
    settings_tree.add_arguments(parser, WebhookSettings, "webhook")
    actions = parser.add_subparsers(dest=ACTION_DEST, metavar="ACTION")
    revert = actions.add_parser(
        "revert",
        help=REVERT_SUMMARY,
        description=REVERT_DESCRIPTION,
    )
    settings_tree.add_arguments(revert, RevertSettings, "webhook_revert")
    # argparse copies every attribute of the action's namespace over the parent's, so a None
    # default would silently drop `temper webhook --kubeconfig FILE revert`. Unset options
    # leave no attribute, and settings_tree.load falls back to the environment and defaults.
    for action in revert._actions:
        if action.option_strings and action.dest != "help":
            action.default = argparse.SUPPRESS


def run(args: argparse.Namespace) -> int:
    """Run the webhook until SIGTERM, or run the revert action; return the exit code."""
    if getattr(args, ACTION_DEST, None) == "revert":
        from webhook.revert import run_revert  # noqa: PLC0415 - keeps `temper --help` fast

        revert_settings = settings_tree.load(RevertSettings, "webhook_revert", args)
        return run_revert(revert_settings)

    from webhook.service import run_webhook  # noqa: PLC0415 - keeps `temper --help` fast

    settings = settings_tree.load(WebhookSettings, "webhook", args)
    return run_webhook(settings)
