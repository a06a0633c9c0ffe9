"""Per-pod performance and scheduling panels: the node agent's ``/observe`` data for one
pod, and the pod's tier, PriorityClass, layer and its node's tier load."""

import time
from collections.abc import Mapping
from typing import Any

from plane import actions, explorer, views
from plane.agents import AgentClient
from temper.kube import KubeClient
from temper.tiers import pod_tier


def _thread(thread: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "tid": thread.get("tid"),
        "tgid": thread.get("tgid"),
        "comm": thread.get("comm"),
        "cpuSecondsTotal": thread.get("cpu_seconds_total"),
        "runqDelaySecondsTotal": thread.get("runq_delay_seconds_total"),
        "timeslicesTotal": thread.get("timeslices_total"),
        "voluntaryContextSwitchesTotal": thread.get("voluntary_ctxt_switches_total"),
        "nonvoluntaryContextSwitchesTotal": thread.get("nonvoluntary_ctxt_switches_total"),
        "lastCpu": thread.get("last_cpu"),
    }


def _container(container: Mapping[str, Any]) -> dict[str, Any]:
    threads = [_thread(t) for t in container.get("threads") or [] if isinstance(t, dict)]
    return {
        "name": container.get("name"),
        "containerId": container.get("container_id"),
        "threads": threads,
        "cpuSecondsTotal": sum(float(t["cpuSecondsTotal"] or 0) for t in threads),
        "runqDelaySecondsTotal": sum(float(t["runqDelaySecondsTotal"] or 0) for t in threads),
    }


def observed_pod(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one pod of an ``/observe`` snapshot to the plane's camelCase form."""
    containers = [_container(c) for c in entry.get("containers") or [] if isinstance(c, dict)]
    return {
        "tier": entry.get("tier"),
        "cgroup": entry.get("cgroup"),
        "threads": sum(len(c["threads"]) for c in containers),
        "cpuSecondsTotal": entry.get("cpu_seconds_total"),
        "runqDelaySecondsTotal": entry.get("runq_delay_seconds_total"),
        "runqDelayP99Microseconds": entry.get("runq_delay_p99_us"),
        "cpuSecondsByCpu": entry.get("cpu_seconds_by_cpu"),
        "containers": containers,
    }


def _tier_totals(totals: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(totals, dict):
        return None
    return {
        "cpuSecondsTotal": totals.get("cpu_seconds_total"),
        "runqDelaySecondsTotal": totals.get("runq_delay_seconds_total"),
        "runqDelayP99Microseconds": totals.get("runq_delay_p99_us"),
        "pods": totals.get("pods"),
    }


async def pod_performance(
    client: KubeClient,
    agents: AgentClient,
    namespace: str,
    name: str,
    timeout_seconds: float,
) -> dict[str, Any]:
    """Fetch the agent's ``/observe`` data of one pod; raise AgentError or ExplorerError.

    ``observed`` is False, with the reason, when the agent's snapshot does not contain the pod
    (not running yet, no cgroup found, or sampled before the pod started).
    """
    pod = await explorer.read(
        client, explorer.pod_path(namespace, name), f"pod {namespace}/{name}", timeout_seconds
    )
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise explorer.ExplorerError(
            409, f"pod {namespace}/{name} is not bound to a node yet; it has no performance data"
        )
    answer = await agents.get_json(str(node), "/observe")
    snapshot = answer.body
    uid = str((pod.get("metadata") or {}).get("uid", ""))
    entry = next(
        (p for p in snapshot.get("pods") or [] if isinstance(p, dict) and p.get("uid") == uid),
        None,
    )
    tier = pod_tier(pod).value
    tiers = snapshot.get("tiers") if isinstance(snapshot.get("tiers"), dict) else {}
    sampled_at = snapshot.get("ts")
    return {
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "node": node,
        "tier": tier,
        "agent": {
            "url": answer.url,
            "sampledAtSeconds": sampled_at,
            "ageSeconds": round(time.time() - float(sampled_at), 3)
            if isinstance(sampled_at, int | float)
            else None,
            "intervalSeconds": snapshot.get("interval_seconds"),
            "source": snapshot.get("source"),
            "sourceDetail": snapshot.get("source_detail"),
        },
        "observed": entry is not None,
        "reason": None
        if entry is not None
        else f"the agent of node {node} does not report pod {namespace}/{name} (uid {uid}): it "
        "samples running pods whose cgroup it found, once per interval",
        "pod": observed_pod(entry) if entry is not None else None,
        "tierTotals": _tier_totals((tiers or {}).get(tier)),
        "linter": snapshot.get("linter") if isinstance(snapshot.get("linter"), dict) else None,
    }


async def pod_scheduling(
    client: KubeClient,
    agents: AgentClient,
    namespace: str,
    name: str,
    timeout_seconds: float,
) -> dict[str, Any]:
    """Collect the tier, PriorityClass, expected and reported layer and the node's tier load."""
    pod = await explorer.read(
        client, explorer.pod_path(namespace, name), f"pod {namespace}/{name}", timeout_seconds
    )
    spec = pod.get("spec") or {}
    tier = pod_tier(pod).value
    layer, limit = explorer.expected_layer(pod)
    klass, klass_error = await explorer.priority_class(client, pod, timeout_seconds)
    layer_info = await explorer.layer_report(agents, pod, layer)
    node_name = spec.get("nodeName")
    node_load: dict[str, Any] | None = None
    if node_name:
        try:
            node = await explorer.read(
                client, actions.node_path(str(node_name)), f"node {node_name}", timeout_seconds
            )
        except explorer.ExplorerError as error:
            node_load = {"node": node_name, "error": error.message}
        else:
            summary = views.node_summary(node)
            load = summary["tierLoad"]
            node_load = {
                "node": node_name,
                "scheduler": summary["scheduler"],
                "safeModeRequested": summary["safeModeRequested"],
                "unschedulable": summary["unschedulable"],
                "tierLoad": load,
                "tierLoadError": summary["tierLoadError"],
                "ageSeconds": round(time.time() - float(load["timestampSeconds"]), 3)
                if load
                else None,
                "podTier": (load or {}).get("tiers", {}).get(tier),
            }
    return {
        "namespace": namespace,
        "name": name,
        "node": node_name,
        "tier": tier,
        "priorityClassName": spec.get("priorityClassName"),
        "priority": spec.get("priority"),
        "priorityClass": klass,
        "priorityClassError": klass_error,
        "qosClass": explorer.qos_class(pod),
        "cpuLimitMillicores": limit,
        "layer": layer_info,
        "nodeTierLoad": node_load,
    }
