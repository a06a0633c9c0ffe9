"""Arms of the colocation benchmark that can be checked without running a cell."""

from pathlib import Path

import pytest

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.settings import CgroupDriver
from bench.colocation.arms import ARM_NAMES, PinnedArm
from bench.colocation.cli import build_arms
from bench.colocation.processes import BenchmarkError


def test_pinned_arm_refuses_cgroup_v1() -> None:
    layout = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)
    with pytest.raises(BenchmarkError, match="needs cgroup v2: leave it out of --arms"):
        PinnedArm(layout)


def test_unknown_arm_names_the_choices(tmp_path: Path) -> None:
    layout = CgroupLayout(tmp_path, CgroupVersion.V2, CgroupDriver.CGROUPFS)
    with pytest.raises(BenchmarkError, match="unknown arm 'pined'") as raised:
        build_arms(["pined"], layout, tmp_path, None)
    assert all(name in str(raised.value) for name in ARM_NAMES)
