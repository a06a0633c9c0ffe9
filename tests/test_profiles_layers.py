"""Profile layers: where each thread of a profiled pod lands, by the scx_layered match rules."""

import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.layers import compute_layer_plan
from agent.podinfo import PodInfo, QosClass
from agent.profiles.catalog import builtin_profiles
from agent.profiles.layers import (
    EXCLUSIVE_LAYER,
    LATENCY_LAYER,
    YIELD_LAYER,
    ProfiledPod,
    compute_profile_layers,
)
from agent.profiles.schema import Profile, parse_profile
from agent.settings import CgroupDriver
from agent.topology import Topology
from agent.validation import MAX_LAYERS, MAX_OR_BLOCKS, validate_layer_config
from temper.tiers import Tier
from tests.layermatch import layer_for, matching_blocks

LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V2, CgroupDriver.SYSTEMD)
TOPOLOGY = Topology(cpus=8, threads_per_core=2)
BUILTIN = {profile.name: profile for profile in builtin_profiles()}


def make_pod(
    index: int,
    tier: Tier,
    request_m: int = 1000,
    limit_m: int | None = None,
    phase: str = "Running",
) -> PodInfo:
    uid = str(uuid.UUID(int=index + 1))
    return PodInfo(
        f"ns/pod-{index:02d}", uid, uid, tier, True, QosClass.BURSTABLE, request_m, limit_m, phase
    )


def custom(*groups: tuple[str, list[str], str]) -> Profile:
    data: dict[str, Any] = {
        "name": "custom",
        "description": "test profile",
        "groups": [
            {"name": name, "threads": threads, "treatment": treatment}
            for name, threads, treatment in groups
        ],
    }
    return parse_profile(data, "custom.yaml")


ALL_TREATMENTS = custom(
    ("ex", ["ex_"], "exclusive"),
    ("lat", ["lat_"], "latency"),
    ("yld", ["yld_"], "yield"),
    ("def", ["def_"], "default"),
)


def config_for(
    profiled: list[tuple[PodInfo, Profile]], extra: list[PodInfo] | None = None
) -> list[dict[str, Any]]:
    pods = [pod for pod, _ in profiled] + (extra or [])
    critical_m = sum(p.cpu_request_millicores for p in pods if p.tier is Tier.CRITICAL)
    plan = compute_profile_layers(
        [ProfiledPod(p, f) for p, f in profiled],
        LAYOUT,
        TOPOLOGY,
        critical_request_millicores=critical_m,
    )
    config = compute_layer_plan(pods, LAYOUT, TOPOLOGY, profile_layers=plan.layers).config
    validate_layer_config(config, cpus=TOPOLOGY.cpus)
    return config


def cgroup_of(pod: PodInfo) -> str:
    """A container cgroup of the pod, formatted as scx_layered formats cgroup paths."""
    return LAYOUT.layered_prefix(pod.cgroup_uid, pod.qos) + "cri-containerd-0123.scope/"


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (Tier.CRITICAL, [EXCLUSIVE_LAYER, "critical", YIELD_LAYER, "critical"]),
        (Tier.HIGH, [EXCLUSIVE_LAYER, LATENCY_LAYER, YIELD_LAYER, "high"]),
        (Tier.NORMAL, ["normal", LATENCY_LAYER, YIELD_LAYER, "normal"]),
        (Tier.LOW, ["low", "low", YIELD_LAYER, "low"]),
        (Tier.BACKGROUND, ["background", "background", YIELD_LAYER, "background"]),
    ],
)
def test_tier_gates_treatments(tier: Tier, expected: list[str]) -> None:
    pod = make_pod(0, tier)
    config = config_for([(pod, ALL_TREATMENTS)])
    comms = ["ex_1", "lat_1", "yld_1", "def_1"]
    assert [layer_for(config, cgroup_of(pod), comm) for comm in comms] == expected


def test_unlisted_threads_stay_in_tier() -> None:
    pod = make_pod(0, Tier.HIGH)
    config = config_for([(pod, ALL_TREATMENTS)])
    assert layer_for(config, cgroup_of(pod), "java") == "high"


