"""The machine facts of the colocation benchmark: the CPU coupling probe."""

import os
from pathlib import Path

import pytest

from bench.colocation.machine import cpu_coupling


def children() -> set[int]:
    listed: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        listed |= {int(pid) for pid in (task / "children").read_text().split()}
    return listed


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the probe needs two CPUs")
def test_cpu_coupling_cleans_up() -> None:
    affinity = os.sched_getaffinity(0)
    before = children()
    ratio = cpu_coupling(seconds=0.3)
    assert ratio is not None
    # Real CPUs of this host without SMT siblings: CPU 0 keeps most of its speed.
    assert 0.3 < ratio < 1.5
    assert os.sched_getaffinity(0) == affinity
    assert children() == before


def test_cpu_coupling_needs_two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert cpu_coupling(seconds=0.1) is None
