"""Scheduler supervision against a FAKE sysfs root and a FAKE scx_layered process."""

import asyncio
import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.supervisor import SchedulerSupervisor, config_digest
from agent.topology import SchedExtSupport, detect_sched_ext, read_topology
from tests.fakes.sysfs import FAKE_SCX_LAYERED, make_fake_kernel_config, make_fake_sysfs


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_fake_sysfs(tmp_path / "sys", cpus=8, threads_per_core=2)
    monkeypatch.setenv("FAKE_SYSFS", str(root))
    monkeypatch.setenv("FAKE_SCX_LOG", str(tmp_path / "starts.log"))
    return root


def write_config(path: Path, name: str) -> str:
    content = f'[{{"name": "{name}", "matches": [[]], "kind": {{"Open": {{}}}}}}]'.encode()
    path.write_bytes(content)
    return config_digest(content)


def supervisor(tmp_path: Path, sysfs: Path, **kwargs: float) -> SchedulerSupervisor:
    return SchedulerSupervisor(
        binary=str(FAKE_SCX_LAYERED),
        config_path=tmp_path / "layers.json",
        sysfs_root=sysfs,
        state_dir=tmp_path / "state",
        attach_timeout_seconds=kwargs.get("attach_timeout_seconds", 10.0),
        min_restart_interval_seconds=kwargs.get("min_restart_interval_seconds", 0.0),
        max_backoff_seconds=kwargs.get("max_backoff_seconds", 300.0),
    )


@pytest.fixture
def cleanup() -> Iterator[list[SchedulerSupervisor]]:
    started: list[SchedulerSupervisor] = []
    yield started
    for item in started:
        asyncio.run(item.stop("test cleanup"))


@pytest.fixture
def crashed_agents() -> Iterator[list[SchedulerSupervisor]]:
    """Supervisors whose agent "crashed": their scheduler is reaped at teardown."""
    abandoned: list[SchedulerSupervisor] = []
    yield abandoned
    for unit in abandoned:
        if unit._popen is not None:
            if unit._popen.poll() is None:
                unit._popen.terminate()
            unit._popen.wait(timeout=15)


def starts(tmp_path: Path) -> int:
    log = tmp_path / "starts.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


RELEASE = "6.18.15+deb13-amd64"


def detect(sysfs: Path, release: str = RELEASE) -> SchedExtSupport:
    """detect_sched_ext on the fake sysfs, with a fake /boot and /proc beside it."""
    root = sysfs.parent
    return detect_sched_ext(
        sysfs, kernel_release=release, boot_dir=root / "boot", procfs_root=root / "proc"
    )


def test_detect_reads_fake_sysfs(sysfs: Path) -> None:
    config = make_fake_kernel_config(sysfs.parent / "boot", RELEASE)
    support = detect(sysfs)
    assert support.supported
    assert support.state == "disabled"
    assert support.kernel_config == config
    topology = read_topology(sysfs)
    assert (topology.cpus, topology.threads_per_core) == (8, 2)


@pytest.mark.parametrize(
    ("remove", "release", "reason"),
    [
        ("kernel/sched_ext/state", "6.18.0", "has no sched_ext"),
        ("kernel/btf/vmlinux", "6.18.0", "has no BTF"),
        (None, "6.6.30", "older than 6.12"),
    ],
)
def test_detect_explains_missing_support(
    sysfs: Path, remove: str | None, release: str, reason: str
) -> None:
    make_fake_kernel_config(sysfs.parent / "boot", release)
    if remove:
        (sysfs / remove).unlink()
    support = detect(sysfs, release)
    assert not support.supported
    assert reason in support.reason


def test_detect_requires_kernel_config(sysfs: Path) -> None:
    # A config of another kernel release does not count: libbpf reads the running one's.
    make_fake_kernel_config(sysfs.parent / "boot", "6.1.0-28-amd64")
    support = detect(sysfs)
    assert not support.supported
    assert "no readable kernel config" in support.reason
    assert f"{sysfs.parent}/boot/config-{RELEASE}" in support.reason
    assert f"{sysfs.parent}/proc/config.gz" in support.reason
    assert "mount the host's /boot read-only" in support.reason


def test_detect_accepts_proc_config_gz(sysfs: Path) -> None:
    proc = sysfs.parent / "proc"
    proc.mkdir()
    (proc / "config.gz").write_bytes(gzip.compress(b"CONFIG_SCHED_CLASS_EXT=y\n"))
    support = detect(sysfs)
    assert support.supported
    assert support.kernel_config == proc / "config.gz"


def test_detect_rejects_unreadable_kernel_config(sysfs: Path) -> None:
    # A directory in place of the file cannot be read, like a file without permission.
    (sysfs.parent / "boot" / f"config-{RELEASE}").mkdir(parents=True)
    support = detect(sysfs)
    assert not support.supported
    assert "no readable kernel config" in support.reason


async def test_start_confirms_attachment(
    tmp_path: Path, sysfs: Path, cleanup: list[SchedulerSupervisor]
) -> None:
    unit = supervisor(tmp_path, sysfs)
    cleanup.append(unit)
    digest = write_config(unit.config_path, "a")
    await unit.ensure(digest)
    assert unit.attached()
    assert unit.running_digest == digest
    assert unit.stats.starts == 1
    assert unit.state_file.exists()


