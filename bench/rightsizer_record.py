"""Record real per-thread traces on this machine through the rightsizer's own pipeline.

Runs bench/rightsizer_workload.py in a subprocess, reads /proc/<pid>/task/*/stat,
schedstat and status once a second, shapes each read as an agent's ``/observe`` snapshot
(schema v1), and feeds it through the snapshot parser, the delta tracker and a SQLite
history store, exactly as ``temper rightsize collect`` does. Ground-truth labels come from
the thread names the workload sets.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.rightsizer_traces import Trace
from rightsizer.deltas import DeltaTracker
from rightsizer.history import ContainerKey
from rightsizer.snapshot import parse_snapshot
from rightsizer.store import HistoryStore

WORKLOAD = Path(__file__).with_name("rightsizer_workload.py")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LABELS = {"evloop": "hot", "ping": "chain", "pong": "chain", "relay": "chain"}


def _label(comm: str) -> str:
    if comm.startswith("burst-"):
        return "pool"
    return LABELS.get(comm, "other")


def read_thread(pid: int, tid: str) -> dict[str, Any] | None:
    """Return one thread's counters in the ``/observe`` shape, or None if it exited."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        stat = Path(f"{base}/stat").read_text()
        schedstat = Path(f"{base}/schedstat").read_text().split()
        status = Path(f"{base}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name sits in parentheses and may contain spaces, so split after the last ')'.
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    switches = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.endswith(tuple("0123456789")) and "ctxt_switches" in line
    }
    return {
        "tgid": pid,
        "tid": int(tid),
        "comm": comm,
        "cpu_seconds_total": (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        "runq_delay_seconds_total": int(schedstat[1]) / 1e9,
        "timeslices_total": int(schedstat[2]),
        "voluntary_ctxt_switches_total": switches.get("voluntary_ctxt_switches", 0),
        "nonvoluntary_ctxt_switches_total": switches.get("nonvoluntary_ctxt_switches", 0),
        "last_cpu": int(fields[36]),
    }


def observe(pid: int, scenario: str) -> dict[str, Any]:
    """Return an ``/observe`` v1 snapshot with the workload as one pod of one container."""
    threads = [t for tid in os.listdir(f"/proc/{pid}/task") if (t := read_thread(pid, tid))]
    return {
        "v": 1,
        "node": "bench",
        "ts": time.time(),
        "interval_seconds": 1.0,
        "source": "procfs",
        "pods": [
            {
                "namespace": "bench",
                "name": f"real-{scenario}",
                "uid": f"uid-real-{scenario}",
                "tier": "normal",
                "cgroup": "",
                "containers": [{"name": "app", "container_id": "", "threads": threads}],
                "runq_delay_p99_us": None,
            }
        ],
        "tiers": {},
        "linter": {},
    }


def record(scenario: str, seconds: float, interval_seconds: float = 1.0) -> Trace:
    """Run one scenario for ``seconds`` and return its recorded trace."""
    noise = None
    if scenario == "chain":
        noise = subprocess.Popen(
            [sys.executable, str(WORKLOAD), "noise", str(seconds + 5)], stdout=subprocess.PIPE
        )
    process = subprocess.Popen(
        [sys.executable, str(WORKLOAD), scenario, str(seconds + 5)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        roles: dict[int, str] = {}
        # Lines "ROLE TID" (unnamed scenario only), then "ready" once every thread runs.
        while (line := process.stdout.readline().decode().split()) != ["ready"]:
            roles[int(line[1])] = line[0]
        with tempfile.TemporaryDirectory() as workdir:
            store = HistoryStore(Path(workdir) / "history.sqlite")
            tracker = DeltaTracker(max_gap_seconds=10 * interval_seconds)
            started = time.time()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                body = observe(process.pid, scenario)
                store.add(tracker.update(parse_snapshot(body, f"/proc/{process.pid}")))
                time.sleep(interval_seconds - (time.time() - body["ts"]))
            key = ContainerKey("bench", f"real-{scenario}", f"uid-real-{scenario}", "app")
            history = store.load(key, started - 1, time.time() + 1)
            store.close()
    finally:
        for child in (process, noise):
            if child is not None:
                child.kill()
                child.wait()
    used = history.usage.sum(axis=1)
    per_second = np.repeat(used, max(1, round(interval_seconds)))
    return Trace(
        name=f"real-{scenario}",
        family=f"real-{scenario}",
        history=history,
        used_per_second=per_second,
        labels={t.tid: roles.get(t.tid) or _label(t.comm) for t in history.threads},
    )
