"""CPU and memory cost of the agent's observation at 1,000 threads in 50 pod cgroups.

Run as root on a cgroup v1 node (``cpu`` controller at /sys/fs/cgroup/cpu):

    .venv/bin/python bench/observe_overhead.py [--threads 1000] [--cgroups 50] [--seconds 20]

It creates 50 pod cgroups (cgroupfs layout, tiers assigned round-robin) and starts one worker
process per cgroup with 20 threads that each wake 10 times a second. Then it runs three phases
in one run. Each phase is a fresh process that imports the whole agent (as ``temper agent``
does), so its resident memory is the agent's:

- ``idle``: the process sleeps; the baseline.
- ``procfs``: observation with BPF disabled, sampling once per interval.
- ``bpf``: observation with the BPF programs attached; the programs' own run time is read
  from the kernel (``kernel.bpf_stats_enabled`` is turned on for the phase).

The passes follow the agent's schedule: one starts every interval, whatever the last one
took. In the ``procfs`` and ``bpf`` phases the layer check runs too, as the agent runs it
while scx_layered is attached: every ``--layer-check-interval-seconds`` (the default of
``--scx-stats-interval-seconds``) it counts the pod threads per layer of the config the agent
computes for these pods, twice (before and after the statistics request), in a worker
thread. No scx_layered runs here, so nothing is compared; the counts are the check's cost.

CPU use is reported as a percentage of one core: the process's user+system time over the
phase (every thread of it), minus the idle baseline's. Start-up (BPF compilation, first
sample, first layer count) is excluded. Every cgroup and process the benchmark creates is
removed at the end. The options ``--procfs-detail-interval-seconds`` and
``--procfs-listing-interval-seconds`` set the agent settings of the same names
(``observe_procfs_*``); without them the agent's defaults apply.
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
TIERS = ("temper-critical", "temper-high", "temper-normal", "temper-low", "temper-background")

WORKER = """
import sys, threading, time
threads, period = int(sys.argv[1]), float(sys.argv[2])
def work():
    while True:
        time.sleep(period)
        total = 0
        for step in range(200):
            total += step
for _ in range(threads - 1):
    threading.Thread(target=work, daemon=True).start()
