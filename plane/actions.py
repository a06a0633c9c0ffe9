"""Operator actions against the API server: cordon, drain and safe mode.

Actions read and write the API server directly (never the watch cache), so they act on the
current state of each object.
"""

import logging
from typing import Any
from urllib.parse import quote

from plane.views import is_mirror_or_daemon_pod
from temper import annotations
from temper.errors import KubernetesError
from temper.kube import KubeClient, object_key

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


async def drain(
    client: KubeClient, node: str, grace_period_seconds: int | None
) -> dict[str, list[dict[str, Any]]]:
    """Cordon ``node`` and request one eviction per pod on it, in a single pass.

    Returns the pods whose eviction the API server accepted, the ones a
    PodDisruptionBudget blocked (HTTP 429), the ones that failed otherwise, and the mirror and
    DaemonSet pods that were skipped. Blocked pods are not retried: call drain again.
    """
    await set_unschedulable(client, node, True)
    listing = await client.get("/api/v1/pods", {"fieldSelector": f"spec.nodeName={node}"})
    result: dict[str, list[dict[str, Any]]] = {
        "evicted": [],
        "blocked": [],
        "failed": [],
        "skipped": [],
    }
    for pod in listing.get("items") or []:
        metadata = pod.get("metadata") or {}
        entry: dict[str, Any] = {
            "namespace": str(metadata.get("namespace", "")),
            "name": str(metadata.get("name", "")),
        }
        if is_mirror_or_daemon_pod(pod):
            result["skipped"].append({**entry, "reason": "mirror or DaemonSet pod"})
            continue
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": entry["name"], "namespace": entry["namespace"]},
        }
        if grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        path = (
            f"/api/v1/namespaces/{quote(entry['namespace'], safe='')}/pods/"
            f"{quote(entry['name'], safe='')}/eviction"
        )
        try:
            await client.request("POST", path, body=body)
        except KubernetesError as error:
            if error.status == 404:
                result["evicted"].append({**entry, "reason": "already gone"})
            elif error.status == 429:
                result["blocked"].append({**entry, "reason": str(error)})
            else:
                result["failed"].append({**entry, "reason": str(error)})
            log.warning(
                "eviction not accepted",
                extra={"pod": object_key(pod), "node": node, "status": error.status},
            )
            continue
        result["evicted"].append({**entry, "reason": "eviction accepted"})
    log.info(
        "drain pass finished",
        extra={"node": node, **{key: len(value) for key, value in result.items()}},
    )
    return result
