"""The ``/observe`` JSON document, built on request from the sampler's records."""

from typing import TYPE_CHECKING, Any

from agent.observe.threads import (
    CPU_NS,
    INVOLUNTARY,
    RUN_DELAY_NS,
    TIMESLICES,
    VOLUNTARY,
    PodState,
    ThreadRecord,
)
from temper.tiers import Tier

if TYPE_CHECKING:
    from agent.observe.observer import Observer

SCHEMA_VERSION = 1


def _thread(record: ThreadRecord) -> dict[str, Any]:
    counters = record.counters
    return {
        "tgid": record.tgid,
        "tid": record.tid,
        "comm": record.comm,
        "cpu_seconds_total": counters[CPU_NS] / 1e9,
        "runq_delay_seconds_total": counters[RUN_DELAY_NS] / 1e9,
        "timeslices_total": counters[TIMESLICES],
        "voluntary_ctxt_switches_total": counters[VOLUNTARY],
        "nonvoluntary_ctxt_switches_total": counters[INVOLUNTARY],
        "last_cpu": record.last_cpu,
    }


def _pod(observer: "Observer", pod: PodState) -> dict[str, Any]:
    target = pod.target
    containers: dict[str, dict[str, Any]] = {}
    for record in sorted(pod.threads.values(), key=lambda r: r.tid):
        entry = containers.get(record.container)
        if entry is None:
            name, container_id = target.containers.get(record.container, ("", record.container))
            entry = {"name": name, "container_id": container_id, "threads": []}
            containers[record.container] = entry
        entry["threads"].append(_thread(record))
    placement = None
    probe = observer.probe
    if probe is not None and pod.group >= 0:
        placement = [ns / 1e9 for ns in probe.read_placement(pod.group)]
    return {
        "namespace": target.namespace,
        "name": target.name,
        "uid": target.uid,
        "tier": target.tier.value,
        "cgroup": target.cgroup,
        "containers": list(containers.values()),
        "runq_delay_p99_us": pod.runq_delay_p99_us,
        "cpu_seconds_total": pod.totals[CPU_NS] / 1e9,
        "runq_delay_seconds_total": pod.totals[RUN_DELAY_NS] / 1e9,
        "cpu_seconds_by_cpu": placement,
    }


def _layer_check(observer: "Observer") -> dict[str, Any] | None:
    result = observer.layer_check.result
    if result is None:
        return None
    return {
        "ts": result.at_seconds,
        "detail": result.detail,
        "mismatch": result.mismatch,
        "layers": {
            name: {
                "reported": layer.reported,
                "expected_min": layer.expected_min,
                "expected_max": layer.expected_max,
                "mismatch": layer.mismatch,
            }
            for name, layer in result.layers.items()
        },
    }


def build(observer: "Observer") -> dict[str, Any]:
    """Assemble the snapshot of the latest pass."""
    sampler = observer.sampler
    sampler.refresh()
    tiers: dict[str, dict[str, Any]] = {}
    for tier in Tier:
        totals = sampler.tier_totals[tier]
        tiers[tier.value] = {
            "cpu_seconds_total": totals[CPU_NS] / 1e9,
            "runq_delay_seconds_total": totals[RUN_DELAY_NS] / 1e9,
            "runq_delay_p99_us": sampler.tier_runq_delay_p99_us[tier],
            "pods": sum(1 for pod in sampler.pods.values() if pod.target.tier is tier),
        }
    pods = sorted(
        sampler.pods.values(), key=lambda p: (p.target.namespace, p.target.name, p.target.uid)
    )
    return {
        "v": SCHEMA_VERSION,
        "node": observer.settings.node_name,
        "ts": observer.sampled_at,
        "interval_seconds": observer.settings.observe_interval_seconds,
        "source": observer.source,
        "source_detail": observer.source_detail,
        "pods": [_pod(observer, pod) for pod in pods],
        "tiers": tiers,
        "linter": dict(observer.linter.counts.events),
        "layer_check": _layer_check(observer),
    }
