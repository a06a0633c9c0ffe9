"""Trace why a waking task waits behind a running one: the kernel's wake-up preemption check.

Run as root beside a colocation run (Linux 6.18 fields, BTF and BCC needed):

    .venv/bin/python -m bench.colocation.wakeuptrace --seconds 120 --output trace.json

It attaches ``native/wakeup_trace.bpf.c`` and watches every wake-up of a task named
``--waker`` (the load generator) that the kernel handles on the CPU where a task named
``--runner`` (a batch filler) is running. For each one it records whether the check asked for
a reschedule and the EEVDF state of the two entities the check compared, and times the wait
until the waker runs. The summary counts the waits over ``--long-wait-us`` by cause:

- ``declined``: no reschedule was asked for.
- ``running_eligible_protected``: the running side was eligible and inside the protected
  part of its slice (EEVDF's run-to-parity), where the kernel keeps it running.
- ``waker_ineligible``: the waking side was not eligible.

Eligibility follows the kernel's ``vruntime_eligible()`` in ``kernel/sched/fair.c``
(Linux 6.18): an entity is eligible when its vruntime is at most the load-weighted average
vruntime of its cfs_rq, the running entity included.
"""

import argparse
import ctypes
import json
import logging
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.observe.btf import Btf, BtfError
from agent.observe.kheaders import KernelHeadersError, prepare_bcc_kernel_source

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "native" / "wakeup_trace.bpf.c"
NAME_LENGTH = 16
# TIF_NEED_RESCHED (bit 4) and TIF_NEED_RESCHED_LAZY (bit 5) in the generic thread_info flags
# of include/asm-generic/thread_info_tif.h, which x86 uses on Linux 6.18.
DEFAULT_NEED_RESCHED_MASK = 0x30
# The kernel's fixed-point shift of load.weight on 64-bit (scale_load_down).
WEIGHT_SHIFT = 10
_ENTITY = "5Q2I"
REPORT = struct.Struct("<Q" + "QQ" + _ENTITY + _ENTITY + "qQQII")

# BPF -D name: (struct, member path) read from the kernel's BTF.
_FIELDS = {
    "TASK_PID": ("task_struct", "pid"),
    "TASK_COMM": ("task_struct", "comm"),
    "TASK_FLAGS": ("task_struct", "thread_info.flags"),
    "TASK_CPU": ("task_struct", "thread_info.cpu"),
    "TASK_SE": ("task_struct", "se"),
    "SE_WEIGHT": ("sched_entity", "load.weight"),
    "SE_DEADLINE": ("sched_entity", "deadline"),
    "SE_VRUNTIME": ("sched_entity", "vruntime"),
    "SE_VLAG": ("sched_entity", "vlag"),
    "SE_SLICE": ("sched_entity", "slice"),
    "SE_ON_RQ": ("sched_entity", "on_rq"),
    "SE_DEPTH": ("sched_entity", "depth"),
    "SE_PARENT": ("sched_entity", "parent"),
    "SE_CFS_RQ": ("sched_entity", "cfs_rq"),
    "CFS_RQ_SUM_W_VRUNTIME": ("cfs_rq", "sum_w_vruntime"),
    "CFS_RQ_SUM_WEIGHT": ("cfs_rq", "sum_weight"),
    "CFS_RQ_ZERO_VRUNTIME": ("cfs_rq", "zero_vruntime"),
    "CFS_RQ_CURR": ("cfs_rq", "curr"),
}


SUMMARY_HELP = """\
The summary it prints (and writes to --output with every record):
  wakeups_onto_runner  wake-ups of the waker handled on the CPU running the runner
  declined_wakeups     of those, wake-ups where the check asked for no reschedule
  long_waits           wake-ups whose wait from the wake-up to the waker's next switch-in
                       exceeded long_wait_us, counted by cause (a wait can have several):
    declined                    the check asked for no reschedule
    running_eligible_protected  the running side of the comparison (for a Guaranteed
                                waker, the kubepods/burstable group) was eligible and
                                inside the protected part of its slice
    waker_ineligible            the waker's side was not eligible
  samples              the same counts over every Nth wake-up (--sample-every)
"""


class TraceError(Exception):
    """The trace cannot run on this kernel or with these arguments."""


