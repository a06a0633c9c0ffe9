"""Merge per-pod container recommendations into one per workload, and the patch to apply it.

Replicas of a workload share one pod template, so each container name gets one request:
the maximum over the pods (a replica that runs hotter sets it), and likewise one tracking
request. A finding is listed once
per kind and group with the number of pods that show it; confidence is the lowest over
the pods.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rightsizer.annotation import ContainerAdvice, FindingSummary, WorkloadRecommendation
from rightsizer.owners import WORKLOAD_KINDS, Workload, pod_template
from rightsizer.recommend import ContainerRecommendation
from temper.errors import InvalidQuantityError
from temper.quantity import cpu_millicores, format_cpu_millicores


def current_cpu(template: Mapping[str, Any]) -> dict[str, tuple[int | None, int | None]]:
    """Return each container's CPU request and limit in millicores from a pod template."""
    result: dict[str, tuple[int | None, int | None]] = {}
    for container in (template.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        values: list[int | None] = []
        for section in ("requests", "limits"):
            raw = (resources.get(section) or {}).get("cpu")
            try:
                values.append(None if raw is None else cpu_millicores(raw))
            except InvalidQuantityError:
                values.append(None)
        result[str(container.get("name", ""))] = (values[0], values[1])
    return result


def _merge_findings(
    recommendations: Sequence[ContainerRecommendation],
) -> tuple[FindingSummary, ...]:
    merged: dict[tuple[str, str], FindingSummary] = {}
    for recommendation in recommendations:
        seen: set[tuple[str, str]] = set()
        for finding in recommendation.findings:
            key = (finding.kind.value, finding.group)
            if key in seen:
                continue
            seen.add(key)
            previous = merged.get(key)
            merged[key] = FindingSummary(
                kind=finding.kind.value,
                group=finding.group,
                pods=1 if previous is None else previous.pods + 1,
                metrics=finding.metrics if previous is None else previous.metrics,
                advice=finding.advice,
            )
    return tuple(merged[key] for key in sorted(merged))


def merge(
    recommendations: Sequence[ContainerRecommendation],
    workload_object: Mapping[str, Any],
    kind: str,
    now_seconds: float,
    tracking_seconds: float | None = None,
) -> WorkloadRecommendation:
    """Merge the recommendations of one workload's pods into the annotation value.

    ``tracking_seconds`` is the apply interval that the tracking requests cover.
    """
    current = current_cpu(pod_template(kind, workload_object))
    by_container: dict[str, list[ContainerRecommendation]] = {}
    for recommendation in recommendations:
        by_container.setdefault(recommendation.key.container, []).append(recommendation)
    containers: dict[str, ContainerAdvice] = {}
    for name, items in sorted(by_container.items()):
        top = max(items, key=lambda r: r.request_millicores)
        limits = [r.limit_millicores for r in items if r.limit_millicores is not None]
        request, limit = current.get(name, (None, None))
        containers[name] = ContainerAdvice(
            request_millicores=top.request_millicores,
            limit_millicores=max(limits) if limits else None,
            limit_reason=top.limit_reason,
            current_request_millicores=request,
            current_limit_millicores=limit,
            confidence=min(r.confidence for r in items),
            basis=top.basis,
            findings=_merge_findings(items),
            tracking_request_millicores=max(r.tracking_request_millicores for r in items),
        )
    return WorkloadRecommendation(
        timestamp_seconds=now_seconds,
        window_start_seconds=min(r.window_start_seconds for r in recommendations),
        window_end_seconds=max(r.window_end_seconds for r in recommendations),
        observed_seconds=max(r.observed_seconds for r in recommendations),
        pods=len({r.key.pod_uid for r in recommendations}),
        containers=containers,
        tracking_seconds=tracking_seconds,
    )


def resources_patch(workload: Workload, recommendation: WorkloadRecommendation) -> dict[str, Any]:
    """Return the strategic merge patch that sets the recommended CPU on the pod template.

    Containers merge by name, so other containers and other resources stay as they are.
    """
    containers = []
    for name, advice in recommendation.containers.items():
        resources: dict[str, Any] = {
            "requests": {"cpu": format_cpu_millicores(advice.request_millicores)}
        }
        if advice.limit_millicores is not None:
            resources["limits"] = {"cpu": format_cpu_millicores(advice.limit_millicores)}
        containers.append({"name": name, "resources": resources})
    patch: dict[str, Any] = {"spec": {"containers": containers}}
    for key in reversed(WORKLOAD_KINDS[workload.kind][2]):
        patch = {key: patch}
    return patch


def kubectl_patch_command(workload: Workload, recommendation: WorkloadRecommendation) -> str:
    """Return a ``kubectl patch`` command line that applies the recommendation.

    A bare pod's resources change only through its ``resize`` subresource (in-place pod
    resize, beta in Kubernetes 1.33); workloads change their pod template.
    """
    body = json.dumps(resources_patch(workload, recommendation), separators=(",", ":"))
    subresource = " --subresource resize" if workload.kind == "Pod" else ""
    return (
        f"kubectl patch {workload.kind.lower()} {workload.name} -n {workload.namespace}"
        f"{subresource} --type strategic -p '{body}'"
    )
