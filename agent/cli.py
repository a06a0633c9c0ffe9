"""``temper agent``: run the node agent for one Node."""

import argparse

from agent.settings import AgentSettings
from temper import settings as settings_tree

SUMMARY = "run the node agent (L0) for one Node"
DESCRIPTION = (
    "Watch the pods bound to one Node, map each to its tier and cgroup, compute and validate "
    "an scx_layered layer config, supervise the scheduler where the kernel has sched_ext, and "
    "publish temper.codes/tier-load and temper.codes/scheduler on the Node."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add one option per field of AgentSettings."""
    settings_tree.add_arguments(parser, AgentSettings, "agent")


def run(args: argparse.Namespace) -> int:
    """Validate the settings and run the agent until SIGTERM."""
    from agent.service import run_agent  # noqa: PLC0415 - keeps `temper --help` fast

    settings = settings_tree.load(AgentSettings, "agent", args)
    return run_agent(settings)
