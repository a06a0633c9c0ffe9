"""Command line of the colocation benchmark: set up, calibrate, run the ladder, report."""

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from agent.cgroups import CgroupLayout, CgroupVersion, detect_cgroup_version
from agent.podinfo import QosClass
from agent.settings import CgroupDriver
from bench.colocation.arms import (
    ARM_NAMES,
    SCHED_EXT_STATE,
    Arm,
    LayeredArm,
    PinnedArm,
    StockArm,
    StockKernelModeArm,
)
from bench.colocation.campaign import Calibration, calibrate, run_ladder
from bench.colocation.cgroupfs import node_cpus
from bench.colocation.machine import cpu_coupling, describe_machine, load_average
from bench.colocation.processes import (
    BenchmarkError,
    build_native_tools,
    raise_harness_priority,
    restore_harness_priority,
)
from bench.colocation.report import (
    aggregate,
    markdown_table,
    noise_summary,
    plot,
    plot_title,
    rows_as_dicts,
    rows_from_cell_summaries,
    rows_from_dicts,
)
from bench.colocation.runner import (
    CELLS_FILE,
    Testbed,
    Window,
    Workload,
    load_cells,
    save_cell,
)
from temper.logs import configure

log = logging.getLogger("bench.colocation")

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Seconds a cell costs beyond its warm-up and window: process start, drain, cgroup removal.
CELL_OVERHEAD_SECONDS = 1.5
# Targets of the product claim: p99 growth and the batch work kept, against the stock arm.
P99_GROWTH_TARGET = 1.5
BATCH_THROUGHPUT_TARGET = 0.8


@dataclass(frozen=True)
class ModeDefaults:
    """Defaults that differ between a run on the host and one in the emulated VM."""

    ladder: str
    repetitions: int
    budget_seconds: float
    calibration_start_rate: float
    target_memcached_cores: float


