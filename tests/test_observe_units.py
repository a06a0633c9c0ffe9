"""Histogram layout, header discovery, pod targets and dashboards of the observation."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.observe import histogram
from agent.observe.dashboards import DASHBOARDS
from agent.observe.kheaders import (
    KCONFIG,
    find_headers,
    kernel_arch,
    merge_split_headers,
    prepare_bcc_kernel_source,
)
from agent.observe.targets import pod_target
from agent.settings import CgroupDriver
from temper.tiers import Tier

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("delay_us", "slot"),
    [(0, 0), (3, 3), (4, 4), (7, 7), (8, 8), (9, 8), (10, 9), (15, 11), (16, 12), (1000, 35)],
)
def test_slot_for_delay(delay_us: int, slot: int) -> None:
    assert histogram.slot_for_us(delay_us) == slot


def test_slot_bounds_contain_their_delays() -> None:
    for delay_us in range(0, 5000):
        slot = histogram.slot_for_us(delay_us)
        assert delay_us < histogram.slot_upper_us(slot)
        assert slot == 0 or delay_us >= histogram.slot_upper_us(slot - 1)


def test_slot_width_at_most_quarter() -> None:
    for slot in range(8, histogram.DELAY_SLOTS):
        lower = histogram.slot_upper_us(slot - 1)
        assert histogram.slot_upper_us(slot) <= lower * 1.25


@pytest.mark.parametrize(
    ("counts", "quantile", "expected"),
    [
        ([], 0.99, None),
        ([0, 0, 0], 0.99, None),
        ([10], 0.5, 1),
        ([98, 0, 0, 0, 2], 0.99, 5),
        ([99, 0, 0, 0, 1], 0.99, 1),
    ],
)
def test_quantile_upper_bound(counts: list[int], quantile: float, expected: int | None) -> None:
    assert histogram.quantile_us(counts, quantile) == expected


def test_buckets_are_cumulative() -> None:
    counts = [1] * histogram.DELAY_SLOTS
    buckets = histogram.cumulative_buckets(counts)
    values = [count for _, count in buckets]
    assert values == sorted(values)
    assert buckets[-1] == (float("inf"), histogram.DELAY_SLOTS)
    assert buckets[0] == (4e-06, 4)


def make_split_headers(root: Path, version: str) -> Path:
    """A Debian-style pair of header directories (fake files, as the packages lay them out)."""
    arch = kernel_arch()
    common = root / f"linux-headers-{version}-common"
    (common / "include/linux").mkdir(parents=True)
    (common / KCONFIG).write_text("/* kconfig */\n")
    (common / f"arch/{arch}/include/asm").mkdir(parents=True)
    machine = root / f"linux-headers-{version}-amd64"
    (machine / "include/generated").mkdir(parents=True)
    (machine / "include/generated/autoconf.h").write_text("#define CONFIG_X 1\n")
    (machine / f"arch/{arch}/include/generated").mkdir(parents=True)
    (machine / "Makefile").write_text(f"include {common}/Makefile\n")
    return machine


def test_merged_headers_join_both_halves(tmp_path: Path) -> None:
    machine = make_split_headers(tmp_path / "src", "6.1.0-9")
    common = tmp_path / "src/linux-headers-6.1.0-9-common"
    tree = merge_split_headers(machine, common, tmp_path / "merged")
    arch = kernel_arch()
    assert (tree / KCONFIG).is_file()
    assert (tree / "include/generated/autoconf.h").is_file()
    assert (tree / f"arch/{arch}/include/asm").is_dir()
    assert (tree / f"arch/{arch}/include/generated").is_dir()


def test_newest_headers_are_chosen(tmp_path: Path) -> None:
    for version in ("6.1.0-9", "6.1.0-10", "6.1.0-2"):
        make_split_headers(tmp_path, version)
    chosen = find_headers(tmp_path)
    assert chosen is not None
    assert chosen.name == "linux-headers-6.1.0-10-amd64"


def test_bcc_source_kept_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "/somewhere")
    assert prepare_bcc_kernel_source(tmp_path, None) is None


def test_bcc_source_points_at_merged_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    machine = make_split_headers(tmp_path / "src", "6.1.0-9")
    value = prepare_bcc_kernel_source(tmp_path / "state", machine, release="0.0.0-none")
    assert value is not None
    assert (Path(value) / KCONFIG).is_file()


POD = {
    "metadata": {"uid": "1f-2e", "namespace": "shop", "name": "web", "resourceVersion": "7"},
    "spec": {
        "priorityClassName": "temper-high",
        "containers": [{"name": "app", "resources": {"requests": {"cpu": "1"}}}],
    },
    "status": {
        "phase": "Running",
        "qosClass": "Burstable",
        "containerStatuses": [{"name": "app", "containerID": "containerd://abc"}],
        "initContainerStatuses": [{"name": "init", "containerID": "cri-o://def"}],
    },
}


@pytest.mark.parametrize(
    ("driver", "containers", "cgroup"),
    [
        (
            CgroupDriver.CGROUPFS,
            {"abc": ("app", "containerd://abc"), "def": ("init", "cri-o://def")},
            "kubepods/burstable/pod1f-2e/",
        ),
        (
            CgroupDriver.SYSTEMD,
            {
                "cri-containerd-abc.scope": ("app", "containerd://abc"),
                "crio-def.scope": ("init", "cri-o://def"),
            },
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f_2e.slice/",
        ),
    ],
)
def test_pod_target_maps_container_cgroups(
    driver: CgroupDriver, containers: dict[str, tuple[str, str]], cgroup: str
) -> None:
    layout = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, driver)
    target = pod_target(POD, layout)
    assert target is not None
    assert target.tier is Tier.HIGH
    assert dict(target.containers) == containers
    assert target.cgroup == cgroup
    assert target.directory == Path("/sys/fs/cgroup/cpu") / cgroup.rstrip("/")


def test_finished_pod_is_not_a_target() -> None:
    layout = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V2, CgroupDriver.SYSTEMD)
    finished = {**POD, "status": {**POD["status"], "phase": "Succeeded"}}  # type: ignore[dict-item]
    assert pod_target(finished, layout) is None


EXPORTED = {
    "temper_observe_pod_threads",
    "temper_observe_pod_cpu_seconds_total",
    "temper_observe_pod_runq_delay_seconds_total",
    "temper_observe_pod_context_switches_total",
    "temper_observe_pod_runq_delay_p99_seconds",
    "temper_observe_tier_cpu_seconds_total",
    "temper_observe_tier_runq_delay_seconds_total",
    "temper_observe_runq_delay_wakeup_seconds_bucket",
    "temper_observe_linter_violations_total",
    "temper_observe_sample_cpu_seconds_total",
    "temper_observe_bpf_run_seconds_total",
    "temper_observe_bpf_loaded",
    "temper_observe_samples_total",
}


def test_dashboards_query_exported_metrics() -> None:
    collector_source = (REPO / "agent/observe/collector.py").read_text()
    for name, build in DASHBOARDS.items():
        text = json.dumps(build())
        for metric in set(re.findall(r"temper_observe_\w+", text)):
            assert metric in EXPORTED, f"{name} queries unknown metric {metric}"
            family = re.sub(r"_(total|bucket)$", "", metric)
            assert f'"{family}"' in collector_source, f"{metric} is not exported"


def test_dashboard_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/gen-dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
