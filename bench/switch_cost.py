"""Cost of the agent's BPF programs per context switch, the tracepoint's own cost included.

Run as root on a cgroup v1 node (``cpu`` controller at /sys/fs/cgroup/cpu):

    .venv/bin/python bench/switch_cost.py [--rounds 400000] [--repetitions 5]

``kernel.bpf_stats_enabled`` reports the time spent inside the programs, but not the work the
kernel does to call them (for a classic tracepoint, filling the event record and dispatching),
and it adds its own clock reads to each run. This benchmark measures the whole cost from
outside instead. Two processes of one pod cgroup, pinned to one CPU, pass a byte back and
forth through pipes (``bench/native/pingpong.c``): each round trip is two wake-ups and two
context switches of tracked threads. Arms, interleaved per repetition:

- ``none``: no BPF program attached (the agent is not running).
- ``bpf``: the agent's observation with its programs attached and both processes tracked.

The difference of the median round trips, halved, is the cost the programs add to one
context switch with its wake-up. One extra ``bpf`` round with ``kernel.bpf_stats_enabled``
prints the run time per program run for comparison.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from observe_overhead import BPF_STATS, make_cgroups, remove_cgroups

NATIVE = Path(__file__).resolve().parent / "native" / "pingpong.c"


def build(directory: Path) -> Path:
    """Compile the ping-pong program and return its path."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        sys.exit("error: no C compiler found (gcc or cc): install it with apt-get install gcc")
    output = directory / "pingpong"
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(output), str(NATIVE)], check=True)
    return output


def round_trip_ns(binary: Path, rounds: int, cgroup: Path, before_start: Any = None) -> float:
    """Run one ping-pong inside ``cgroup`` and return its mean nanoseconds per round trip."""
    process = subprocess.Popen(
        [str(binary), str(rounds), "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        for pid in process.stdout.readline().split():
            (cgroup / "cgroup.procs").write_text(pid)
        if before_start is not None:
            before_start()
        process.stdin.write("\n")
        process.stdin.flush()
        result = float(process.stdout.readline())
    finally:
        process.kill()
        process.wait()
    return result


async def bpf_round(
    binary: Path, rounds: int, cgroup: Path, pods: list[dict[str, Any]], state: Path
) -> tuple[float, dict[str, tuple[int, int]]]:
    """Run one ping-pong with the agent's programs attached and both processes tracked."""
    from agent.cgroups import CgroupLayout, CgroupVersion  # noqa: PLC0415
    from agent.observe.observer import Observer  # noqa: PLC0415
    from agent.settings import AgentSettings, CgroupDriver  # noqa: PLC0415

    settings = AgentSettings(
        node_name="bench", cgroup_driver=CgroupDriver.CGROUPFS, bpf_enabled=True, state_dir=state
    )
    layout = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)
    observer = Observer(settings, layout, lambda: pods)
    try:
        await observer.start()
        if observer.probe is None:
            sys.exit(f"error: the BPF programs did not load: {observer.source_detail}")
        before = observer.probe.program_stats()
        result = round_trip_ns(binary, rounds, cgroup, before_start=observer.sample)
        after = observer.probe.program_stats()
        threads = sum(len(pod.threads) for pod in observer.sampler.pods.values())
        if threads != 2:
            sys.exit(f"error: the observer tracked {threads} threads of the ping-pong, not 2")
    finally:
        observer.close()
    runs = {
        name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in after
    }
    return result, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400_000, help="round trips per run")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0 or not Path("/sys/fs/cgroup/cpu").is_dir():
        print("error: run as root on a node with the cgroup v1 cpu controller", file=sys.stderr)
        return 2

    print(f"load average before: {os.getloadavg()}")
    workdir = Path(tempfile.mkdtemp(prefix="switch-cost-"))
    created, pods = make_cgroups(1)
    cgroup = next(path for path in created if path.parent.name.startswith("pod"))
    stats_before = BPF_STATS.read_text().strip()
    samples: dict[str, list[float]] = {"none": [], "bpf": []}
    try:
        binary = build(workdir)
        round_trip_ns(binary, args.rounds // 10, cgroup)  # warm-up
        BPF_STATS.write_text("0")
        for repetition in range(args.repetitions):
            samples["none"].append(round_trip_ns(binary, args.rounds, cgroup))
            bpf, _ = asyncio.run(bpf_round(binary, args.rounds, cgroup, pods, workdir / "state"))
            samples["bpf"].append(bpf)
            print(
                f"repetition {repetition + 1}: none {samples['none'][-1]:.0f} ns, "
                f"bpf {bpf:.0f} ns per round trip",
                flush=True,
            )
        BPF_STATS.write_text("1")
        _, runs = asyncio.run(bpf_round(binary, args.rounds, cgroup, pods, workdir / "state"))
    finally:
        BPF_STATS.write_text(stats_before)
        time.sleep(0.2)
        remove_cgroups(created)
        shutil.rmtree(workdir, ignore_errors=True)

    none, bpf = statistics.median(samples["none"]), statistics.median(samples["bpf"])
    print(f"{args.rounds} round trips per run, {args.repetitions} repetitions, CPU 0")
    for arm, median in (("none", none), ("bpf", bpf)):
        runs_ns = sorted(round(value) for value in samples[arm])
        print(f"{arm:4}: median {median:.0f} ns per round trip (runs {runs_ns})")
    added = (bpf - none) / 2
    print(f"added per context switch with its wake-up: {added:.0f} ns ({bpf / none:.3f}x)")
    for name, (run_ns, count) in sorted(runs.items()):
        if count:
            print(f"        {name}: {count / args.rounds:.2f} runs per round trip, "
                  f"{run_ns / count:.0f} ns each with kernel.bpf_stats_enabled")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
