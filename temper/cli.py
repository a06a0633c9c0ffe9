"""The ``temper`` command: one subcommand per component.

This module is the only one above the components; it imports each component's ``cli``
module, which declares the subcommand's options from the component's settings tree.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from temper import __version__
from temper.errors import TemperError

# Subcommand name -> module that provides ``configure_parser`` and ``run``.
SUBCOMMANDS = {
    "agent": "agent.cli",
    "profile": "agent.profile_cli",
    "extender": "extender.cli",
    "webhook": "webhook.cli",
    "rightsize": "rightsizer.cli",
    "plane": "plane.cli",
    "demo": "temper.demo.cli",
}


class SubcommandModule(Protocol):
    """What each subcommand module provides."""

    SUMMARY: str
    DESCRIPTION: str

    def configure_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="temper",
        description=(
            "Temper enforces CPU QoS tiers on Kubernetes nodes with the sched_ext scheduler "
            "scx_layered, so latency-critical pods keep their p99 while batch pods use the "
            "idle CPU. Each subcommand runs one component."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"temper {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = cast(SubcommandModule, importlib.import_module(module_name))
        sub = subparsers.add_parser(
            name,
            help=module.SUMMARY,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure_parser(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``temper`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except TemperError as error:
        logging.getLogger("temper").debug("command failed", exc_info=True)
        print(f"temper {args.command}: error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
