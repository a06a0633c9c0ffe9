"""Operator actions against the API server: cordon, drain and safe mode.

Actions read and write the API server directly (never the watch cache), so they act on the
current state of each object.
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from plane.views import is_mirror_or_daemon_pod
from temper import annotations
from temper.errors import KubernetesError
from temper.kube import KubeClient

log = logging.getLogger(__name__)


def node_path(name: str) -> str:
    """Return the API path of a Node."""
    return f"/api/v1/nodes/{quote(name, safe='')}"


async def set_unschedulable(client: KubeClient, node: str, unschedulable: bool) -> None:
    """Cordon (``True``) or uncordon (``False``) a Node through ``spec.unschedulable``."""
    await client.merge_patch(node_path(node), {"spec": {"unschedulable": unschedulable or None}})
    log.info("node schedulability changed", extra={"node": node, "unschedulable": unschedulable})


async def set_safe_mode(client: KubeClient, path: str, requested: bool) -> None:
    """Add or remove ``temper.codes/safe-mode-requested: "true"`` on the object at ``path``."""
    value = "true" if requested else None
    await client.merge_patch(
        path, {"metadata": {"annotations": {annotations.SAFE_MODE_REQUESTED: value}}}
    )
    log.info("safe mode changed", extra={"object": path, "requested": requested})


def _status_message(error: KubernetesError) -> str:
    """Format ``HTTP <status>: <message>`` from the API server's Status body in ``error``."""
    text = str(error)
    message = text
    start = text.find("{")
    if start >= 0:
        try:
            status = orjson.loads(text[start:])
        except orjson.JSONDecodeError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            causes = [
                str(cause.get("message"))
                for cause in (status.get("details") or {}).get("causes") or []
                if isinstance(cause, dict) and cause.get("message")
            ]
            message = " ".join([str(status["message"]), "; ".join(causes)]).strip()
    return f"HTTP {error.status}: {message}" if error.status else message


async def _evict(
    client: KubeClient, entry: dict[str, Any], grace_period_seconds: int | None
) -> KubernetesError | None:
    body: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": entry["name"], "namespace": entry["namespace"]},
    }
    if grace_period_seconds is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
    path = pod_path(entry["namespace"], entry["name"]) + "/eviction"
    try:
        await client.request("POST", path, body=body)
    except KubernetesError as error:
        return error
    return None


def pod_path(namespace: str, name: str) -> str:
    """Return the API path of a Pod."""
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"


async def _gone(client: KubeClient, entry: Mapping[str, Any]) -> bool:
    """True when the evicted pod no longer exists (or a new pod took its name)."""
    try:
        pod = await client.get(pod_path(entry["namespace"], entry["name"]))
    except KubernetesError as error:
        return error.status == 404
    return str((pod.get("metadata") or {}).get("uid", "")) != str(entry["uid"])


async def drain(
    client: KubeClient,
    node: str,
    grace_period_seconds: int | None,
    timeout_seconds: float = 0.0,
    retry_interval_seconds: float = 5.0,
) -> dict[str, Any]:
    """Cordon ``node`` and evict its pods, retrying the ones a PodDisruptionBudget blocks.

    As ``kubectl drain``: mirror and DaemonSet pods are skipped, an eviction refused with
    HTTP 429 (a budget allows no disruption now) is retried every ``retry_interval_seconds``
    until ``timeout_seconds`` have passed, and then the drain waits, within the same time,
    for the evicted pods to be gone. It returns what it reached: the evicted pods (with
    ``deleted``), the ones still blocked (with the API server's last reason and the number of
    attempts), the ones that failed otherwise, the skipped ones, and ``complete`` when every
    pod that had to go is gone. A timeout of 0 makes one pass.
    """
    await set_unschedulable(client, node, True)
    deadline = time.monotonic() + timeout_seconds
    listing = await client.get("/api/v1/pods", {"fieldSelector": f"spec.nodeName={node}"})
    evicted: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for pod in listing.get("items") or []:
        metadata = pod.get("metadata") or {}
        entry: dict[str, Any] = {
            "namespace": str(metadata.get("namespace", "")),
            "name": str(metadata.get("name", "")),
        }
        if is_mirror_or_daemon_pod(pod):
            skipped.append({**entry, "reason": "mirror or DaemonSet pod"})
        else:
            pending.append({**entry, "uid": str(metadata.get("uid", "")), "attempts": 0})

    attempts = 0
    while pending:
        attempts += 1
        blocked: list[dict[str, Any]] = []
        for entry in pending:
            entry["attempts"] += 1
            error = await _evict(client, entry, grace_period_seconds)
            if error is None:
                evicted.append({**entry, "reason": "eviction accepted", "deleted": False})
            elif error.status == 404:
                evicted.append({**entry, "reason": "already gone", "deleted": True})
            elif error.status == 429:
                blocked.append({**entry, "reason": _status_message(error)})
            else:
                failed.append({**entry, "reason": _status_message(error)})
                log.warning(
                    "eviction failed",
                    extra={"pod": f"{entry['namespace']}/{entry['name']}", "node": node,
                           "status": error.status},
                )  # fmt: skip
        pending = blocked
        if not pending or time.monotonic() + retry_interval_seconds > deadline:
            break
        log.info(
            "evictions blocked by a PodDisruptionBudget, retrying",
            extra={"node": node, "blocked": [f"{e['namespace']}/{e['name']}" for e in pending],
                   "retry_in_seconds": retry_interval_seconds},
        )  # fmt: skip
        await asyncio.sleep(retry_interval_seconds)

    waiting = [entry for entry in evicted if not entry["deleted"]]
    while waiting:
        for entry in waiting:
            entry["deleted"] = await _gone(client, entry)
        waiting = [entry for entry in waiting if not entry["deleted"]]
        if not waiting or time.monotonic() + retry_interval_seconds > deadline:
            break
        await asyncio.sleep(retry_interval_seconds)

    for entry in evicted + failed:
        entry.pop("attempts", None)
    for entry in (*evicted, *pending, *failed):
        entry.pop("uid", None)
    complete = not pending and not failed and all(entry["deleted"] for entry in evicted)
    result: dict[str, Any] = {
        "evicted": evicted,
        "blocked": pending,
        "failed": failed,
        "skipped": skipped,
        "complete": complete,
        "attempts": attempts,
        "timeoutSeconds": timeout_seconds,
    }
    log.info(
        "drain finished",
        extra={
            "node": node,
            "complete": complete,
            "attempts": attempts,
            **{key: len(result[key]) for key in ("evicted", "blocked", "failed", "skipped")},
        },
    )
    return result
