"""Layer config synthesis: golden configs per node shape, grouping, and the validator."""

import json
import os
import uuid
from pathlib import Path

import pytest

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.layers import NEVER_US, SizingPolicy, compute_layer_plan, critical_cpu_range
from agent.podinfo import PodInfo, QosClass
from agent.profiles.catalog import builtin_profiles
from agent.profiles.layers import ProfiledPod, compute_profile_layers
from agent.settings import CgroupDriver
from agent.topology import Topology
from agent.validation import validate_layer_config
from temper.tiers import Tier

GOLDEN_DIR = Path(__file__).parent / "golden"
LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V2, CgroupDriver.SYSTEMD)


def make_pod(
    index: int,
    tier: Tier,
    cpu_m: int,
    qos: QosClass = QosClass.BURSTABLE,
    limit_m: int | None = None,
) -> PodInfo:
    uid = str(uuid.UUID(int=index + 1))
    return PodInfo(
        key=f"ns/pod-{index}",
        uid=uid,
        cgroup_uid=uid,
        tier=tier,
        temper_class=True,
        qos=qos,
        cpu_request_millicores=cpu_m,
        cpu_limit_millicores=limit_m,
        phase="Running",
    )


def mixed_pods() -> list[PodInfo]:
    return [
        make_pod(0, Tier.CRITICAL, 1500, QosClass.GUARANTEED),
        make_pod(1, Tier.CRITICAL, 500),
        make_pod(2, Tier.HIGH, 1000),
        make_pod(3, Tier.NORMAL, 500),
        make_pod(4, Tier.LOW, 2000, QosClass.BEST_EFFORT),
        make_pod(5, Tier.BACKGROUND, 1000),
    ]


SHAPES = {
    "2cpu-nosmt-mixed": (Topology(cpus=2), mixed_pods()),
    "8cpu-smt2-mixed": (Topology(cpus=8, threads_per_core=2), mixed_pods()),
    "8cpu-nosmt-mixed": (Topology(cpus=8), mixed_pods()),
    "64cpu-smt2-2llc-mixed": (Topology(cpus=64, threads_per_core=2, llcs=2), mixed_pods()),
    "8cpu-no-critical": (
        Topology(cpus=8),
        [p for p in mixed_pods() if p.tier is not Tier.CRITICAL],
    ),
    "8cpu-only-critical": (
        Topology(cpus=8, threads_per_core=2),
        [make_pod(i, Tier.CRITICAL, 700) for i in range(3)],
    ),
    "8cpu-critical-exceeds-cpus": (
        Topology(cpus=8, threads_per_core=2),
        [make_pod(i, Tier.CRITICAL, 4000) for i in range(3)],
    ),
    "8cpu-no-pods": (Topology(cpus=8), []),
    "8cpu-with-cpu-limits": (
        Topology(cpus=8),
        [
            *mixed_pods(),
            make_pod(10, Tier.NORMAL, 500, limit_m=1500),
            make_pod(11, Tier.BACKGROUND, 1000, limit_m=2000),
            make_pod(12, Tier.BACKGROUND, 500, limit_m=500),
            make_pod(13, Tier.CRITICAL, 1000, QosClass.GUARANTEED, limit_m=1000),
        ],
    ),
}


# Node shapes with profiled pods: topology, pods, and the builtin profile per pod key.
PROFILED_SHAPES = {
    "8cpu-smt2-profiled": (
        Topology(cpus=8, threads_per_core=2),
        [*mixed_pods(), make_pod(10, Tier.NORMAL, 500, limit_m=1500)],
        {
            "ns/pod-0": "mysql-innodb",
            "ns/pod-2": "jvm-hotspot",
            "ns/pod-3": "pytorch-dataloader",
            "ns/pod-4": "mysql-innodb",
            "ns/pod-10": "jvm-hotspot",
        },
    ),
    "2cpu-nosmt-profiled-high": (
        Topology(cpus=2),
        [make_pod(0, Tier.HIGH, 1500), make_pod(1, Tier.HIGH, 500), make_pod(2, Tier.NORMAL, 0)],
        {"ns/pod-0": "mysql-innodb", "ns/pod-1": "mysql-innodb", "ns/pod-2": "jvm-hotspot"},
    ),
}


def profiled_config(shape: str) -> list[dict[str, object]]:
    topology, pods, assignment = PROFILED_SHAPES[shape]
    profiles = {profile.name: profile for profile in builtin_profiles()}
    profiled = [ProfiledPod(p, profiles[assignment[p.key]]) for p in pods if p.key in assignment]
    critical_m = sum(p.cpu_request_millicores for p in pods if p.tier is Tier.CRITICAL)
    profile_plan = compute_profile_layers(
        profiled, LAYOUT, topology, critical_request_millicores=critical_m
    )
    return compute_layer_plan(pods, LAYOUT, topology, profile_layers=profile_plan.layers).config


