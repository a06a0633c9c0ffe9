"""``temper rightsize``: thread-aware CPU request recommendations."""

import argparse

from rightsizer.settings import RightsizerSettings
from temper import settings as settings_tree
from temper.errors import TemperError

SUMMARY = "recommend CPU requests from per-thread history (not available yet)"
DESCRIPTION = (
    "Collect per-thread CPU time and run-queue delay from the agents' /observe endpoints, "
    "find what container averages hide, and write CPU request recommendations as the pod "
    "annotation temper.codes/recommendation for review."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add one option per field of RightsizerSettings."""
    settings_tree.add_arguments(parser, RightsizerSettings)


def run(args: argparse.Namespace) -> int:
    """Validate the settings, then stop: the analysis is not written yet."""
    settings_tree.load(RightsizerSettings, "rightsize", args)
    # TODO: collection, analysis and recommendations are not implemented in this version.
    raise TemperError(
        "the rightsizer is not available in this version; the agent, extender and webhook are"
    )
