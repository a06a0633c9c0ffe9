"""``temper demo``: the whole product on a local control plane, with a readable report."""

import argparse
import logging
import sys
from pathlib import Path

from temper import logs
from temper.annotations import TierLoad
from temper.demo.report import heading, table
from temper.demo.run import TEMPER_SCHEDULER, DemoResult, run_demo
from temper.tiers import Tier

SUMMARY = "run every component on a local control plane and print a report"
DESCRIPTION = (
    "Start etcd, kube-apiserver and kube-scheduler on 127.0.0.1 (built by "
    "scripts/setup.sh), register the overcommit webhook and the scheduler extender, create "
    "two groups of Node objects each served by its own agent, schedule workloads of all five "
    "tiers onto both groups (the baseline group with kube-scheduler alone, the temper group "
    f"with {TEMPER_SCHEDULER}, which calls the extender), and print a report. Everything "
    "started is stopped at the end."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options."""
    parser.add_argument(
        "--nodes-per-group",
        type=int,
        default=3,
        metavar="COUNT",
        help="Node objects in each of the two groups (default: 3)",
    )
    parser.add_argument(
        "--node-cpus",
        type=int,
        default=4,
        metavar="CPUS",
        help="CPU capacity and allocatable of each Node, in CPUs (default: 4)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Directory for certificates, configs and logs (default: a new temporary one)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="Log level of the demo itself (default: WARNING)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the report; exit 0 when every pod was scheduled."""
    if not 1 <= args.nodes_per_group <= 20:
        print("temper demo: --nodes-per-group must be from 1 to 20", file=sys.stderr)
        return 2
    if not 2 <= args.node_cpus <= 256:
        print("temper demo: --node-cpus must be from 2 to 256", file=sys.stderr)
        return 2
    logs.configure(args.log_level)
    logging.getLogger("temper.controlplane").setLevel(logging.WARNING)
    result = run_demo(args.workdir, args.nodes_per_group, args.node_cpus)
    print(render(result))
    pending = [pod for pod in result.pods if pod["node"] == "(pending)"]
    return 1 if pending else 0


def _load_rows(load: TierLoad | None) -> str:
    if load is None:
        return "(no tier-load published)"
    parts = []
    for tier in Tier:
        entry = load.tiers.get(tier)
        if entry is not None and entry.pods:
            parts.append(
                f"{tier.value}: {entry.pods} pods, {entry.requested_cpu_millicores}m requested, "
                f"{entry.protection_capacity_millicores}m capacity left"
            )
    return "; ".join(parts) or "no pods"


def render(result: DemoResult) -> str:
    """Render the human-readable report."""
    out = [heading("Pods")]
    rows = [
        [p["group"], p["pod"], p["tier"], p["node"], p["cpu_request_original"],
         p["cpu_request_admitted"], p["annotation"]]
        for p in sorted(result.pods, key=lambda p: (p["group"], p["pod"]))
    ]  # fmt: skip
    out.append(
        table(
            ["group", "pod", "tier", "node", "cpu request", "admitted", "original-requests"], rows
        )
    )
    out.append(heading("Nodes"))
    for node in sorted(result.nodes, key=lambda n: n["node"]):
        out.append(f"\n{node['node']}  scheduler: {node['scheduler']}")
        out.append(f"  tier-load: {_load_rows(node['tier_load'])}")
        for layer in node["layers"]:
            kind, body = next(iter(layer["kind"].items()))
            matches = len(layer["matches"]) if layer["matches"] != [[]] else "catch-all"
            detail = ", ".join(
                f"{key}={body[key]}"
                for key in ("cpus_range", "util_range", "protected", "preempt", "weight")
                if key in body
            )
            out.append(f"  layer {layer['name']:<10} {kind:<8} matches={matches}  {detail}")
    out.append(heading("Extender scores for the next pod of each tier (temper group)"))
    score_rows = []
    for score in result.scores:
        ranking = "  ".join(f"{host}={value}" for host, value in sorted(score["scores"].items()))
        score_rows.append([score["pod"], score["tier"], score["request"], ranking])
    out.append(table(["pod", "tier", "admitted request", "scores (0-10)"], score_rows))
    out.append(heading("Placement"))
    total = len(result.pods) // 2
    out.append(
        f"{result.placement_changes} of {total} pods landed on a different node index with the "
        "extender (temper group) than with kube-scheduler alone (baseline group)."
    )
    for group in ("baseline", "temper"):
        used = {p["node"] for p in result.pods if p["group"] == group}
        out.append(f"{group}: {len(used)} nodes in use")
    if result.workdir is not None:
        out.append(f"\nCertificates, layer configs and logs of this run: {result.workdir}")
    return "\n".join(out)
