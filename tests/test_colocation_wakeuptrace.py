"""bench/colocation/wakeuptrace.py: the decoding and eligibility rules, then a live trace.

The live test pins a busy task and a task that sleeps 1 ms in a loop to one CPU, both in the
test's own cgroup, so the kernel's wake-up check compares the two tasks themselves. It checks
that the wake-ups are seen and that the entity fields come from the right offsets (nice-0
task weights, positive slices), not what the kernel decided.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.colocation import wakeuptrace
from bench.colocation.wakeuptrace import Entity, Wakeup
from tests.cgrouphelpers import is_root

NICE_0_WEIGHT = 1024


def _entity(vruntime: int, *, weight: int = NICE_0_WEIGHT, vlag: int = 0) -> Entity:
    return Entity(
        weight=weight << wakeuptrace.WEIGHT_SHIFT,
        deadline=vruntime + 1_000,
        vruntime=vruntime,
        vlag=vlag,
        slice_ns=1_400_000,
        on_rq=True,
        depth=1,
    )


def _wakeup(running: Entity, waker: Entity, *, flags: int = 0, wait_ns: int = 0) -> Wakeup:
    # Only the waker is in the tree, so sum_w_vruntime is its key times its weight.
    zero = 1_000_000
    weight = waker.weight >> wakeuptrace.WEIGHT_SHIFT
    return Wakeup(
        wait_ns=wait_ns,
        flags=flags,
        running=running,
        waker=waker,
        sum_w_vruntime=(waker.vruntime - zero) * weight,
        sum_weight=weight,
        zero_vruntime=zero,
        running_is_curr=True,
        sampled=False,
    )


def test_report_decodes_every_field() -> None:
    values = (
        5_000, 1, 0x10,
        2048 << 10, 900, 800, 850, 1_400_000, 1, 2,
        1024 << 10, 700, 600, 0, 100_000, 1, 2,
        -5, 3072, 500, 1, 0,
    )  # fmt: skip
    wakeup = wakeuptrace.parse_report(wakeuptrace.REPORT.pack(*values))
    assert wakeup.wait_ns == 5_000
    assert wakeup.flags == 0x10
    assert wakeup.running == Entity(2048 << 10, 900, 800, 850, 1_400_000, True, 2)
    assert wakeup.waker == Entity(1024 << 10, 700, 600, 0, 100_000, True, 2)
    assert wakeup.sum_w_vruntime == -5
    assert (wakeup.sum_weight, wakeup.zero_vruntime) == (3072, 500)
    assert wakeup.running_is_curr
    assert not wakeup.sampled


def test_eligibility_weighs_the_running_entity() -> None:
    # Equal weights: the average lies halfway, so the one behind is eligible, the other not.
    behind, ahead = _entity(1_000_000), _entity(1_002_000)
    wakeup = _wakeup(running=ahead, waker=behind)
    assert wakeuptrace.eligible(wakeup, behind)
    assert not wakeuptrace.eligible(wakeup, ahead)


def test_heavy_waker_pulls_the_average_to_itself() -> None:
    # A waker 256 times heavier puts the average within 8 of its own vruntime, so a running
    # entity 2,000 behind it is eligible too, which is when the kernel keeps it running.
    running = _entity(1_000_000, weight=NICE_0_WEIGHT)
    waker = _entity(1_002_000, weight=256 * NICE_0_WEIGHT)
    wakeup = _wakeup(running=running, waker=waker)
    assert wakeuptrace.eligible(wakeup, running)
    assert not wakeuptrace.eligible(wakeup, waker)


def test_protection_needs_vprot_ahead_of_vruntime() -> None:
    assert wakeuptrace.protected(_entity(1_000, vlag=1_500))
    assert not wakeuptrace.protected(_entity(1_000, vlag=1_000))
    assert not wakeuptrace.protected(_entity(1_000, vlag=500))


def test_summary_counts_long_waits_by_cause() -> None:
    running = _entity(1_000_000, vlag=1_001_000)  # protected
    eligible_waker = _entity(999_000)
    records = [
        wakeuptrace.classify(_wakeup(running, eligible_waker, wait_ns=3_000_000), 0x30),
        wakeuptrace.classify(_wakeup(running, eligible_waker, wait_ns=20_000, flags=0x10), 0x30),
    ]
    summary = wakeuptrace.summarize(records, {"wakeups": 2, "declined": 1}, 1000.0)
    assert summary["wakeups_onto_runner"] == 2
    assert summary["long_waits"]["count"] == 1
    assert summary["long_waits"]["declined"] == 1
    assert summary["long_waits"]["waker_ineligible"] == 0
    assert records[0]["running_protected"]
    assert not records[1]["declined"]


def test_task_name_length_is_checked() -> None:
    with pytest.raises(SystemExit):
        wakeuptrace.parse_args(["--waker", "x" * 16])


_SET_NAME_AND_PIN = (
    "import ctypes, os, sys, time\n"
    "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
    "os.sched_setaffinity(0, {int(sys.argv[2])})\n"
)
_BUSY = _SET_NAME_AND_PIN + "while True:\n    pass\n"
_SLEEPER = _SET_NAME_AND_PIN + "while True:\n    time.sleep(0.001)\n"


@pytest.mark.root
@pytest.mark.skipif(not is_root(), reason="loads BPF programs: needs root")
def test_live_trace_sees_wakeups_onto_the_busy_task(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    processes = [
        subprocess.Popen([sys.executable, "-c", code, name, str(cpu)])
        for code, name in ((_BUSY, "wtrunner"), (_SLEEPER, "wtwaker"))
    ]
    try:
        time.sleep(0.5)
        args = argparse.Namespace(
            waker="wtwaker",
            runner="wtrunner",
            seconds=2.0,
            long_wait_us=1000.0,
            sample_every=20,
            need_resched_mask=wakeuptrace.DEFAULT_NEED_RESCHED_MASK,
            state_dir=tmp_path,
        )
        result = wakeuptrace.trace(args)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    summary = result["summary"]
    # About 1,000 wake-ups a second are possible; a loaded machine gives fewer.
    assert summary["wakeups_onto_runner"] > 100, summary
    samples = [record for record in result["records"] if record["sampled"]]
    assert samples, summary
    for record in samples:
        assert record["running_weight"] == NICE_0_WEIGHT, record
        assert record["waker_weight"] == NICE_0_WEIGHT, record
        assert record["running_slice_us"] > 0, record
        assert record["waker_slice_us"] > 0, record
        assert record["wait_us"] >= 0, record