@dataclass(frozen=True)
class Entity:
    """The fields of one sched_entity that the wake-up check reads."""

    weight: int
    deadline: int
    vruntime: int
    vlag: int
    slice_ns: int
    on_rq: bool
    depth: int


@dataclass(frozen=True)
class Wakeup:
    """One traced wake-up: the wait and the state right after the preemption check."""

    wait_ns: int
    flags: int
    running: Entity
    waker: Entity
    sum_w_vruntime: int
    sum_weight: int
    zero_vruntime: int
    running_is_curr: bool
    sampled: bool


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def field_offsets() -> dict[str, int]:
    """Read the byte offsets of the fields the program reads from the running kernel's BTF."""
    try:
        btf = Btf.from_file()
        return {name: btf.member_offset(*where) for name, where in _FIELDS.items()}
    except BtfError as error:
        raise TraceError(
            f"{error}: the trace reads the EEVDF fields of Linux 6.18 (cfs_rq.sum_w_vruntime, "
            "sched_entity.vlag); run it on such a kernel"
        ) from error


def parse_report(data: bytes) -> Wakeup:
    """Decode one perf-buffer record of ``struct report``."""
    values = REPORT.unpack_from(data)
    wait_ns, _at_ns, flags = values[:3]

    def entity(fields: tuple[int, ...]) -> Entity:
        weight, deadline, vruntime, vlag, slice_ns, on_rq, depth = fields
        return Entity(weight, deadline, vruntime, vlag, slice_ns, bool(on_rq), depth)

    running, waker = entity(values[3:10]), entity(values[10:17])
    sum_w_vruntime, sum_weight, zero_vruntime, running_is_curr, sampled = values[17:22]
    return Wakeup(
        wait_ns=wait_ns,
        flags=flags,
        running=running,
        waker=waker,
        sum_w_vruntime=sum_w_vruntime,
        sum_weight=sum_weight,
        zero_vruntime=zero_vruntime,
        running_is_curr=bool(running_is_curr),
        sampled=bool(sampled),
    )


def eligible(wakeup: Wakeup, entity: Entity) -> bool:
    """Return whether ``entity`` is eligible on the cfs_rq of the traced comparison."""
    average = wakeup.sum_w_vruntime
    load = wakeup.sum_weight
    running = wakeup.running
    if wakeup.running_is_curr and running.on_rq:
        weight = running.weight >> WEIGHT_SHIFT
        average += _signed(running.vruntime - wakeup.zero_vruntime) * weight
        load += weight
    return average >= _signed(entity.vruntime - wakeup.zero_vruntime) * load


def protected(entity: Entity) -> bool:
    """Return whether a running entity is inside the protected part of its slice."""
    return _signed(entity.vlag - entity.vruntime) > 0


def classify(wakeup: Wakeup, need_resched_mask: int) -> dict[str, Any]:
    """Return the facts of one wake-up that the summary counts."""
    return {
        "wait_us": wakeup.wait_ns / 1000,
        "declined": not wakeup.flags & need_resched_mask,
        "running_eligible": eligible(wakeup, wakeup.running),
        "running_protected": protected(wakeup.running),
        "waker_eligible": eligible(wakeup, wakeup.waker),
        "waker_earlier_deadline": _signed(wakeup.waker.deadline - wakeup.running.deadline) < 0,
        "running_weight": wakeup.running.weight >> WEIGHT_SHIFT,
        "waker_weight": wakeup.waker.weight >> WEIGHT_SHIFT,
        "running_slice_us": wakeup.running.slice_ns / 1000,
        "waker_slice_us": wakeup.waker.slice_ns / 1000,
        "depth": wakeup.running.depth,
        "sampled": wakeup.sampled,
    }


