"""``temper rightsize``: thread-aware CPU request recommendations."""

import argparse
import asyncio
import sys
from pathlib import Path

from rightsizer.settings import RightsizerSettings
from temper import logs
from temper import settings as settings_tree

SUMMARY = "recommend CPU requests from per-thread history"
DESCRIPTION = (
    "Collect per-thread CPU time and run-queue delay from the agents' /observe endpoints into "
    "a SQLite history, find what container averages hide (hot threads, burst pools, wake "
    "chains), and write CPU request recommendations as the annotation "
    "temper.codes/recommendation on each owning workload for review. Only `apply` with "
    "--apply-tracking-enabled changes pods: it resizes the pods of opted-in workloads in "
    "place to their tracking request."
)

ACTIONS = {
    "collect": "read every agent's /observe snapshot each interval into the history file",
    "recommend": "compute recommendations and write them as annotations on the workloads",
    "report": "print the recommendations (table or JSON) and optionally an HTML page",
    "accept": "record on a workload's annotation that its recommendation was accepted",
    "dismiss": "record on a workload's annotation that its recommendation was dismissed",
    "apply": "every apply interval, resize the pods of opted-in workloads in place to their "
    "tracking request (a dry run unless --apply-tracking-enabled is given)",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the actions, each with one option per field of RightsizerSettings."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, summary in ACTIONS.items():
        sub = actions.add_parser(
            name, help=summary, description=summary[0].upper() + summary[1:] + "."
        )
        settings_tree.add_arguments(sub, RightsizerSettings, "rightsize")
        if name in ("collect", "apply"):
            sub.add_argument(
                "--ticks",
                type=int,
                default=None,
                metavar="COUNT",
                help=f"Stop after this many {name} intervals (default: run until SIGTERM)",
            )
        elif name == "recommend":
            sub.add_argument(
                "--dry-run",
                action="store_true",
                help="Print the recommendations without writing any annotation",
            )
        elif name == "report":
            sub.add_argument(
                "--format",
                choices=["table", "json"],
                default="table",
                help="Output format on stdout (default: table)",
            )
            sub.add_argument(
                "--html",
                type=Path,
                default=None,
                metavar="PATH",
                help="Also write a self-contained HTML page with one plot per container here",
            )
        else:
            sub.add_argument("target", metavar="KIND/NAME", help="Workload, e.g. deployment/web")
            sub.add_argument(
                "-n",
                "--namespace",
                default="default",
                help="Namespace of the workload (default: default)",
            )
            sub.add_argument("--note", default=None, help="Free text stored with the decision")


def run(args: argparse.Namespace) -> int:
    """Validate the settings and run the chosen action."""
    settings = settings_tree.load(RightsizerSettings, "rightsize", args)
    if args.action == "collect":
        return _collect(settings, args.ticks)
    if args.action == "apply":
        return _apply(settings, args.ticks)
    logs.configure(settings.log_level, settings.log_json)
    if args.action in ("recommend", "report"):
        return _recommend(settings, args)
    return _decide(settings, args)


def _collect(settings: RightsizerSettings, ticks: int | None) -> int:
    from rightsizer.service import collect  # noqa: PLC0415 - keeps `temper --help` fast
    from temper.service import run_service  # noqa: PLC0415

    if ticks is not None:
        logs.configure(settings.log_level, settings.log_json)
        rows = asyncio.run(collect(settings, asyncio.Event(), ticks=ticks))
        print(f"collected {ticks} intervals, {rows} thread rows written to {settings.history_path}")
        return 0

    async def main(stop: asyncio.Event) -> None:
        await collect(settings, stop)

    return run_service("temper rightsize collect", settings, main)


def _apply(settings: RightsizerSettings, ticks: int | None) -> int:
    from rightsizer.applyservice import serve_applier  # noqa: PLC0415
    from temper.service import run_service  # noqa: PLC0415

    if ticks is not None:
        logs.configure(settings.log_level, settings.log_json)
        asyncio.run(serve_applier(settings, asyncio.Event(), ticks=ticks, out=sys.stdout))
        return 0

    async def main(stop: asyncio.Event) -> None:
        await serve_applier(settings, stop)

    return run_service("temper rightsize apply", settings, main)


def _recommend(settings: RightsizerSettings, args: argparse.Namespace) -> int:
    from rightsizer.report import render_json, render_table  # noqa: PLC0415
    from rightsizer.service import recommend  # noqa: PLC0415

    write = args.action == "recommend" and not args.dry_run
    entries = asyncio.run(recommend(settings, write=write))
    pairs = [(e.workload, e.recommendation) for e in entries]
    if getattr(args, "format", "table") == "json":
        print(render_json(pairs))
    else:
        print(render_table(pairs))
    if getattr(args, "html", None) is not None:
        from rightsizer.html import write_html  # noqa: PLC0415 - matplotlib loads slowly

        write_html(args.html, [(e.workload, e.recommendation, e.histories) for e in entries])
        print(f"HTML report written to {args.html}", file=sys.stderr)
    if write:
        print(
            f"{len(entries)} workloads annotated with temper.codes/recommendation", file=sys.stderr
        )
    return 0


def _decide(settings: RightsizerSettings, args: argparse.Namespace) -> int:
    from rightsizer.annotation import Status  # noqa: PLC0415
    from rightsizer.owners import parse_workload  # noqa: PLC0415
    from rightsizer.service import decide  # noqa: PLC0415
    from rightsizer.workloads import kubectl_patch_command  # noqa: PLC0415

    workload = parse_workload(args.target, args.namespace)
    status = Status.ACCEPTED if args.action == "accept" else Status.DISMISSED
    decided = asyncio.run(decide(settings, workload, status, args.note))
    print(f"{workload}: recommendation {status.value}")
    if status is Status.ACCEPTED:
        print("Apply it with:")
        print(kubectl_patch_command(workload, decided))
    return 0