# On the host the load generator, a critical pod beside memcached, needs about 1.5 times
# memcached's CPU. At 0.2 memcached cores the two need about half a core with no fillers. An
# arm that gives them that kept 0.82 of the stock arm's batch work with 8 fillers, and 0.77 and
# 0.63 at 0.26 and 0.35 memcached cores (docs/benchmarks.md, colocation).
HOST_DEFAULTS = ModeDefaults("0,1,2,4,8", 4, 1200.0, 4000.0, 0.2)
# Under QEMU's emulator memcached costs about a millisecond of CPU per request. On the VM's
# two CPUs the agent fences the critical pods into one CPU, and the load generator needs
# about as much CPU as memcached. At 0.5 memcached cores that CPU would be full before any
# filler starts, so the VM aims at 0.25.
VM_DEFAULTS = ModeDefaults("0,2,4", 3, 2400.0, 400.0, 0.25)
# Seconds allowed for booting the VM and writing the results on top of the guest's budget.
VM_EXTRA_SECONDS = 900.0
# Boots after a guest kernel crash, each running only the cells still missing.
VM_CRASH_RETRIES = 5


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.colocation",
        description=(
            "Measure memcached's latency percentiles beside a ladder of CPU-bound batch "
            "pods, under the stock scheduler and under Temper's enforcement. Runs as root."
        ),
    )
    parser.add_argument(
        "--arms",
        help=(
            "comma-separated arms out of stock, stockmode, layered, pinned (default: "
            "stock,stockmode on the host; stock,stockmode,layered with --vm). pinned is a "
            "reference on cgroup v2: the critical pods on CPUs of their own through cpusets"
        ),
    )
    parser.add_argument("--ladder", help="comma-separated filler counts (default: 0,1,2,4,8)")
    parser.add_argument("--repetitions", type=int, help="repetitions per arm and step (4)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="warm-up per cell, s")
    parser.add_argument("--measure-seconds", type=float, default=8.0, help="window per cell, s")
    parser.add_argument(
        "--rate", type=float, help="request rate per second (calibrated when not given)"
    )
    parser.add_argument(
        "--target-memcached-cores",
        type=float,
        help=(
            "CPU the calibrated rate makes memcached use with no fillers, in cores (0.2 on "
            "the host, 0.25 in the VM)"
        ),
    )
    parser.add_argument(
        "--calibration-start-rate",
        type=float,
        help="first probe rate, in requests per second (4000 on the host, 400 in the VM)",
    )
    parser.add_argument(
        "--calibration-max-rate", type=float, default=60000.0, help="highest probe rate, req/s"
    )
    parser.add_argument("--connections", type=int, default=8, help="TCP connections to memcached")
    parser.add_argument("--memcached-threads", type=int, default=2, help="memcached -t value")
    parser.add_argument(
        "--memcached-cpu-millicores",
        type=int,
        default=1000,
        help="CPU request and limit of the Guaranteed memcached pod, in millicores",
    )
    parser.add_argument(
        "--critical-qos",
        choices=[QosClass.GUARANTEED.value, QosClass.BURSTABLE.value],
        default=QosClass.GUARANTEED.value,
        help=(
            "QoS class of the memcached and load generator pods: Guaranteed (request = limit, "
            "under kubepods/) or Burstable (request only, under kubepods/burstable/)"
        ),
    )
    parser.add_argument(
        "--filler-request-millicores",
        type=int,
        default=500,
        help="CPU request of each Burstable background-tier filler pod, in millicores",
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        help="no cell starts after this many seconds (1200 on the host, 2400 in the VM)",
    )
    parser.add_argument("--output-dir", type=Path, help="results directory (a new temporary one)")
    parser.add_argument("--plot", type=Path, help="PNG path of the plot (OUTPUT_DIR/p99.png)")
    parser.add_argument(
        "--vm", action="store_true", help="run inside the sched_ext VM of scripts/vm-rig.sh"
    )
    parser.add_argument(
        "--vm-tcg-threads",
        choices=("single", "multi"),
        default="multi",
        help=(
            "QEMU's emulator threads with --vm: multi, one host thread per vCPU (default; a "
            "guest kernel crash is followed by a new boot for the missing cells), or single, "
            "one host thread for both vCPUs, which slows each vCPU while the other is busy"
        ),
    )
    parser.add_argument(
        "--render",
        type=Path,
        help="only print the table and draw the plot again from an earlier run's results.json",
    )
    parser.add_argument("--title", help="title of the plot drawn by --render")
    parser.add_argument("--inside-vm", action="store_true", help=argparse.SUPPRESS)
    # Inside the VM after a guest crash: keep the cells of OUTPUT_DIR and run only the rest.
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kernel-config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--native-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--scx-layered-path",
        type=Path,
        default=Path("/usr/bin/scx_layered"),
        help="scx_layered binary of the layered arm (the rig's own with --vm)",
    )
    parser.add_argument(
        "--attach-timeout-seconds",
        type=float,
        default=240.0,
        help="how long the layered arm waits for scx_layered to attach, in seconds",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    args = parser.parse_args(argv)
    defaults = VM_DEFAULTS if (args.vm or args.inside_vm) else HOST_DEFAULTS
    args.ladder = args.ladder or defaults.ladder
    args.repetitions = args.repetitions or defaults.repetitions
    args.budget_seconds = args.budget_seconds or defaults.budget_seconds
    args.calibration_start_rate = args.calibration_start_rate or defaults.calibration_start_rate
    args.target_memcached_cores = args.target_memcached_cores or defaults.target_memcached_cores
    if args.arms is None:
        layered = args.vm or args.inside_vm or SCHED_EXT_STATE.exists()
        args.arms = "stock,stockmode,layered" if layered else "stock,stockmode"
    return args


def _parse_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise BenchmarkError(f"--{what} is empty: give a comma-separated list")
    return items


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def build_arms(names: list[str], layout: CgroupLayout, state_dir: Path, args: Any) -> list[Arm]:
    """Build the arms by name, or raise BenchmarkError when one cannot run on this kernel."""
    arms: list[Arm] = []
    for name in names:
        if name == "stock":
            arms.append(StockArm())
        elif name == "stockmode":
            base = layout.root / "cpu" if layout.version is CgroupVersion.V1 else layout.root
            if not (base / "kubepods" / "cpu.idle").exists() and not (base / "cpu.idle").exists():
                raise BenchmarkError(
                    f"the stockmode arm needs cgroup cpu.idle (Linux 5.15+), missing under {base}"
                )
            arms.append(StockKernelModeArm(layout, state_dir))
        elif name == "layered":
            arms.append(
                LayeredArm(layout, args.scx_layered_path, state_dir, args.attach_timeout_seconds)
            )
        elif name == "pinned":
            arms.append(PinnedArm(layout))
        else:
            raise BenchmarkError(f"unknown arm {name!r}: choose from {', '.join(ARM_NAMES)}")
    return arms


def target_verdicts(rows: list[Any]) -> list[str]:
    """Compare each arm's worst p99 growth and lowest batch share with the targets."""
    lines = []
    for arm in dict.fromkeys(r.arm for r in rows):
        mine = [r for r in rows if r.arm == arm and r.fillers > 0]
        growth = [r.p99_growth for r in mine if r.p99_growth]
        batch = [
            r.filler_throughput_ratio_to_stock
            for r in mine
            if r.filler_throughput_ratio_to_stock is not None
        ]
        if not growth:
            continue
        if arm == "stock":
            lines.append(f"stock (the reference): worst p99 growth {max(growth):.2f}x")
            continue
        worst = max(growth)
        line = (
            f"{arm}: worst p99 growth {worst:.2f}x (target <= {P99_GROWTH_TARGET}x: "
            f"{_verdict(worst <= P99_GROWTH_TARGET)})"
        )
        if batch:
            lowest = min(batch)
            line += (
                f", lowest batch throughput {lowest:.2f} of stock "
                f"(target >= {BATCH_THROUGHPUT_TARGET}: "
                f"{_verdict(lowest >= BATCH_THROUGHPUT_TARGET)})"
            )
        lines.append(line)
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def run_here(args: argparse.Namespace, output_dir: Path, plot_path: Path) -> dict[str, Any]:
    """Run the benchmark on this kernel, write the results and return the record."""
    version = detect_cgroup_version(CGROUP_ROOT)
    layout = CgroupLayout(CGROUP_ROOT, version, CgroupDriver.CGROUPFS)
    if args.inside_vm and args.kernel_config is not None:
        from bench.colocation.vm import install_kernel_config  # noqa: PLC0415 - guest only

        install_kernel_config(args.kernel_config)
    machine = describe_machine()
    if args.inside_vm:
        # Under emulation a busy vCPU may slow the other one down: record by how much.
        machine["tcg_threads"] = args.vm_tcg_threads
        machine["cpu_coupling"] = cpu_coupling()
    ladder = [int(step) for step in _parse_list(args.ladder, "ladder")]
    names = _parse_list(args.arms, "arms")
    window = Window(args.warmup_seconds, args.measure_seconds)
    workload = Workload(
        connections=args.connections,
        memcached_threads=args.memcached_threads,
        memcached_cpu_millicores=args.memcached_cpu_millicores,
        critical_qos=QosClass(args.critical_qos),
        filler_request_millicores=args.filler_request_millicores,
    )
    cell_seconds = window.warmup_seconds + window.measure_seconds + CELL_OVERHEAD_SECONDS
    estimate = len(ladder) * args.repetitions * len(names) * cell_seconds
    log.info(
        "starting",
        extra={"arms": names, "ladder": ladder, "repetitions": args.repetitions,
               "estimated_seconds": round(estimate), "output_dir": str(output_dir)},
    )  # fmt: skip
    done = load_cells(output_dir) if args.resume else []
    if done:
        log.info("resuming", extra={"cells_done": len(done), "output_dir": str(output_dir)})
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="temper-colocation-scratch-"))
    testbed = Testbed(layout, node_cpus(), scratch, workload)
    arms: list[Arm] = []
    realtime = raise_harness_priority()
    try:
        testbed.start(args.native_dir)
        arms = build_arms(names, layout, scratch / "state", args)
        (scratch / "state").mkdir(exist_ok=True)
        if args.rate is None:
            probe = Window(1.0, 3.0)
            calibration = calibrate(
                testbed,
                StockArm(),
                target_cores=args.target_memcached_cores,
                start_rate=args.calibration_start_rate,
                max_rate=args.calibration_max_rate,
                window=probe,
            )
        else:
            calibration = Calibration(
                rate=args.rate,
                target_memcached_cores=args.target_memcached_cores,
                note="rate given on the command line",
            )
        log.info("request rate chosen", extra={"rate": calibration.rate})
        load_before_ladder = load_average()
        deadline = started + args.budget_seconds - cell_seconds
        campaign = run_ladder(
            testbed,
            arms,
            ladder=ladder,
            repetitions=args.repetitions,
            rate=calibration.rate,
            window=window,
            deadline=deadline,
            on_cell=lambda cell: save_cell(output_dir, cell),
            done=done,
        )
    finally:
        testbed_facts = testbed.describe()
        for arm in arms:
            arm.close()
        testbed.close()
        shutil.rmtree(scratch, ignore_errors=True)
        if realtime:
            restore_harness_priority()
    rows = aggregate(campaign.cells)
    table = markdown_table(rows)
    verdicts = target_verdicts(rows)
    record = {
        "command": shlex.join([sys.executable, "-m", "bench.colocation", *sys.argv[1:]]),
        "emulated": bool(args.inside_vm),
        "machine": machine,
        "load_average_before_ladder": load_before_ladder,
        "load_average_after": load_average(),
        "seconds": round(time.monotonic() - started, 1),
        "arms": names,
        "ladder": ladder,
        "repetitions": args.repetitions,
        "window": {
            "warmup_seconds": window.warmup_seconds,
            "measure_seconds": window.measure_seconds,
        },
        "workload": workload.__dict__,
        "cgroup_version": version.value,
        "testbed": testbed_facts,
        "max_window_edge_late_ms": max(
            (round(c.window_edge_late_ms, 1) for c in campaign.cells), default=None
        ),
        "calibration": calibration.as_dict(),
        "cut_short": campaign.cut_short,
        "noise_p99_spread_median": noise_summary(rows),
        "verdicts": verdicts,
        "rows": rows_as_dicts(rows),
        "cells": [cell.summary() for cell in campaign.cells],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (output_dir / "table.md").write_text(table)
    if not args.inside_vm:
        # The host draws the VM's plot: matplotlib is slow to start under emulation.
        plot(rows, plot_path, plot_title(record))
    return record


def print_record(record: dict[str, Any], table: str, plot_path: Path, output_dir: Path) -> None:
    machine = record["machine"]
    print()
    print(f"command: {record['command']}")
    print(
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, {machine['date_utc']}"
        + (" — EMULATED (QEMU TCG guest): compare arms only within this run" if record["emulated"]
           else "")
    )  # fmt: skip
    if record.get("guest_crashes"):
        print(
            f"guest kernel crashes: {record['guest_crashes']}; each was followed by a new boot "
            "that ran the missing cells (machine and load average are the last boot's)"
        )
    if "cpu_coupling" in machine:
        print(
            f"emulator: {machine['tcg_threads']}-threaded TCG; CPU 0 ran a busy loop at "
            f"{machine['cpu_coupling']} of its speed while CPU 1 was busy"
        )
    print(
        f"load average before: {machine['load_average_before']}, before the ladder: "
        f"{record['load_average_before_ladder']}, after: {record['load_average_after']}"
    )
    calibration = record["calibration"]
    print(
        f"request rate: {calibration['rate']:.0f}/s (target memcached CPU "
        f"{calibration['target_memcached_cores']} cores) {calibration['note']}"
    )
    print(f"noise (median relative spread of per-repetition p99): "
          f"{record['noise_p99_spread_median']}")  # fmt: skip
    if record["cut_short"]:
        print("the time budget cut the ladder short: some cells are missing")
    print()
    print(table)
    for verdict in record["verdicts"]:
        print(verdict)
    if plot_path.exists():
        print(f"\nplot: {plot_path}")
    print(f"results: {output_dir / 'results.json'}")


def resume_arguments(guest_dir: Path) -> list[str]:
    """Guest options that continue a run from the cells an earlier boot kept in ``guest_dir``.

    The rate of those cells is kept, so the new boot does not calibrate again. Without any
    finished cell the new boot starts afresh.
    """
    cells = guest_dir / CELLS_FILE
    lines = cells.read_text().splitlines() if cells.exists() else []
    first = next((json.loads(line) for line in lines if line.strip()), None)
    if first is None:
        return []
    return ["--resume", "--rate", f"{first['rate']:g}"]


def run_vm(args: argparse.Namespace, argv: list[str], output_dir: Path, plot_path: Path) -> int:
    """Boot the sched_ext VM, run the benchmark inside it, copy the plot, print the table."""
    from bench.colocation.vm import (  # noqa: PLC0415 - imports tests.vm
        guest_crashed,
        load_rig,
        run_in_vm,
    )

    rig = load_rig()
    native_dir = output_dir / "native"
    build_native_tools(native_dir)
    passthrough = [a for a in argv if a != "--vm"]
    for option in ("--output-dir", "--plot"):
        if option in passthrough:
            index = passthrough.index(option)
            del passthrough[index : index + 2]
    started = time.monotonic()
    extra: list[str] = []
    crashes = 0
    while True:
        remaining = max(60.0, args.budget_seconds - (time.monotonic() - started))
        guest_arguments = [
            *passthrough,
            "--ladder", args.ladder,
            "--repetitions", str(args.repetitions),
            "--budget-seconds", str(remaining),
            "--arms", args.arms,
            *extra,
        ]  # fmt: skip
        try:
            guest_dir = run_in_vm(
                rig,
                output_dir,
                native_dir,
                guest_arguments,
                remaining + VM_EXTRA_SECONDS,
                tcg_threads=args.vm_tcg_threads,
            )
            break
        except BenchmarkError as error:
            console = output_dir / "console.log"
            if crashes >= VM_CRASH_RETRIES or not guest_crashed(console):
                raise
            crashes += 1
            console.rename(output_dir / f"console-crash-{crashes}.log")
            extra = resume_arguments(output_dir / "guest")
            log.warning(
                "the guest kernel crashed; booting again to run the remaining cells",
                extra={"crash": crashes, "resume": extra, "error": str(error).splitlines()[0]},
            )
    record = json.loads((guest_dir / "results.json").read_text())
    if crashes:
        record["guest_crashes"] = crashes
        (guest_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(rows_from_dicts(record["rows"]), plot_path, plot_title(record))
    print_record(record, (guest_dir / "table.md").read_text(), plot_path, guest_dir)
    return 0


def render(results_path: Path, plot_path: Path, title: str | None) -> int:
    """Print the table and draw the plot again from a results.json, with ratios recomputed.

    From a cells.jsonl (a run that stopped early) the table has no pooled percentiles, only
    the per-repetition ones.
    """
    if results_path.suffix == ".jsonl":
        lines = results_path.read_text().splitlines()
        rows = rows_from_cell_summaries([json.loads(line) for line in lines if line.strip()])
        plot(
            rows,
            plot_path,
            title or f"per-repetition p99 of a run that stopped early ({results_path.name})",
        )
        print(markdown_table(rows))
        for verdict in target_verdicts(rows):
            print(verdict)
        print(f"plot: {plot_path}")
        return 0
    record = json.loads(results_path.read_text())
    rows = rows_from_dicts(record["rows"])
    record["verdicts"] = target_verdicts(rows)
    record["noise_p99_spread_median"] = noise_summary(rows)
    plot(rows, plot_path, title or plot_title(record))
    print_record(record, markdown_table(rows), plot_path, results_path.parent)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.colocation``."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_arguments(argv)
    configure(args.log_level)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_on_signal)
    if args.render is not None:
        return render(args.render, args.plot or args.render.parent / "p99.png", args.title)
    if os.geteuid() != 0:
        print("error: the benchmark creates cgroups and must run as root", file=sys.stderr)
        return 2
    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="temper-colocation-"))
    plot_path = args.plot or output_dir / "p99.png"
    try:
        if args.vm:
            return run_vm(args, argv, output_dir, plot_path)
        record = run_here(args, output_dir, plot_path)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_record(record, (output_dir / "table.md").read_text(), plot_path, output_dir)
    return 0