def test_other_pods_threads_are_not_matched() -> None:
    profiled, plain = make_pod(0, Tier.HIGH), make_pod(1, Tier.HIGH)
    config = config_for([(profiled, ALL_TREATMENTS)], extra=[plain])
    assert layer_for(config, cgroup_of(plain), "lat_1") == "high"
    assert layer_for(config, "system.slice/sshd.service/", "lat_1") == "normal"


def test_gated_treatments_are_reported() -> None:
    plan = compute_profile_layers(
        [ProfiledPod(make_pod(0, Tier.LOW), ALL_TREATMENTS)], LAYOUT, TOPOLOGY
    )
    reasons = {skipped.group: skipped.reason for skipped in plan.skipped}
    assert set(reasons) == {"ex", "lat"}
    assert "needs a critical or high tier pod, not low" in reasons["ex"]
    assert "needs a high or normal tier pod, not low" in reasons["lat"]


def test_limited_pod_keeps_limited_layer() -> None:
    pod = make_pod(0, Tier.NORMAL, limit_m=1000)
    config = config_for([(pod, ALL_TREATMENTS)])
    for comm in ["ex_1", "lat_1", "yld_1"]:
        assert layer_for(config, cgroup_of(pod), comm) == "normal-limited"


def test_critical_pod_with_limit_keeps_treatments() -> None:
    pod = make_pod(0, Tier.CRITICAL, limit_m=1000)
    config = config_for([(pod, ALL_TREATMENTS)])
    assert layer_for(config, cgroup_of(pod), "yld_1") == YIELD_LAYER


def test_earlier_group_wins_over_broader_prefix() -> None:
    profile = custom(("io", ["wrk_io"], "default"), ("workers", ["wrk_"], "yield"))
    pod = make_pod(0, Tier.HIGH)
    config = config_for([(pod, profile)])
    assert layer_for(config, cgroup_of(pod), "wrk_io3") == "high"
    assert layer_for(config, cgroup_of(pod), "wrk_cpu1") == YIELD_LAYER
    block = config[0]["matches"][0]
    assert {"CommPrefixExclude": "wrk_io"} in block


def test_earlier_group_wins_despite_layer_order() -> None:
    profile = custom(("rx", ["net_rx"], "yield"), ("net", ["net_"], "latency"))
    pod = make_pod(0, Tier.HIGH)
    config = config_for([(pod, profile)])
    assert [layer["name"] for layer in config[:2]] == [LATENCY_LAYER, YIELD_LAYER]
    assert layer_for(config, cgroup_of(pod), "net_rx0") == YIELD_LAYER
    assert layer_for(config, cgroup_of(pod), "net_tx0") == LATENCY_LAYER


def test_each_thread_matches_one_block() -> None:
    pod = make_pod(0, Tier.HIGH)
    profile_layers = config_for([(pod, BUILTIN["mysql-innodb"])])[:3]
    for comm in ["ib_log_writer", "ib_io_rd-3", "ib_srv_purge", "ib_srv_wkr-2"]:
        assert len(matching_blocks(profile_layers, cgroup_of(pod), comm)) == 1, comm
    assert matching_blocks(profile_layers, cgroup_of(pod), "ib_pg_flush-1") == []


def test_full_layer_falls_back_to_tier() -> None:
    # Each JVM pod of the high tier needs two latency blocks: 16 fit, the 17th does not.
    pods = [make_pod(i, Tier.HIGH) for i in range(17)]
    profiled = [(pod, BUILTIN["jvm-hotspot"]) for pod in pods]
    config = config_for(profiled)
    latency = next(layer for layer in config if layer["name"] == LATENCY_LAYER)
    assert len(latency["matches"]) == MAX_OR_BLOCKS
    assert layer_for(config, cgroup_of(pods[15]), "GC Thread#0") == LATENCY_LAYER
    assert layer_for(config, cgroup_of(pods[16]), "GC Thread#0") == "high"


def test_full_layer_is_reported() -> None:
    pods = [make_pod(i, Tier.HIGH) for i in range(17)]
    plan = compute_profile_layers(
        [ProfiledPod(p, BUILTIN["jvm-hotspot"]) for p in pods], LAYOUT, TOPOLOGY
    )
    full = [s for s in plan.skipped if s.layer_full]
    assert {(s.pod, s.group) for s in full} == {
        ("ns/pod-16", "safepoint"),
        ("ns/pod-16", "pause-gc"),
        ("ns/pod-16", "housekeeping"),
    }
    assert "has no room for the pod's 2 OR blocks" in full[0].reason


