"""Run-queue delay of latency-sensitive pods under the stock-kernel mode's weight options.

Runs as root on the cgroup v1 ``cpu`` controller, in kubelet-style cgroups (cgroupfs layout)
with the kubelet's ``cpu.shares``, every process pinned to one CPU. A latency loop (wake every
2 ms, work 0.1 ms) reports its mean run-queue delay per time slice from
``/proc/<pid>/schedstat``. Options are interleaved within each repetition.

- ``critical``: a Guaranteed critical pod (500m request and limit, 512 shares) against
  CPU-bound processes in Burstable batch pods (500m each) below ``kubepods/burstable``, whose
  shares are the batch requests' sum. Options: the stock values, ``cpu.idle`` on the batch
  pods only, and ``cpu.idle`` plus several critical ``cpu.shares`` values.
- ``high``: a Guaranteed high pod (1000m) at several ``cpu.shares`` values, with the critical
  pod at the maximum and the batch pods idle. It reports the high pod's delay against the
  batch processes, and the critical pod's delay while the high pod runs a CPU-bound process,
  which is the cost to the critical tier.

``kubepods`` gets the maximum ``cpu.shares`` so that other load on the machine stays behind
the pods under test; the kubelet would give it the node's CPUs times 1024.
"""

import argparse
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cgrouphelpers import (
    CPU_ROOT,
    cgroup_tree,
    hogs,
    is_root,
    mean_runq_delay_us,
    stop_all,
)

MAX_SHARES = 262144
CRITICAL_OPTIONS: dict[str, tuple[int, bool]] = {
    "stock (512 shares)": (512, False),
    "cpu.idle on batch only": (512, True),
    "cpu.idle + critical 4096": (4096, True),
    "cpu.idle + critical 16384": (16384, True),
    "cpu.idle + critical 65536": (65536, True),
    "cpu.idle + critical 262144": (MAX_SHARES, True),
}
HIGH_OPTIONS = (1024, 8192, 32768, MAX_SHARES)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repetitions", type=int, default=5, help="rounds over all options")
    parser.add_argument(
        "--seconds", type=float, default=1.6, help="length of one latency-loop run, in seconds"
    )
    parser.add_argument(
        "--batch-pods", type=int, default=4, help="Burstable batch pods, one hog process each"
    )
    return parser.parse_args()


def set_idle(directories: list[Path], idle: bool) -> None:
    for directory in directories:
        (directory / "cpu.idle").write_text("1" if idle else "0")


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def run_rounds(
    repetitions: int, options: list[str], measure: Callable[[str], float]
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {option: [] for option in options}
    for repetition in range(repetitions):
        for option in options:
            results[option].append(measure(option))
        print(f"round {repetition + 1}/{repetitions} done", file=sys.stderr, flush=True)
    return results


def main() -> int:
    args = parse_arguments()
    if not is_root() or not (CPU_ROOT / "cpu.idle").exists():
        print("error: run as root on a cgroup v1 cpu controller with cpu.idle", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:8]
    critical = f"kubepods/pod{tag}-critical"
    high = f"kubepods/pod{tag}-high"
    batch = [f"kubepods/burstable/pod{tag}-batch{index}" for index in range(args.batch_pods)]
    shares = {
        "kubepods": MAX_SHARES,
        "kubepods/burstable": 512 * args.batch_pods,
        critical: 512,
        high: 1024,
        **dict.fromkeys(batch, 512),
    }
    with cgroup_tree([critical, high, *batch], shares) as (critical_dir, high_dir, *batch_dirs):
        (critical_dir / "cpu.cfs_quota_us").write_text("50000")
        (high_dir / "cpu.cfs_quota_us").write_text("100000")
        load = [process for directory in batch_dirs for process in hogs(directory, 1)]
        try:

            def measure_critical(option: str) -> float:
                critical_shares, idle = CRITICAL_OPTIONS[option]
                set_idle(batch_dirs, idle)
                (critical_dir / "cpu.shares").write_text(str(critical_shares))
                return mean_runq_delay_us(critical_dir, args.seconds)

            critical_results = run_rounds(
                args.repetitions, list(CRITICAL_OPTIONS), measure_critical
            )

            set_idle(batch_dirs, True)
            (critical_dir / "cpu.shares").write_text(str(MAX_SHARES))

            def measure_high(option: str) -> float:
                (high_dir / "cpu.shares").write_text(option)
                return mean_runq_delay_us(high_dir, args.seconds)

            def measure_cost(option: str) -> float:
                (high_dir / "cpu.shares").write_text(option)
                busy = hogs(high_dir, 1)
                try:
                    return mean_runq_delay_us(critical_dir, args.seconds)
                finally:
                    stop_all(busy)

            high_options = [str(value) for value in HIGH_OPTIONS]
            high_results = run_rounds(args.repetitions, high_options, measure_high)
            cost_results = run_rounds(args.repetitions, high_options, measure_cost)
        finally:
            stop_all(load)
            set_idle(batch_dirs, False)

    print(f"\ncritical pod against {args.batch_pods} batch pods, run-queue delay per slice, us")
    print("| option | median (min-max) |\n| --- | ---: |")
    for option, values in critical_results.items():
        print(f"| {option} | {summary(values)} |")
    print("\nhigh pod shares (critical 262144, batch idle), run-queue delay per slice, us")
    print("| high cpu.shares | high pod vs batch | critical pod vs busy high pod |")
    print("| ---: | ---: | ---: |")
    for option in high_options:
        print(f"| {option} | {summary(high_results[option])} | {summary(cost_results[option])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
