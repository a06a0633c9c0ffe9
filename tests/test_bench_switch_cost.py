"""bench/switch_cost.py, run briefly: its ping-pong is tracked and the program fires per switch.

It never asserts on the costs themselves: the benchmark measures them. It checks that the
two ping-pong processes were tracked (the benchmark fails otherwise), that the sched_switch
program ran once per context switch (two per round trip), and that its cgroups are gone.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cgrouphelpers import CPU_ROOT, is_root

REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="creates cgroups and loads BPF: needs root"),
    pytest.mark.skipif(not CPU_ROOT.is_dir(), reason="needs the cgroup v1 cpu controller"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the ping-pong"),
]


def test_switch_cost_runs_and_counts_every_switch() -> None:
    pods_before = set((CPU_ROOT / "kubepods" / "burstable").glob("pod*"))
    completed = subprocess.run(
        [sys.executable, "bench/switch_cost.py", "--rounds", "20000", "--repetitions", "1"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr + completed.stdout
    output = completed.stdout
    assert re.search(r"added per context switch with its wake-up: -?\d+ ns", output), output
    runs = re.search(r"raw_tracepoint__sched_switch: ([\d.]+) runs per round trip", output)
    assert runs is not None, output
    # Two switches a round trip, plus the other switches on the node in the meantime.
    assert 2.0 <= float(runs.group(1)) < 2.2
    assert "sched_wakeup" not in output
    assert set((CPU_ROOT / "kubepods" / "burstable").glob("pod*")) == pods_before
