"""Real cgroups and processes for tests that run as root on the cgroup v1 ``cpu`` controller."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CPU_ROOT = Path("/sys/fs/cgroup/cpu")

# A latency-sensitive loop: wake every 2 ms, work ~0.1 ms, for the given seconds.
LATENCY_LOOP = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    time.sleep(0.002)
    spin = time.perf_counter() + 0.0001
    while time.perf_counter() < spin:
        pass
"""
HOG_LOOP = "while True:\n    pass\n"


@contextmanager
def cgroup_tree(relative_dirs: list[str], shares: dict[str, int]) -> Iterator[list[Path]]:
    """Create cgroup directories (parents first) and remove the ones created, children first.

    ``shares`` sets cpu.shares per relative path; the previous values are restored at exit.
    """
    created: list[Path] = []
    paths = []
    previous: dict[Path, str] = {}
    try:
        for relative in relative_dirs:
            path = CPU_ROOT / relative
            for parent in reversed([path, *path.parents]):
                if parent == CPU_ROOT or not parent.is_relative_to(CPU_ROOT):
                    continue
                if not parent.exists():
                    parent.mkdir()
                    created.append(parent)
            paths.append(path)
        for relative, value in shares.items():
            path = CPU_ROOT / relative / "cpu.shares"
            previous[path] = path.read_text().strip()
            path.write_text(str(value))
        yield paths
    finally:
        for path, value in previous.items():
            idle = path.parent / "cpu.idle"
            if idle.exists() and idle.read_text().strip() == "1":
                idle.write_text("0")  # the kernel rejects cpu.shares writes to an idle group
            if path.exists():
                path.write_text(value)
        for path in reversed(created):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)  # processes are still leaving the cgroup


# Tests pin their processes to one CPU so that they compete with each other more than with
# whatever else runs on the machine.
TEST_CPU = (os.cpu_count() or 1) - 1


def _pin_to_test_cpu() -> None:
    os.sched_setaffinity(0, {TEST_CPU})


def start_in_cgroup(code: str, cgroup: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start a Python snippet pinned to TEST_CPU and move it into ``cgroup``."""
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        preexec_fn=_pin_to_test_cpu,  # noqa: PLW1509 - no threads run in the test process
    )
    (cgroup / "cgroup.procs").write_text(str(process.pid))
    return process


def schedstat(pid: int) -> tuple[int, int]:
    """(run-queue delay in ns, number of timeslices) from /proc/<pid>/schedstat."""
    fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(fields[1]), int(fields[2])


def mean_runq_delay_us(cgroup: Path, seconds: float) -> float:
    """Run the latency loop in ``cgroup`` and return its mean run-queue delay per timeslice."""
    process = start_in_cgroup(LATENCY_LOOP, cgroup, str(seconds))
    time.sleep(0.3)  # skip the interpreter start-up
    delay_start, slices_start = schedstat(process.pid)
    time.sleep(seconds - 0.6)
    delay_end, slices_end = schedstat(process.pid)
    process.wait(timeout=seconds + 10)
    slices = max(1, slices_end - slices_start)
    return (delay_end - delay_start) / slices / 1000


def hogs(cgroup: Path, count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` CPU-bound processes in ``cgroup``."""
    return [start_in_cgroup(HOG_LOOP, cgroup) for _ in range(count)]


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Kill and reap the processes."""
    for process in processes:
        process.kill()
    for process in processes:
        process.wait(timeout=10)


def is_root() -> bool:
    """True when the tests run as root."""
    return os.geteuid() == 0