work()
"""


def pod_dict(uid: str, index: int, container_id: str) -> dict[str, Any]:
    """A Burstable pod as the API server returns it."""
    return {
        "metadata": {
            "uid": uid,
            "namespace": "bench",
            "name": f"pod-{index}",
            "resourceVersion": "1",
        },
        "spec": {
            "priorityClassName": TIERS[index % len(TIERS)],
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "10m"}}}],
        },
        "status": {
            "phase": "Running",
            "qosClass": "Burstable",
            "containerStatuses": [{"name": "app", "containerID": f"containerd://{container_id}"}],
        },
    }


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_phase(mode: str, pods_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One phase, in this (child) process; returns the measurements."""
    import agent.service  # noqa: F401, PLC0415 - load every module the agent process loads
    from agent.cgroups import CgroupLayout, CgroupVersion  # noqa: PLC0415
    from agent.layers import compute_layer_plan  # noqa: PLC0415
    from agent.observe.observer import Observer  # noqa: PLC0415
    from agent.podinfo import pod_info  # noqa: PLC0415
    from agent.settings import AgentSettings, CgroupDriver  # noqa: PLC0415
    from agent.topology import Topology  # noqa: PLC0415

    seconds, interval = args.seconds, args.interval_seconds
    pods = json.loads(pods_file.read_text())
    state = Path(tempfile.mkdtemp(prefix="observe-bench-"))
    extra: dict[str, float] = {}
    if args.procfs_detail_interval_seconds is not None:
        extra["observe_procfs_detail_interval_seconds"] = args.procfs_detail_interval_seconds
    if args.procfs_listing_interval_seconds is not None:
        extra["observe_procfs_listing_interval_seconds"] = args.procfs_listing_interval_seconds
    settings = AgentSettings(
        node_name="bench",
        cgroup_driver=CgroupDriver.CGROUPFS,
        bpf_enabled=mode == "bpf",
        observe_interval_seconds=interval,
        state_dir=state,
        **extra,
    )
    layout = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)
    observer = Observer(settings, layout, lambda: pods)
    check = observer.layer_check
    config = compute_layer_plan(
        [pod_info(pod) for pod in pods], layout, Topology(cpus=os.cpu_count() or 1)
    ).config
    layers = check.layers(config)
    layer_check_seconds = 0.0

    def count(targets: list[Any]) -> None:
        nonlocal layer_check_seconds
        began = time.thread_time()
        check.count("bench", layers, targets)
        layer_check_seconds += time.thread_time() - began

    async def count_twice() -> None:
        # As the stats monitor does: one count before and one after the request, each in a
        # worker thread.
        await asyncio.to_thread(count, observer.pod_targets())
        await asyncio.to_thread(count, observer.pod_targets())

    async def measure() -> dict[str, Any]:
        nonlocal layer_check_seconds
        checking = mode != "idle" and args.layer_check_interval_seconds > 0
        if mode != "idle":
            await observer.start()
            observer.sample()
        if checking:
            await count_twice()  # the baseline count of a scheduler
        layer_check_seconds = 0.0
        programs_before = observer.probe.program_stats() if observer.probe else {}
        cpu_before = cpu_seconds()
        started = time.monotonic()
        next_pass = next_check = started
        passes = checks = 0
        while time.monotonic() - started < seconds:
            next_pass += interval
            await asyncio.sleep(max(0.0, next_pass - time.monotonic()))
            if mode != "idle":
                observer.sample()
                passes += 1
            if checking and time.monotonic() >= next_check + args.layer_check_interval_seconds:
                next_check += args.layer_check_interval_seconds
                await count_twice()
                checks += 1
        elapsed = time.monotonic() - started
        cpu = cpu_seconds() - cpu_before
        programs_after = observer.probe.program_stats() if observer.probe else {}
        programs = {
            name: (
                programs_after[name][0] - programs_before[name][0],
                programs_after[name][1] - programs_before[name][1],
            )
            for name in programs_after
        }
        snapshot_ms = metrics_ms = 0.0
        if mode != "idle":
            begin = time.perf_counter()
            document = observer.snapshot()
            snapshot_ms = (time.perf_counter() - begin) * 1000
            from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

            from agent.observe.collector import ObserveCollector  # noqa: PLC0415

            registry = CollectorRegistry()
            registry.register(ObserveCollector(observer))
            begin = time.perf_counter()
            generate_latest(registry)
            metrics_ms = (time.perf_counter() - begin) * 1000
            threads = sum(len(pod.threads) for pod in observer.sampler.pods.values())
            source = document["source"]
        else:
            threads, source = 0, "none"
        rss, hwm = rss_kib()
        return {
            "mode": mode,
            "source": source,
            "threads": threads,
            "passes": passes,
            "layer_checks": checks,
            "layer_check_cpu_seconds": layer_check_seconds,
            "elapsed_seconds": elapsed,
            "cpu_seconds": cpu,
            "bpf_run_seconds": sum(time for time, _ in programs.values()) / 1e9,
            "bpf_runs": sum(count for _, count in programs.values()),
            "bpf_programs": programs,
            "snapshot_ms": snapshot_ms,
            "metrics_ms": metrics_ms,
            "rss_mib": rss / 1024,
            "peak_rss_mib": hwm / 1024,
        }

    try:
        return asyncio.run(measure())
    finally:
        observer.close()


def make_cgroups(count: int) -> tuple[list[Path], list[dict[str, Any]]]:
    """Create the pod and container cgroups; return every directory created, parents first."""
    created, pods = [], []
    for index in range(count):
        uid, container = str(uuid.uuid4()), uuid.uuid4().hex
        directory = CPU_ROOT / "kubepods" / "burstable" / f"pod{uid}" / container
        for path in reversed([directory, *directory.parents]):
            if path.is_relative_to(CPU_ROOT) and path != CPU_ROOT and not path.exists():
                path.mkdir()
                created.append(path)
        pods.append(pod_dict(uid, index, container))
    return created, pods


