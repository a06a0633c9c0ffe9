"""Facts about the machine a run happened on, recorded beside the results."""

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """Return the first ``model name`` of ``/proc/cpuinfo``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Total memory in GiB, from ``/proc/meminfo``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> tuple[float, float, float]:
    """Return the 1-, 5- and 15-minute load averages."""
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def free_output() -> str:
    """Return the output of ``free -g``, or an empty string where it is missing."""
    try:
        completed = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return completed.stdout.strip()


def describe_machine() -> dict[str, Any]:
    """CPU count and model, memory, kernel, date and load average, for the record."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "free_g": free_output(),
        "kernel": platform.release(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": load_average(),
    }


# A process that moves to CPU 1, writes one byte to its standard output and spins until
# killed.
_SPINNER = "import os\nos.sched_setaffinity(0, {1})\nos.write(1, b'.')\nwhile True:\n    pass\n"


def _loop_rate(seconds: float) -> float:
    """Rounds of a fixed busy loop per second of wall-clock time, on CPU 0."""
    rounds = 0
    began = time.monotonic()
    end = began + seconds
    while time.monotonic() < end:
        for _ in range(10_000):
            pass
        rounds += 1
    return rounds / (time.monotonic() - began)


def cpu_coupling(seconds: float = 2.0) -> float | None:
    """Measure how fast CPU 0 runs a busy loop while CPU 1 is busy, relative to CPU 1 idle.

    The ratio was about 1.0 on this project's host and in a VM whose vCPUs have their own
    host threads. It was about 0.5 in QEMU's single-threaded emulator, where both vCPUs take
    turns on one host thread. Return None on a machine with one CPU.
    """
    if (os.cpu_count() or 1) < 2:
        return None
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        idle = _loop_rate(seconds)
        spinner = subprocess.Popen([sys.executable, "-c", _SPINNER], stdout=subprocess.PIPE)
        try:
            assert spinner.stdout is not None
            spinner.stdout.read(1)  # it is on CPU 1 now (Python starts slowly when emulated)
            busy = _loop_rate(seconds)
        finally:
            spinner.kill()
            spinner.wait()
            if spinner.stdout is not None:
                spinner.stdout.close()
    finally:
        os.sched_setaffinity(0, affinity)
    return round(busy / idle, 2)
