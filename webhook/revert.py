"""``temper webhook revert``: restore the original CPU requests of the pods the webhook mutated.

The command lists the pods that carry ``temper.codes/original-requests`` and, per container,
the CPU request it has now and the one it would get back. It is a dry run unless ``--apply``
is given. With ``--apply``, each pod that has not terminated gets its original requests
through the ``pods/resize`` subresource (in-place resize, served from Kubernetes 1.33 on),
and then the annotation is removed, so a second run finds nothing to do. The resize
subresource ignores metadata changes, which is why the annotation needs a second PATCH on
the pod itself.

A pod whose resize the API server rejects keeps its annotation and is reported with the
API server's message. HTTP 404 means the cluster does not serve ``pods/resize``, and HTTP 422
means it rejects this resize, for example because the QoS class would change.
"""

import asyncio
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from temper import logs
from temper.annotations import ORIGINAL_REQUESTS, OriginalRequests
from temper.errors import InvalidAnnotationError, InvalidQuantityError, KubernetesError
from temper.kube import JSON_PATCH, JsonObject, KubeClient
from temper.quantity import parse_quantity
from webhook.mutation import MIRROR_ANNOTATION, escape_pointer_token
from webhook.settings import RevertSettings

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})
ANNOTATION_POINTER = "/metadata/annotations/" + escape_pointer_token(ORIGINAL_REQUESTS)
# Container list key in the pod spec -> field of OriginalRequests.
CONTAINER_LISTS = ("initContainers", "containers")


@dataclass(frozen=True)
class ContainerRestore:
    """One container whose CPU request differs from the original recorded by the webhook."""

    list_key: str
    index: int
    name: str
    current: str
    original: str


@dataclass
class PodRevert:
    """Plan for reverting one pod, and its outcome after ``--apply``.

    ``skip_reason`` is set when the pod cannot be reverted (terminated, being deleted, an
    invalid annotation). Such a pod is reported and left alone.
    """

    namespace: str
    name: str
    uid: str
    annotation: str
    restores: list[ContainerRestore] = field(default_factory=list)
    skip_reason: str | None = None
    outcome: str | None = None
    failed: bool = False


def _differs(current: Any, original: str) -> bool:
    try:
        return parse_quantity(current) != parse_quantity(original)
    except InvalidQuantityError:
        return True