def remove_cgroups(created: list[Path]) -> None:
    """Remove the directories ``make_cgroups`` created, children first."""
    for path in reversed(created):
        for _ in range(50):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # the killed workers are still leaving


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--cgroups", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--interval-seconds", type=float, default=1.0)
    parser.add_argument("--wakeups-per-second", type=float, default=10.0, help="per thread")
    parser.add_argument(
        "--layer-check-interval-seconds",
        type=float,
        default=10.0,
        help="seconds between two layer checks (two thread counts each); 0: none",
    )
    parser.add_argument("--procfs-detail-interval-seconds", type=float)
    parser.add_argument("--procfs-listing-interval-seconds", type=float)
    parser.add_argument("--phase", choices=["idle", "procfs", "bpf"], help=argparse.SUPPRESS)
    parser.add_argument("--pods-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = run_phase(args.phase, args.pods_file, args)
        print(json.dumps(result))
        return 0
    if os.geteuid() != 0 or not CPU_ROOT.is_dir():
        print("error: run as root on a node with the cgroup v1 cpu controller", file=sys.stderr)
        return 2

    print(f"load average before: {os.getloadavg()}")
    created, pods = make_cgroups(args.cgroups)
    directories = [path for path in created if path.parent.name.startswith("pod")]
    workers: list[subprocess.Popen[bytes]] = []
    stats_before = BPF_STATS.read_text().strip()
    per_cgroup = args.threads // args.cgroups
    try:
        for directory in directories:
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(per_cgroup), str(1 / args.wakeups_per_second)]
            )
            (directory / "cgroup.procs").write_text(str(worker.pid))
            workers.append(worker)
        time.sleep(2.0)  # let every thread start
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(pods, handle)
        results = {}
        passed = [
            f"--{name.replace('_', '-')}={value}"
            for name, value in vars(args).items()
            if value is not None and name not in ("phase", "pods_file")
        ]
        for phase in ("idle", "procfs", "bpf"):
            BPF_STATS.write_text("1" if phase == "bpf" else stats_before)
            output = subprocess.run(
                [sys.executable, __file__, "--phase", phase, "--pods-file", handle.name, *passed],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            results[phase] = json.loads(output.strip().splitlines()[-1])
        os.unlink(handle.name)
    finally:
        BPF_STATS.write_text(stats_before)
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.wait()
        remove_cgroups(created)

    report(results, args)
    print(f"load average after: {os.getloadavg()}")
    return 0


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    idle = results["idle"]
    idle_percent = idle["cpu_seconds"] / idle["elapsed_seconds"] * 100
    print(
        f"{args.threads} threads in {args.cgroups} cgroups, {args.wakeups_per_second:g} wake-ups "
        f"per thread per second, sampled every {args.interval_seconds:g} s for "
        f"{args.seconds:g} s per phase, layer check every "
        f"{args.layer_check_interval_seconds:g} s"
    )
    print(f"idle baseline: {idle_percent:.3f}% of one core, {idle['rss_mib']:.0f} MiB resident")
    for phase in ("procfs", "bpf"):
        result = results[phase]
        percent = result["cpu_seconds"] / result["elapsed_seconds"] * 100 - idle_percent
        check = result["layer_check_cpu_seconds"] / result["elapsed_seconds"] * 100
        line = (
            f"{phase:6}: agent {percent:.3f}% of one core over the baseline, of which the layer "
            f"check {check:.3f}% ({result['threads']} threads seen, {result['passes']} passes, "
            f"{result['layer_checks']} layer checks, source "
            f"{result['source']}), {result['rss_mib']:.0f} MiB resident "
            f"(peak {result['peak_rss_mib']:.0f} MiB); one /observe snapshot "
            f"{result['snapshot_ms']:.1f} ms, one /metrics scrape {result['metrics_ms']:.1f} ms"
        )
        if phase == "bpf" and result["bpf_runs"]:
            kernel = result["bpf_run_seconds"] / result["elapsed_seconds"] * 100
            per_run = result["bpf_run_seconds"] / result["bpf_runs"] * 1e9
            line += (
                f"; BPF programs {kernel:.3f}% of one core in the kernel "
                f"({result['bpf_runs']} runs, {per_run:.0f} ns each)"
            )
        print(line)
        for name, (run_ns, runs) in sorted(result.get("bpf_programs", {}).items()):
            if runs:
                print(f"        {name}: {runs / result['elapsed_seconds']:.0f} runs/s, "
                      f"{run_ns / runs:.0f} ns each")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
