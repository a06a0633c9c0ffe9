"""Text and JSON renderings of workload recommendations, with the patch to apply each."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from rightsizer.annotation import WorkloadRecommendation
from rightsizer.owners import Workload
from rightsizer.workloads import kubectl_patch_command, resources_patch


def _cpu(millicores: int | None) -> str:
    return "-" if millicores is None else f"{millicores}m"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _window(recommendation: WorkloadRecommendation) -> str:
    start = datetime.fromtimestamp(recommendation.window_start_seconds, UTC)
    end = datetime.fromtimestamp(recommendation.window_end_seconds, UTC)
    hours = recommendation.observed_seconds / 3600
    return (
        f"history from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, {hours:.1f} h observed"
    )


def render_table(entries: Sequence[tuple[Workload, WorkloadRecommendation]]) -> str:
    """Return one row per workload container, then a ``kubectl patch`` line per workload."""
    if not entries:
        return "no recommendations: the history holds no intervals in the window"
    rows = [
        [
            "NAMESPACE",
            "WORKLOAD",
            "CONTAINER",
            "PODS",
            "CPU REQUEST",
            "TRACKING",
            "CPU LIMIT",
            "CONFIDENCE",
            "FINDINGS",
            "STATUS",
        ]
    ]
    for workload, recommendation in entries:
        for name, advice in recommendation.containers.items():
            findings = ", ".join(f"{f.kind}:{f.group}" for f in advice.findings) or "-"
            rows.append(
                [
                    workload.namespace,
                    f"{workload.kind.lower()}/{workload.name}",
                    name or "(unnamed)",
                    str(recommendation.pods),
                    f"{_cpu(advice.current_request_millicores)} -> "
                    f"{_cpu(advice.request_millicores)}",
                    _cpu(advice.tracking_request_millicores),
                    f"{_cpu(advice.current_limit_millicores)} -> {_cpu(advice.limit_millicores)}",
                    f"{advice.confidence:.2f}",
                    findings,
                    recommendation.status.value,
                ]
            )
    lines = [_table(rows)]
    for workload, recommendation in entries:
        lines += ["", f"{workload}: {_window(recommendation)}"]
        for name, advice in recommendation.containers.items():
            lines.append(f"  {name or '(unnamed)'}: {advice.limit_reason}")
            if advice.basis == "recent":
                lines.append("    demand stepped up: the request covers the last minutes only")
            if (
                advice.tracking_request_millicores is not None
                and recommendation.tracking_seconds is not None
            ):
                minutes = recommendation.tracking_seconds / 60
                lines.append(
                    f"    tracking request {advice.tracking_request_millicores}m: only for an "
                    f"automation that resizes the pods in place within {minutes:g} min, "
                    "such as `temper rightsize apply`"
                )
            lines.extend(
                f"    {f.kind} {f.group!r} in {f.pods} of {recommendation.pods} pods: {f.advice}"
                for f in advice.findings
            )
    lines += ["", "To apply a recommendation after review:"]
    lines.extend(kubectl_patch_command(w, r) for w, r in entries)
    return "\n".join(lines)


def render_json(entries: Sequence[tuple[Workload, WorkloadRecommendation]]) -> str:
    """Return a JSON document: per workload, the annotation value and the patch."""
    documents: list[dict[str, Any]] = [
        {
            "workload": {"kind": w.kind, "namespace": w.namespace, "name": w.name},
            "recommendation": orjson.loads(r.encode()),
            "patch": resources_patch(w, r),
            "kubectl": kubectl_patch_command(w, r),
        }
        for w, r in entries
    ]
    return orjson.dumps(documents, option=orjson.OPT_INDENT_2).decode()