def plan_pod(pod: Mapping[str, Any]) -> PodRevert:
    """Compare a pod's CPU requests with its ``temper.codes/original-requests`` annotation."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    raw = str(annotations.get(ORIGINAL_REQUESTS, ""))
    plan = PodRevert(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        annotation=raw,
    )
    try:
        record = OriginalRequests.decode(raw)
    except InvalidAnnotationError as error:
        plan.skip_reason = f"invalid annotation: {error}"
        return plan
    phase = (pod.get("status") or {}).get("phase")
    if phase in TERMINATED_PHASES:
        plan.skip_reason = f"pod has terminated ({phase}), nothing to resize"
        return plan
    if metadata.get("deletionTimestamp"):
        plan.skip_reason = "pod is being deleted"
        return plan
    if MIRROR_ANNOTATION in annotations:
        plan.skip_reason = "static pods cannot be resized"
        return plan

    spec = pod.get("spec") or {}
    originals = {"containers": record.containers, "initContainers": record.init_containers}
    for list_key in CONTAINER_LISTS:
        for index, container in enumerate(spec.get(list_key) or []):
            name = container.get("name", "")
            original = originals[list_key].get(name)
            if original is None:
                continue
            requests = (container.get("resources") or {}).get("requests") or {}
            current = requests.get("cpu")
            # The webhook only lowers requests that exist, so a container without a CPU
            # request has nothing to restore.
            if current is not None and _differs(current, original):
                plan.restores.append(
                    ContainerRestore(list_key, index, name, str(current), original)
                )
    return plan


def resize_patch(plan: PodRevert) -> list[dict[str, Any]]:
    """Return the JSON Patch for ``pods/resize`` that sets each original CPU request.

    The ``test`` operations make the API server reject the patch when the pod was replaced
    by another of the same name, or a container index no longer contains the same container.
    """
    operations: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": plan.uid}]
    for restore in plan.restores:
        container = f"/spec/{restore.list_key}/{restore.index}"
        operations.append({"op": "test", "path": f"{container}/name", "value": restore.name})
        operations.append(
            {
                "op": "add",
                "path": f"{container}/resources/requests/cpu",
                "value": restore.original,
            }
        )
    return operations


def annotation_removal_patch(plan: PodRevert) -> list[dict[str, Any]]:
    """Return the JSON Patch that removes the annotation if it is still the value listed."""
    return [
        {"op": "test", "path": ANNOTATION_POINTER, "value": plan.annotation},
        {"op": "remove", "path": ANNOTATION_POINTER},
    ]


def _status_message(error: KubernetesError) -> str:
    """Return the ``message`` of the Status body in ``error``, or the whole error text."""
    text = str(error)
    _, separator, body = text.partition(f"HTTP {error.status}: ")
    if not separator:
        return text
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        # KubeClient keeps the first 500 bytes of the body, which may cut the JSON short.
        match = re.search(r'"message":"((?:[^"\\]|\\.)*)', body)
        return match.group(1).replace('\\"', '"') if match else body
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return body


def describe_resize_failure(error: KubernetesError, pod_exists: bool) -> str:
    """Explain a failed ``pods/resize`` PATCH in terms of what the user can do."""
    if error.status == 404 and not pod_exists:
        return "pod no longer exists"
    if error.status == 404:
        return (
            "resize not supported: the API server does not serve pods/resize (HTTP 404); "
            "in-place resize needs Kubernetes 1.33 or newer with InPlacePodVerticalScaling on"
        )
    if error.status == 422:
        return f"resize rejected (HTTP 422): {_status_message(error)}"
    if error.status == 403:
        return (
            "resize forbidden (HTTP 403): grant patch on pods/resize and pods; "
            f"{_status_message(error)}"
        )
    if error.status == 409:
        return "the pod changed during the resize (HTTP 409); run the command again"
    return f"resize failed: {error}"


async def list_mutated_pods(client: KubeClient, namespace: str | None) -> list[JsonObject]:
    """List the pods that carry the annotation, in one namespace or in all (None)."""
    path = "/api/v1/pods" if namespace is None else f"/api/v1/namespaces/{namespace}/pods"
    pods: list[JsonObject] = []
    token: str | None = None
    while True:
        page = await client.get(path, {"limit": LIST_PAGE_SIZE, "continue": token})
        for pod in page.get("items") or []:
            if ORIGINAL_REQUESTS in ((pod.get("metadata") or {}).get("annotations") or {}):
                pods.append(pod)
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            break
    pods.sort(key=lambda pod: (pod["metadata"].get("namespace", ""), pod["metadata"]["name"]))
    return pods


async def _pod_exists(client: KubeClient, plan: PodRevert) -> bool:
    """Return whether the pod still exists, to separate the two causes of a resize 404.

    Any failure other than HTTP 404 counts as "exists", so an unreachable API server does not
    make an unserved subresource look like a deleted pod.
    """
    try:
        await client.get(f"/api/v1/namespaces/{plan.namespace}/pods/{plan.name}")
    except KubernetesError as error:
        return error.status != 404
    return True


async def apply_revert(client: KubeClient, plan: PodRevert) -> None:
    """Resize the pod back to its original requests, then remove the annotation.

    Sets ``plan.outcome``, and ``plan.failed`` when the pod keeps its annotation.
    """
    pod_path = f"/api/v1/namespaces/{plan.namespace}/pods/{plan.name}"
    if plan.restores:
        try:
            await client.request(
                "PATCH", f"{pod_path}/resize", body=resize_patch(plan), content_type=JSON_PATCH
            )
        except KubernetesError as error:
            plan.failed = True
            plan.outcome = describe_resize_failure(error, await _pod_exists(client, plan))
            log.debug(
                "resize failed",
                extra={"pod": f"{plan.namespace}/{plan.name}", "error": str(error)},
            )
            return
    try:
        await client.request(
            "PATCH", pod_path, body=annotation_removal_patch(plan), content_type=JSON_PATCH
        )
    except KubernetesError as error:
        plan.failed = True
        done = "resized, but " if plan.restores else ""
        plan.outcome = (
            f"{done}removing the annotation failed: {_status_message(error)}; run the command again"
        )
        return
    plan.outcome = "resized, annotation removed" if plan.restores else "annotation removed"


def _action(plan: PodRevert, applied: bool) -> str:
    if plan.skip_reason is not None:
        return f"skipped: {plan.skip_reason}"
    if applied:
        return ("failed: " if plan.failed else "") + (plan.outcome or "")
    if plan.restores:
        return "would resize, then remove the annotation"
    return "would remove the annotation (requests are already the originals)"


def render_table(plans: list[PodRevert], applied: bool) -> str:
    """Format one row per container to restore, and one per pod with nothing to resize."""
    rows = [("NAMESPACE", "POD", "CONTAINER", "CPU-REQUEST", "ORIGINAL", "ACTION")]
    for plan in plans:
        action = _action(plan, applied)
        if not plan.restores:
            rows.append((plan.namespace, plan.name, "-", "-", "-", action))
            continue
        for restore in plan.restores:
            name = restore.name + (" (init)" if restore.list_key == "initContainers" else "")
            rows.append(
                (plan.namespace, plan.name, name, restore.current, restore.original, action)
            )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def summarize(plans: list[PodRevert], applied: bool) -> str:
    """Return the closing line: counts, and what to run next."""
    skipped = sum(1 for plan in plans if plan.skip_reason is not None)
    active = [plan for plan in plans if plan.skip_reason is None]
    if not applied:
        containers = sum(len(plan.restores) for plan in active)
        resizes = sum(1 for plan in active if plan.restores)
        return (
            f"dry run: {_count(resizes, 'pod')} ({_count(containers, 'container')}) to resize, "
            f"{_count(len(active), 'annotation')} to remove, {_count(skipped, 'pod')} skipped; "
            "nothing changed, add --apply to revert"
        )
    failed = sum(1 for plan in active if plan.failed)
    return f"reverted {_count(len(active) - failed, 'pod')}, {failed} failed, {skipped} skipped"


async def revert(settings: RevertSettings, out: TextIO) -> int:
    """List the mutated pods, revert them when ``apply`` is set, print the table.

    Returns the exit code: 1 when any pod failed to revert, else 0.
    """
    client = await KubeClient.connect(settings.kubeconfig)
    try:
        pods = await list_mutated_pods(client, settings.namespace)
        plans = [plan_pod(pod) for pod in pods]
        if not plans:
            where = f"namespace {settings.namespace}" if settings.namespace else "any namespace"
            print(f"no pods in {where} carry {ORIGINAL_REQUESTS}; nothing to revert", file=out)
            return 0
        if settings.apply:
            for plan in plans:
                if plan.skip_reason is None:
                    await apply_revert(client, plan)
    finally:
        await client.close()
    print(render_table(plans, settings.apply), file=out)
    print(summarize(plans, settings.apply), file=out)
    return 1 if any(plan.failed for plan in plans) else 0


def run_revert(settings: RevertSettings) -> int:
    """Run the revert command and return its exit code: 1 when any pod failed to revert."""
    logs.configure("WARNING")
    return asyncio.run(revert(settings, sys.stdout))