async def test_unchanged_config_is_not_restarted(
    tmp_path: Path, sysfs: Path, cleanup: list[SchedulerSupervisor]
) -> None:
    unit = supervisor(tmp_path, sysfs)
    cleanup.append(unit)
    digest = write_config(unit.config_path, "a")
    await unit.ensure(digest)
    await unit.ensure(digest)
    assert starts(tmp_path) == 1


async def test_new_supervisor_adopts_running_scheduler(
    tmp_path: Path,
    sysfs: Path,
    cleanup: list[SchedulerSupervisor],
    crashed_agents: list[SchedulerSupervisor],
) -> None:
    first = supervisor(tmp_path, sysfs)
    crashed_agents.append(first)
    digest = write_config(first.config_path, "a")
    await first.ensure(digest)
    # The agent restarts: a new supervisor reads the state file and keeps the scheduler.
    second = supervisor(tmp_path, sysfs)
    cleanup.append(second)
    await second.ensure(digest)
    assert second.is_running()
    assert starts(tmp_path) == 1
    assert second.stats.starts == 0


async def test_adopted_scheduler_restarts_on_new_config(
    tmp_path: Path,
    sysfs: Path,
    cleanup: list[SchedulerSupervisor],
    crashed_agents: list[SchedulerSupervisor],
) -> None:
    first = supervisor(tmp_path, sysfs)
    crashed_agents.append(first)
    await first.ensure(write_config(first.config_path, "a"))
    second = supervisor(tmp_path, sysfs)
    cleanup.append(second)
    await second.ensure(write_config(second.config_path, "b"))
    assert starts(tmp_path) == 2
    assert second.stats.restarts == 1
    assert second.stats.last_blackout_seconds > 0


async def test_config_change_restart_is_rate_limited(
    tmp_path: Path, sysfs: Path, cleanup: list[SchedulerSupervisor]
) -> None:
    unit = supervisor(tmp_path, sysfs, min_restart_interval_seconds=3600)
    cleanup.append(unit)
    first = write_config(unit.config_path, "a")
    await unit.ensure(first)
    await unit.ensure(write_config(unit.config_path, "b"))
    assert unit.running_digest == first
    assert starts(tmp_path) == 1


async def test_crash_loop_backs_off(
    tmp_path: Path, sysfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SCX_MODE", "crash")
    unit = supervisor(tmp_path, sysfs)
    digest = write_config(unit.config_path, "a")
    await unit.ensure(digest)
    await unit.ensure(digest)  # within the backoff: no new attempt
    assert starts(tmp_path) == 1
    assert unit.stats.consecutive_failures == 1
    assert "exited with code 1" in unit.stats.last_error
    assert not unit.is_running()


async def test_attach_timeout_stops_process(
    tmp_path: Path, sysfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SCX_MODE", "hang")
    unit = supervisor(tmp_path, sysfs, attach_timeout_seconds=1.0)
    await unit.ensure(write_config(unit.config_path, "a"))
    assert not unit.is_running()
    assert "did not attach" in unit.stats.last_error


async def test_killed_scheduler_is_restarted_after_backoff(
    tmp_path: Path, sysfs: Path, cleanup: list[SchedulerSupervisor]
) -> None:
    unit = supervisor(tmp_path, sysfs)
    cleanup.append(unit)
    digest = write_config(unit.config_path, "a")
    await unit.ensure(digest)
    pid = unit._pid
    assert pid is not None
    os.kill(pid, 9)
    # The kernel unregisters a scheduler whose process died.
    (sysfs / "kernel/sched_ext/state").write_text("disabled\n")
    (sysfs / "kernel/sched_ext/root/ops").unlink()
    await asyncio.sleep(0.2)
    await unit.ensure(digest)  # notices the crash, schedules a retry in 1 s
    assert unit.stats.failures == 1
    await asyncio.sleep(1.1)
    await unit.ensure(digest)
    assert unit.is_running()
    assert starts(tmp_path) == 2


async def test_stop_returns_to_stock(tmp_path: Path, sysfs: Path) -> None:
    unit = supervisor(tmp_path, sysfs)
    await unit.ensure(write_config(unit.config_path, "a"))
    await unit.ensure(None)
    assert not unit.is_running()
    assert (sysfs / "kernel/sched_ext/state").read_text().strip() == "disabled"
    assert not unit.state_file.exists()


async def test_deliberate_stop_is_no_blackout(
    tmp_path: Path, sysfs: Path, cleanup: list[SchedulerSupervisor]
) -> None:
    unit = supervisor(tmp_path, sysfs)
    cleanup.append(unit)
    digest = write_config(unit.config_path, "a")
    await unit.ensure(digest)
    # Safe mode stops the scheduler on purpose; resuming later is no restart.
    await unit.ensure(None)
    await asyncio.sleep(0.3)
    await unit.ensure(digest)
    assert unit.is_running()
    assert unit.stats.restarts == 0
    assert unit.stats.last_blackout_seconds == 0.0
    assert unit.stats.blackout_seconds_total == 0.0
