"""Arms of the colocation benchmark that can be checked without running a cell."""

from pathlib import Path

import pytest

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.settings import CgroupDriver
from bench.colocation.arms import ARM_NAMES, PinnedArm
from bench.colocation.cli import build_arms, resume_arguments
from bench.colocation.processes import BenchmarkError


def test_pinned_arm_rejects_cgroup_v1() -> None:
    layout = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)
    with pytest.raises(BenchmarkError, match="needs cgroup v2: leave it out of --arms"):
        PinnedArm(layout)


def test_unknown_arm_names_the_choices(tmp_path: Path) -> None:
    layout = CgroupLayout(tmp_path, CgroupVersion.V2, CgroupDriver.CGROUPFS)
    with pytest.raises(BenchmarkError, match="unknown arm 'pined'") as raised:
        build_arms(["pined"], layout, tmp_path, None)
    for name in ARM_NAMES:
        assert name in str(raised.value)


def test_guest_crash_found_in_console(tmp_path: Path) -> None:
    from bench.colocation.vm import guest_crashed  # noqa: PLC0415 - imports tests.vm

    console = tmp_path / "console.log"
    assert not guest_crashed(console)  # no console at all
    console.write_text("[    5.4] virtme-ng-init: starting script\n[  600.1] reboot: Power down\n")
    assert not guest_crashed(console)
    console.write_text(
        "[  435.970694] Oops: int3: 0000 [#1] SMP NOPTI\n"
        "[  435.975819] Kernel panic - not syncing: Fatal exception in interrupt\n"
    )
    assert guest_crashed(console)


def test_resume_arguments_keep_the_rate(tmp_path: Path) -> None:
    assert resume_arguments(tmp_path) == []  # nothing finished: start afresh
    (tmp_path / "cells.jsonl").write_text(
        '{"arm": "stock", "fillers": 0, "repetition": 0, "rate": 680.0}\n'
    )
    assert resume_arguments(tmp_path) == ["--resume", "--rate", "680"]
