"""``temper demo``: placeholder."""

import argparse

SUMMARY = "demo"
DESCRIPTION = "demo"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add no options yet."""


def run(args: argparse.Namespace) -> int:
    """Do nothing yet."""
    return 1
