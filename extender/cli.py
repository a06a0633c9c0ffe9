"""``temper extender``: run the kube-scheduler HTTP extender."""

import argparse

from extender.settings import ExtenderSettings
from temper import settings as settings_tree

SUMMARY = "run the kube-scheduler extender (L1) that packs pods by tier capacity"
DESCRIPTION = (
    "Serve kube-scheduler's filter and prioritize calls from a watch-fed cache of the "
    "temper.codes/tier-load annotation of every Node. Among nodes with fresh data, the pod "
    "goes to the node whose free capacity for the pod's tier fits its CPU request most "
    "tightly; nodes without fresh data get the neutral score 5 and are never filtered out. "
    "Critical pods are filtered from nodes whose critical capacity cannot hold them. Configure "
    "kube-scheduler with nodeCacheCapable: true and ignorable: true."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add one option per field of ExtenderSettings."""
    settings_tree.add_arguments(parser, ExtenderSettings, "extender")


def run(args: argparse.Namespace) -> int:
    """Validate the settings and run the extender until SIGTERM."""
    from extender.service import run_extender  # noqa: PLC0415 - keeps `temper --help` fast

    settings = settings_tree.load(ExtenderSettings, "extender", args)
    return run_extender(settings)
