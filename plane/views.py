"""Summaries of Nodes, Pods and workloads as the REST API returns them.

Pure functions over API objects given as dicts, so they work on the watch cache's copies.
"""

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from temper import annotations
from temper.errors import InvalidAnnotationError, InvalidQuantityError
from temper.kube import object_key
from temper.quantity import cpu_millicores
from temper.tiers import Tier, pod_tier

log = logging.getLogger(__name__)

# The agent gives pods of these tiers a "<tier>-limited" layer when they have a CPU limit;
# critical pods stay on their fenced CPUs. Mirrors LIMITED_ORDER in the agent's layer rules.
LIMITED_TIERS = frozenset({Tier.HIGH, Tier.NORMAL, Tier.LOW, Tier.BACKGROUND})

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def node_summary(node: Mapping[str, Any]) -> dict[str, Any]:
    """Return name, allocatable, scheduler, parsed tier load and safe-mode state of a Node."""
    metadata = _metadata(node)
    node_annotations = metadata.get("annotations") or {}
    tier_load: dict[str, Any] | None = None
    tier_load_error: str | None = None
    raw_load = node_annotations.get(annotations.TIER_LOAD)
    if raw_load is not None:
        try:
            decoded = annotations.TierLoad.decode(raw_load)
        except InvalidAnnotationError as error:
            tier_load_error = str(error)
        else:
            tier_load = {
                "timestampSeconds": decoded.timestamp_seconds,
                "nodeCpuMillicores": decoded.node_cpu_millicores,
                "tiers": {
                    tier.value: {
                        "requestedCpuMillicores": entry.requested_cpu_millicores,
                        "usedCpuMillicores": entry.used_cpu_millicores,
                        "runqDelayP99Microseconds": entry.runq_delay_p99_us,
                        "protectionCapacityMillicores": entry.protection_capacity_millicores,
                        "pods": entry.pods,
                    }
                    for tier, entry in decoded.tiers.items()
                },
            }
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return {
        "name": str(metadata.get("name", "")),
        "allocatable": {str(key): str(value) for key, value in allocatable.items()},
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable", False)),
        "scheduler": node_annotations.get(annotations.SCHEDULER),
        "safeModeRequested": annotations.is_safe_mode_requested(node_annotations),
        "tierLoad": tier_load,
        "tierLoadError": tier_load_error,
    }


def pod_cpu_limit_millicores(pod: Mapping[str, Any]) -> int | None:
    """Sum of the containers' CPU limits, or None when any container has none."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limit = ((container.get("resources") or {}).get("limits") or {}).get("cpu")
        if limit is None:
            return None
        total += cpu_millicores(limit)
    return total


def pod_layer(tier: Tier, cpu_limit_millicores: int | None) -> str:
    """Return the scx_layered layer the agent's rules put a pod of ``tier`` in."""
    if cpu_limit_millicores is not None and tier in LIMITED_TIERS:
        return f"{tier.value}-limited"
    return tier.value


def pod_summary(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Return name, namespace, node, phase, tier, layer and owner of a Pod."""
    metadata = _metadata(pod)
    tier = pod_tier(pod)
    try:
        limit = pod_cpu_limit_millicores(pod)
    except InvalidQuantityError as error:
        log.warning(
            "pod has an invalid CPU limit, reporting it without one",
            extra={"pod": object_key(pod), "error": str(error)},
        )
        limit = None
    owner = workload_owner(pod)
    return {
        "namespace": str(metadata.get("namespace", "")),
        "name": str(metadata.get("name", "")),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "phase": str((pod.get("status") or {}).get("phase", "Pending")),
        "tier": tier.value,
        "cpuLimitMillicores": limit,
        "layer": pod_layer(tier, limit),
        "owner": {"kind": owner[0], "name": owner[1]},
        "terminating": metadata.get("deletionTimestamp") is not None,
    }


def workload_owner(pod: Mapping[str, Any]) -> tuple[str, str]:
    """Return (kind, name) of the pod's controller, or ("Pod", its name) when it has none."""
    metadata = _metadata(pod)
    for reference in metadata.get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("kind", "")), str(reference.get("name", ""))
    return "Pod", str(metadata.get("name", ""))


def workload_summaries(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Group pods by namespace and controller; count pods per tier and per node."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for pod in pods:
        summary = pod_summary(pod)
        kind, name = workload_owner(pod)
        key = (summary["namespace"], kind, name)
        group = groups.setdefault(
            key,
            {"namespace": key[0], "kind": kind, "name": name, "pods": 0, "tiers": {}, "nodes": []},
        )
        group["pods"] += 1
        group["tiers"][summary["tier"]] = group["tiers"].get(summary["tier"], 0) + 1
        if summary["node"] and summary["node"] not in group["nodes"]:
            group["nodes"].append(summary["node"])
    return [groups[key] for key in sorted(groups)]


def cluster_summary(
    name: str,
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    fleet_safe_mode: bool,
) -> dict[str, Any]:
    """Return node and pod counts, pods per tier and the safe-mode state of one cluster."""
    node_list = list(nodes)
    pods_per_tier = {tier.value: 0 for tier in Tier}
    pod_count = 0
    for pod in pods:
        pod_count += 1
        pods_per_tier[pod_tier(pod).value] += 1
    return {
        "name": name,
        "nodes": len(node_list),
        "unschedulableNodes": sum(
            1 for node in node_list if (node.get("spec") or {}).get("unschedulable")
        ),
        "nodesInSafeMode": sorted(
            str(_metadata(node).get("name", ""))
            for node in node_list
            if annotations.is_safe_mode_requested(_metadata(node).get("annotations"))
        ),
        "fleetSafeModeRequested": fleet_safe_mode,
        "pods": pod_count,
        "podsPerTier": pods_per_tier,
    }


def is_mirror_or_daemon_pod(pod: Mapping[str, Any]) -> bool:
    """True for pods a drain leaves alone: static (mirror) pods and DaemonSet pods."""
    metadata = _metadata(pod)
    if MIRROR_POD_ANNOTATION in (metadata.get("annotations") or {}):
        return True
    return workload_owner(pod)[0] == "DaemonSet"
