"""Facts about the machine a run happened on, recorded beside the results."""

import os
import platform
import subprocess
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