def test_terminal_pod_gets_no_blocks() -> None:
    plan = compute_profile_layers(
        [ProfiledPod(make_pod(0, Tier.HIGH, phase="Succeeded"), ALL_TREATMENTS)],
        LAYOUT,
        TOPOLOGY,
    )
    assert plan.layers == []


@pytest.mark.parametrize(
    ("topology", "requests_m", "expected"),
    [
        (Topology(cpus=8, threads_per_core=2), [1500], [2, 2]),
        (Topology(cpus=8, threads_per_core=2), [1500, 3000], [2, 6]),
        (Topology(cpus=8, threads_per_core=2), [8000], [2, 6]),
        (Topology(cpus=8), [0], [1, 1]),
        (Topology(cpus=2), [4000], [1, 1]),
    ],
)
def test_exclusive_layer_size(
    topology: Topology, requests_m: list[int], expected: list[int]
) -> None:
    pods = [make_pod(i, Tier.HIGH, request) for i, request in enumerate(requests_m)]
    plan = compute_profile_layers(
        [ProfiledPod(p, BUILTIN["mysql-innodb"]) for p in pods], LAYOUT, topology
    )
    assert plan.layers[0]["kind"]["Confined"]["cpus_range"] == expected


@pytest.mark.parametrize(
    ("topology", "critical_m"),
    [(Topology(cpus=4, threads_per_core=2), 1000), (Topology(cpus=2), 1000), (Topology(cpus=1), 0)],
)
def test_exclusive_needs_a_free_core(topology: Topology, critical_m: int) -> None:
    plan = compute_profile_layers(
        [ProfiledPod(make_pod(0, Tier.HIGH), ALL_TREATMENTS)],
        LAYOUT,
        topology,
        critical_request_millicores=critical_m,
    )
    assert EXCLUSIVE_LAYER not in [layer["name"] for layer in plan.layers]
    assert "no core is left for exclusive threads" in plan.skipped[0].reason


def test_exclusive_fits_beside_critical_fence() -> None:
    topology = Topology(cpus=8, threads_per_core=2)
    plan = compute_profile_layers(
        [ProfiledPod(make_pod(0, Tier.HIGH, 8000), ALL_TREATMENTS)],
        LAYOUT,
        topology,
        critical_request_millicores=3000,
    )
    # The critical layer reserves 4 CPUs and one core stays free: 2 CPUs are left.
    assert plan.layers[0]["kind"]["Confined"]["cpus_range"] == [2, 2]


def test_fullest_config_stays_within_limits() -> None:
    tiers = [Tier.CRITICAL, Tier.HIGH, Tier.NORMAL, Tier.LOW, Tier.BACKGROUND]
    plain = [make_pod(i, tier) for i, tier in enumerate(tiers)]
    limited = [make_pod(10 + i, tier, limit_m=2000) for i, tier in enumerate(tiers[1:])]
    profiled = [(make_pod(20 + i, tier), ALL_TREATMENTS) for i, tier in enumerate(tiers)]
    config = config_for(profiled, extra=plain + limited)
    assert len(config) <= MAX_LAYERS
    assert [layer["name"] for layer in config[:3]] == [EXCLUSIVE_LAYER, LATENCY_LAYER, YIELD_LAYER]


def test_no_preempting_open_layer_beside_open_layers() -> None:
    # scx_layered 1.1.2 failed to load its BPF program (E2BIG) with such a pair of layers in
    # the sched_ext VM, while the same configs without the preempting Open layer attached.
    tiers = [Tier.CRITICAL, Tier.HIGH, Tier.NORMAL, Tier.LOW, Tier.BACKGROUND]
    profiled = [(make_pod(i, tier), ALL_TREATMENTS) for i, tier in enumerate(tiers)]
    config = config_for(profiled)
    open_bodies = [layer["kind"]["Open"] for layer in config if "Open" in layer["kind"]]
    assert open_bodies
    assert not any(body.get("preempt") for body in open_bodies)
