"""Child process that compiles and attaches the BPF programs with BCC, then hands them over.

BCC links LLVM and clang: importing it and compiling took a process from 78 MiB to 165 MiB of
resident memory (measured once, after malloc_trim), and that memory is not returned. The
agent therefore compiles in this short-lived child, which sends the map, program and
tracepoint-attachment file descriptors back over a Unix socket (SCM_RIGHTS) and exits without
detaching anything. The programs stay attached for as long as the agent keeps the attachment
descriptors open.

Before compiling, it reads the offsets of the task fields the programs use from the kernel's
BTF (:mod:`agent.observe.btf`), which takes about a second, also spent here.

Run as ``python -m agent.observe.bpfload --socket-fd N --source FILE [--btf FILE]
-D NAME=VALUE ...``.
"""

import argparse
import contextlib
import json
import os
import socket
import sys
import traceback
from pathlib import Path

from agent.observe.btf import VMLINUX_BTF, task_field_offsets

# Map and program names of bpf/sched_observe.bpf.c, in the order the descriptors are sent.
MAP_NAMES = (
    "tid_slot",
    "thread_stats",
    "group_hist",
    "group_cpu_ns",
    "cpu_state",
    "cpu_sibling",
    "cpu_protected",
    "counters",
)


def _send(channel: socket.socket, header: dict[str, object], fds: list[int]) -> None:
    payload = json.dumps(header).encode()
    socket.send_fds(channel, [payload], fds)


def main(argv: list[str] | None = None) -> int:
    """Compile, attach, send the descriptors, and leave without BCC's clean-up."""
    parser = argparse.ArgumentParser(prog="agent.observe.bpfload")
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--btf", type=Path, default=VMLINUX_BTF)
    parser.add_argument("-D", dest="defines", action="append", default=[])
    args = parser.parse_args(argv)
    channel = socket.socket(fileno=args.socket_fd)
    try:
        from bcc import BPF  # noqa: PLC0415 - only this child may load BCC

        cflags = [f"-D{define}" for define in args.defines]
        # The offsets of the task fields the programs read, from the running kernel's BTF.
        cflags += [f"-D{name}={offset}" for name, offset in task_field_offsets(args.btf).items()]
        program = BPF(src_file=args.source.encode(), cflags=cflags)
        fds = [program[name].map_fd for name in MAP_NAMES]
        tracepoints = {name.decode(): fd for name, fd in program.tracepoint_fds.items()}
        tracepoints |= {name.decode(): fd for name, fd in program.raw_tracepoint_fds.items()}
        programs = {name.decode(): function.fd for name, function in program.funcs.items()}
        header = {
            "ok": True,
            "maps": list(MAP_NAMES),
            "tracepoints": list(tracepoints),
            "programs": list(programs),
        }
        _send(channel, header, fds + list(tracepoints.values()) + list(programs.values()))
    except Exception as error:  # report anything BCC raises to the parent, then fail
        message = f"{type(error).__name__}: {error}"
        traceback.print_exc()
        with contextlib.suppress(OSError):
            _send(channel, {"ok": False, "error": message}, [])
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit skips BCC's atexit clean-up, which would disable the shared perf events.
    os._exit(0)


if __name__ == "__main__":
    main()
