"""Build ``/observe`` snapshot bodies (schema v1) for the rightsizer's tests."""

from dataclasses import dataclass
from typing import Any


@dataclass
class FakeThread:
    """A thread whose counters grow at fixed rates: cores of CPU and of run-queue wait."""

    tid: int
    comm: str
    cpu_cores: float
    wait_cores: float = 0.0
    slices_per_second: float = 100.0

    def counters(self, elapsed_seconds: float) -> dict[str, Any]:
        """Return the thread's cumulative counters ``elapsed_seconds`` after it started."""
        slices = int(self.slices_per_second * elapsed_seconds)
        return {
            "tgid": 100,
            "tid": self.tid,
            "comm": self.comm,
            "cpu_seconds_total": self.cpu_cores * elapsed_seconds,
            "runq_delay_seconds_total": self.wait_cores * elapsed_seconds,
            "timeslices_total": slices,
            "voluntary_ctxt_switches_total": slices,
            "nonvoluntary_ctxt_switches_total": 0,
            "last_cpu": 0,
        }


@dataclass
class FakePod:
    """A pod of one container named ``app``."""

    namespace: str
    name: str
    uid: str
    threads: list[FakeThread]


def snapshot_body(
    pods: list[FakePod], timestamp_seconds: float, start_seconds: float = 0.0, node: str = "node-a"
) -> dict[str, Any]:
    """Return an ``/observe`` body at ``timestamp_seconds`` for threads started at ``start``."""
    elapsed = timestamp_seconds - start_seconds
    return {
        "v": 1,
        "node": node,
        "ts": timestamp_seconds,
        "interval_seconds": 1.0,
        "source": "procfs",
        "pods": [
            {
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
                "tier": "normal",
                "cgroup": f"kubepods.slice/pod{pod.uid}/",
                "containers": [
                    {
                        "name": "app",
                        "container_id": f"containerd://{pod.uid}",
                        "threads": [thread.counters(elapsed) for thread in pod.threads],
                    }
                ],
                "runq_delay_p99_us": None,
            }
            for pod in pods
        ],
        "tiers": {},
        "linter": {"smt_collision": 0, "protected_fallback": 0, "open_reserve": 0},
    }
