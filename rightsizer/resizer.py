"""The applier's API calls: resize a pod in place, record the resize on it, post an Event.

The resize goes through the ``pods/resize`` subresource (in-place pod resize, beta and on by
default from Kubernetes 1.33). That subresource ignores metadata, so the
``temper.codes/rightsize-applied`` annotation needs a second PATCH on the pod itself. Events
use the ``events.k8s.io/v1`` API and show in ``kubectl describe pod``.
"""

import logging
import time
from datetime import UTC, datetime
from enum import StrEnum

from rightsizer.applied import AppliedResize, decode_applied, encode_applied, record_changes
from rightsizer.resizeplan import PodPlan, resize_patch
from temper.annotations import RIGHTSIZE_APPLIED
from temper.errors import InvalidAnnotationError, KubernetesError
from temper.kube import STRATEGIC_MERGE_PATCH, JsonObject, KubeClient, status_message

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = "temper.codes/rightsizer"
EVENT_ACTION = "Resize"
REASON_APPLIED = "TrackingRequestApplied"
REASON_FAILED = "TrackingResizeFailed"
# events.k8s.io/v1 rejects a note longer than 1 kB.
MAX_NOTE_BYTES = 1024


class ResizeFailure(StrEnum):
    """Kinds of failed resizes; also the label value of a metric."""

    CONFLICT = "conflict"  # HTTP 409: the pod changed since it was read
    REJECTED = "rejected"  # HTTP 422: the API server found the resize invalid
    FORBIDDEN = "forbidden"  # HTTP 403
    NOT_FOUND = "not-found"  # HTTP 404
    ERROR = "error"  # anything else, such as an unreachable API server


def classify_failure(error: KubernetesError) -> ResizeFailure:
    """Return the kind of a failed ``pods/resize`` PATCH."""
    return {
        409: ResizeFailure.CONFLICT,
        422: ResizeFailure.REJECTED,
        403: ResizeFailure.FORBIDDEN,
        404: ResizeFailure.NOT_FOUND,
    }.get(error.status or 0, ResizeFailure.ERROR)


def describe_failure(error: KubernetesError) -> str:
    """Explain a failed ``pods/resize`` PATCH in terms of what the user can do."""
    kind = classify_failure(error)
    if kind is ResizeFailure.CONFLICT:
        return (
            "the pod changed since it was read (HTTP 409 Conflict); it is planned again in the "
            "next interval"
        )
    if kind is ResizeFailure.REJECTED:
        return f"the API server rejected the resize (HTTP 422): {status_message(error)}"
    if kind is ResizeFailure.FORBIDDEN:
        return (
            "resize forbidden (HTTP 403): grant patch on pods/resize and pods, and create on "
            f"events.k8s.io events; {status_message(error)}"
        )
    if kind is ResizeFailure.NOT_FOUND:
        return (
            "pod not found, or the API server does not serve pods/resize (HTTP 404); in-place "
            "resize needs Kubernetes 1.33 or newer"
        )
    return f"resize failed: {error}"


async def resize_pod(client: KubeClient, plan: PodPlan) -> JsonObject:
    """Set the planned CPU requests through ``pods/resize``; return the updated pod.

    Raises KubernetesError when the API server rejects the resize.
    """
    path = f"/api/v1/namespaces/{plan.namespace}/pods/{plan.name}/resize"
    return await client.request(
        "PATCH", path, body=resize_patch(plan), content_type=STRATEGIC_MERGE_PATCH
    )


def _previous_record(plan: PodPlan, raw: str | None) -> dict[str, AppliedResize]:
    if raw is None:
        return {}
    try:
        return decode_applied(raw)
    except InvalidAnnotationError as error:
        log.warning(
            "invalid applied-resize annotation replaced",
            extra={"pod": plan.pod, "error": str(error)},
        )
        return {}


async def record_on_pod(
    client: KubeClient, plan: PodPlan, previous_raw: str | None, now_seconds: float
) -> str:
    """Write the ``temper.codes/rightsize-applied`` annotation after a resize; return it."""
    resizes = record_changes(_previous_record(plan, previous_raw), plan.changes, now_seconds)
    value = encode_applied(resizes)
    patch = {"metadata": {"annotations": {RIGHTSIZE_APPLIED: value}}}
    await client.merge_patch(f"/api/v1/namespaces/{plan.namespace}/pods/{plan.name}", patch)
    return value


def _truncate(note: str) -> str:
    encoded = note.encode()
    if len(encoded) <= MAX_NOTE_BYTES:
        return note
    return encoded[: MAX_NOTE_BYTES - 3].decode(errors="ignore") + "..."


async def post_event(
    client: KubeClient,
    plan: PodPlan,
    *,
    warning: bool,
    reason: str,
    note: str,
    instance: str,
) -> None:
    """Create an ``events.k8s.io/v1`` Event about the pod; raise KubernetesError on failure."""
    now = datetime.now(UTC)
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{plan.name}.{time.time_ns():x}", "namespace": plan.namespace},
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": EVENT_ACTION,
        "reason": reason,
        "type": "Warning" if warning else "Normal",
        "note": _truncate(note),
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": plan.namespace,
            "name": plan.name,
            "uid": plan.uid,
        },
    }
    await client.request(
        "POST", f"/apis/events.k8s.io/v1/namespaces/{plan.namespace}/events", body=event
    )


def change_note(plan: PodPlan) -> str:
    """Describe the planned changes of a pod for an Event or a log line."""
    parts = []
    for change in plan.changes:
        text = f"{change.name} {change.old_millicores}m -> {change.new_millicores}m"
        if change.bound is not None:
            text += f" (tracking request {change.tracking_millicores}m, {change.bound.value} bound)"
        parts.append(text)
    return f"CPU request of {', '.join(parts)}: tracking request of {plan.workload}"
