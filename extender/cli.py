"""``temper extender``: placeholder until the component lands."""

import argparse

SUMMARY = "extender"
DESCRIPTION = "extender"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add no options yet."""


def run(args: argparse.Namespace) -> int:
    """Do nothing yet."""
    return 1
