"""``temper profile``: train, check and list workload profiles."""

import argparse
import re
import sys
from pathlib import Path

SUMMARY = "train, check and list workload profiles (per-thread-group scheduling)"
DESCRIPTION = (
    "Workload profiles give the thread groups of one program (a database's I/O threads, a "
    "JVM's GC threads) their own scx_layered treatment inside the pod. 'train' watches a "
    "running process and writes a proposed profile, 'check' validates profile files, and "
    "'list' shows the builtin and custom profiles. See docs/profiles.md."
)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the train, check and list subcommands."""
    commands = parser.add_subparsers(dest="profile_command", metavar="ACTION", required=True)

    train = commands.add_parser(
        "train",
        help="observe a running process and write a proposed profile",
        description="Sample the threads of a process (or of every process in a cgroup) from "
        "procfs, group them by name without trailing digits, propose a treatment per group "
        "and write a profile file for review.",
    )
    target = train.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid", type=int, help="ID of the process to observe")
    target.add_argument(
        "--cgroup",
        type=Path,
        help="cgroup directory (for example /sys/fs/cgroup/kubepods.slice/...) whose "
        "processes, including those of its child cgroups, are observed",
    )
    train.add_argument(
        "--seconds",
        type=_positive_float,
        default=30.0,
        help="How long to observe, in seconds (default: 30)",
    )
    train.add_argument(
        "--interval-seconds",
        type=_positive_float,
        default=1.0,
        help="Seconds between two samples; threads that live shorter may be missed (default: 1)",
    )
    train.add_argument("--output", type=Path, required=True, help="Profile file to write")
    train.add_argument(
        "--name", help="Profile name (default: trained-<process name>)", default=None
    )
    train.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="GLOB",
        help="Container image glob the profile matches; repeat the option for several",
    )
    train.add_argument(
        "--force", action="store_true", help="Overwrite the output file if it exists"
    )

    check = commands.add_parser(
        "check",
        help="validate profile files",
        description="Validate profile files against the schema and report every problem.",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE", help="Profile files")

    listing = commands.add_parser(
        "list",
        help="list the builtin and custom profiles",
        description="List the profiles the agent would know, in selection order.",
    )
    listing.add_argument(
        "--profile-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="Directory of custom profiles; repeat the option for several",
    )


def _default_name(pid: int | None, cgroup: Path | None) -> str:
    base = cgroup.name if cgroup is not None else "process"
    if pid is not None:
        try:
            base = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            base = str(pid)
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower())[:40].strip("-")
    return f"trained-{slug or 'process'}"


def _run_train(args: argparse.Namespace) -> int:
    from agent.profiles.train import TrainingError, cgroup_pids, describe, train  # noqa: PLC0415

    output: Path = args.output
    if output.exists() and not args.force:
        raise TrainingError(f"{output}: the file exists; pass --force to overwrite it")
    if args.pid is not None:
        pid = args.pid
        target = f"process {pid}"

        def pids() -> list[int]:
            return [pid] if Path(f"/proc/{pid}").is_dir() else []

    else:
        directory: Path = args.cgroup
        if not directory.is_dir():
            raise TrainingError(f"{directory}: cgroup directory not found")
        target = f"cgroup {directory}"

        def pids() -> list[int]:
            return cgroup_pids(directory)

    name = args.name or _default_name(args.pid, args.cgroup)
    proposal = train(
        pids,
        target=target,
        seconds=args.seconds,
        interval_seconds=args.interval_seconds,
        name=name,
        images=args.image,
    )
    for group_name, stats, treatment in proposal.groups:
        print(f"{treatment.value:9} {group_name} ({stats.prefix!r}): {describe(stats)}")
    output.write_text(proposal.text)
    print(f"wrote {output}; review it, then check it with: temper profile check {output}")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from agent.profiles.schema import ProfileError, load_profile  # noqa: PLC0415

    problems: list[str] = []
    for path in args.files:
        try:
            profile = load_profile(path)
        except ProfileError as error:
            problems.extend(error.problems)
            continue
        print(f"{path}: ok, profile {profile.name} with {len(profile.groups)} group(s)")
    if problems:
        raise ProfileError(problems)
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from agent.profiles.catalog import load_catalog  # noqa: PLC0415

    catalog = load_catalog(args.profile_dir)
    for profile in catalog.profiles:
        images = ", ".join(profile.images) or "(annotation only)"
        print(f"{profile.name}: {profile.description} [{profile.source}; images: {images}]")
    for problem in catalog.problems:
        print(f"ignored: {problem}", file=sys.stderr)
    return 1 if catalog.problems else 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    actions = {"train": _run_train, "check": _run_check, "list": _run_list}
    return actions[args.profile_command](args)