def check_golden(shape: str, config: list[dict[str, object]], cpus: int) -> None:
    validate_layer_config(config, cpus=cpus)
    path = GOLDEN_DIR / f"{shape}.json"
    rendered = json.dumps(config, indent=2, sort_keys=True) + "\n"
    if os.environ.get("TEMPER_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert rendered == path.read_text(), "regenerate with TEMPER_UPDATE_GOLDEN=1 if intended"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_golden_config(shape: str) -> None:
    topology, pods = SHAPES[shape]
    check_golden(shape, compute_layer_plan(pods, LAYOUT, topology).config, topology.cpus)


@pytest.mark.parametrize("shape", sorted(PROFILED_SHAPES))
def test_golden_config_with_profiles(shape: str) -> None:
    check_golden(shape, profiled_config(shape), PROFILED_SHAPES[shape][0].cpus)


def test_profile_layers_come_first() -> None:
    names = [layer["name"] for layer in profiled_config("8cpu-smt2-profiled")]
    assert names == [
        "profile-exclusive",
        "profile-latency",
        "profile-yield",
        "normal-limited",
        "critical",
        "high",
        "low",
        "background",
        "normal",
    ]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_catch_all_is_last(shape: str) -> None:
    topology, pods = SHAPES[shape]
    config = compute_layer_plan(pods, LAYOUT, topology).config
    assert config[-1]["matches"] == [[]]
    assert all(layer["matches"] != [[]] for layer in config[:-1])


def test_one_layer_per_tier_not_per_pod() -> None:
    pods = [make_pod(i, Tier.LOW, 100) for i in range(20)]
    config = compute_layer_plan(pods, LAYOUT, Topology(cpus=8)).config
    assert [layer["name"] for layer in config] == ["low", "normal"]
    assert len(config[0]["matches"]) == 20


def test_many_pods_use_regex_and_stay_valid() -> None:
    pods = [make_pod(i, Tier.BACKGROUND, 100) for i in range(200)]
    plan = compute_layer_plan(pods, LAYOUT, Topology(cpus=8))
    validate_layer_config(plan.config, cpus=8)
    background = plan.config[0]
    assert all("CgroupRegex" in block[0] for block in background["matches"])
    assert plan.unmatched_pods == []


def test_prefix_matches_kubelet_path() -> None:
    pod = make_pod(0, Tier.CRITICAL, 1000, QosClass.GUARANTEED)
    config = compute_layer_plan([pod], LAYOUT, Topology(cpus=4)).config
    prefix = config[0]["matches"][0][0]["CgroupPrefix"]
    assert prefix == f"kubepods.slice/kubepods-pod{pod.uid.replace('-', '_')}.slice/"


def test_terminal_pods_are_left_out() -> None:
    done = PodInfo(
        "ns/done", "u", "u", Tier.CRITICAL, True, QosClass.BURSTABLE, 1000, None, "Succeeded"
    )
    config = compute_layer_plan([done], LAYOUT, Topology(cpus=4)).config
    assert [layer["name"] for layer in config] == ["normal"]


@pytest.mark.parametrize(
    ("request_m", "topology", "expected"),
    [
        (0, Topology(cpus=8), (0, 0)),
        (1500, Topology(cpus=8), (2, 2)),
        (1700, Topology(cpus=8), (2, 3)),
        (1700, Topology(cpus=8, threads_per_core=2), (2, 4)),
        (3000, Topology(cpus=8, threads_per_core=2), (4, 4)),
        (20000, Topology(cpus=8, threads_per_core=2), (6, 6)),
        (5000, Topology(cpus=2), (1, 1)),
    ],
)
def test_critical_cpu_range(request_m: int, topology: Topology, expected: tuple[int, int]) -> None:
    assert critical_cpu_range(request_m, topology, SizingPolicy()) == expected


def test_critical_overcommit_is_reported() -> None:
    topology, pods = SHAPES["8cpu-critical-exceeds-cpus"]
    plan = compute_layer_plan(pods, LAYOUT, topology)
    assert plan.critical_overcommitted
    assert plan.critical_cpus_max == 6


def test_batch_layers_stay_preemptible() -> None:
    config = compute_layer_plan(mixed_pods(), LAYOUT, Topology(cpus=8)).config
    for layer in config:
        if layer["name"] in ("low", "background"):
            body = layer["kind"]["Open"]
            assert body["disallow_preempt_after_us"] == NEVER_US
            assert body["disallow_open_after_us"] == NEVER_US
            assert "preempt" not in body


def test_cpu_limits_bounded_by_limited_layer() -> None:
    topology, pods = SHAPES["8cpu-with-cpu-limits"]
    plan = compute_layer_plan(pods, LAYOUT, topology)
    names = [layer["name"] for layer in plan.config]
    assert names == [
        "normal-limited",
        "background-limited",
        "critical",
        "high",
        "low",
        "background",
        "normal",
    ]
    background_limited = plan.config[1]
    # 2000m + 500m of limits: at most three whole CPUs.
    assert background_limited["kind"]["Confined"]["cpus_range"] == [0, 3]
    assert len(background_limited["matches"]) == 2
    assert sorted(plan.limited_pods) == ["ns/pod-10", "ns/pod-11", "ns/pod-12"]
    # The Guaranteed critical pod stays in the fenced critical layer.
    assert len(plan.config[2]["matches"]) == 3