def summarize(
    records: list[dict[str, Any]], totals: Mapping[str, int], long_wait_us: float
) -> dict[str, Any]:
    """Count the long waits by cause, and the sampled wake-ups for comparison."""
    long_waits = [record for record in records if record["wait_us"] > long_wait_us]
    samples = [record for record in records if record["sampled"]]

    def causes(group: list[dict[str, Any]]) -> dict[str, int]:
        return {
            "count": len(group),
            "declined": sum(record["declined"] for record in group),
            "running_eligible_protected": sum(
                record["running_eligible"] and record["running_protected"] for record in group
            ),
            "waker_ineligible": sum(not record["waker_eligible"] for record in group),
        }

    return {
        "wakeups_onto_runner": totals["wakeups"],
        "declined_wakeups": totals["declined"],
        "long_wait_us": long_wait_us,
        "long_waits": causes(long_waits),
        "samples": causes(samples),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.colocation.wakeuptrace",
        description="Trace wake-ups of one task name onto CPUs running another and explain "
        "the waits with the kernel's EEVDF state. Runs as root. Start it first, with "
        "--seconds longer than the colocation run beside it.",
        epilog=SUMMARY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    parser.add_argument(
        "--waker", default="loadgen", help="name (comm) of the waking task (loadgen)"
    )
    parser.add_argument(
        "--runner", default="filler", help="name (comm) of the running task (filler)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="trace duration, s (60)")
    parser.add_argument(
        "--long-wait-us", type=float, default=1000.0, help="waits counted as long, us (1000)"
    )
    parser.add_argument(
        "--sample-every",
        type=int,
        default=500,
        help="also record every Nth wake-up, to compare with the long waits (500)",
    )
    parser.add_argument(
        "--need-resched-mask",
        type=lambda text: int(text, 0),
        default=DEFAULT_NEED_RESCHED_MASK,
        help="thread_info flag bits that mean a reschedule was asked for "
        f"({DEFAULT_NEED_RESCHED_MASK:#x}: the generic TIF bits of Linux 6.18 on x86)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/tmp/temper-wakeuptrace"),
        help="where kernel headers for BCC are unpacked when the kernel has none installed "
        "(/var/tmp/temper-wakeuptrace)",
    )
    parser.add_argument("--output", type=Path, help="JSON file for the summary and records")
    args = parser.parse_args(argv)

    for name in ("waker", "runner"):
        value = getattr(args, name)
        if not value or len(value.encode()) >= NAME_LENGTH:
            parser.error(f"--{name} {value!r}: a task name has 1 to {NAME_LENGTH - 1} bytes")
    if args.seconds <= 0 or args.sample_every < 1 or args.long_wait_us <= 0:
        parser.error("--seconds, --sample-every and --long-wait-us must be positive")
    return args


def trace(args: argparse.Namespace) -> dict[str, Any]:
    """Attach the program, collect for ``args.seconds`` and return the summary and records."""
    offsets = field_offsets()
    try:
        prepare_bcc_kernel_source(args.state_dir, None)
    except KernelHeadersError as error:
        raise TraceError(f"BCC needs kernel headers: {error}") from error
    from bcc import BPF  # noqa: PLC0415 - needs BCC_KERNEL_SOURCE set first

    defines = {
        **offsets,
        "LONG_WAIT_NS": int(args.long_wait_us * 1000),
        "SAMPLE_EVERY": args.sample_every,
        "NEED_RESCHED_MASK": args.need_resched_mask,
    }
    program = BPF(
        src_file=str(SOURCE).encode(),
        cflags=[f"-D{name}={value}" for name, value in defines.items()],
    )
    names = program[b"names"]
    for index, name in enumerate((args.waker, args.runner)):
        entry = names.Leaf()
        ctypes.memmove(ctypes.addressof(entry), name.encode(), len(name.encode()))
        names[ctypes.c_int(index)] = entry
    records: list[dict[str, Any]] = []

    def handle(_cpu: int, data: int, size: int) -> None:
        raw = ctypes.string_at(data, size)
        records.append(classify(parse_report(raw), args.need_resched_mask))

    program[b"reports"].open_perf_buffer(handle, page_cnt=256)
    log.info(
        "tracing wake-ups of %s onto CPUs running %s for %.0f s",
        args.waker,
        args.runner,
        args.seconds,
    )
    end = time.monotonic() + args.seconds
    try:
        while time.monotonic() < end:
            program.perf_buffer_poll(timeout=200)
        totals_map = program[b"totals"]
        totals = {
            "wakeups": totals_map[ctypes.c_int(0)].value,
            "declined": totals_map[ctypes.c_int(1)].value,
        }
    finally:
        program.cleanup()
    return {
        "summary": summarize(records, totals, args.long_wait_us),
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the trace and print its summary; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        result = trace(args)
    except TraceError as error:
        print(f"wakeuptrace: {error}", file=sys.stderr)
        return 1
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
