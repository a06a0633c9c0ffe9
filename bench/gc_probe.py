"""Run a ``temper`` command with every garbage collection timed, for the CPU benchmarks.

Usage: ``python bench/gc_probe.py extender --port ...`` runs ``temper extender --port ...``
in this process. Every collection is recorded with its start (``time.monotonic()``), its
wall-clock duration and the CPU time of the collecting thread, because a pause on a busy
machine also contains time spent waiting for a CPU. SIGUSR1 runs a full collection, to time
what one would cost at that moment; those records are kept apart as "forced".

The records go as JSON to the file named by ``TEMPER_BENCH_GC_FILE`` when the process exits
(the services return from ``run_service`` after SIGTERM, so ``atexit`` runs). With
``TEMPER_BENCH_PROFILE_FILE`` set, the command also runs under cProfile with a CPU-time timer
and its statistics go to that file.
"""

import atexit
import cProfile
import gc
import json
import os
import runpy
import signal
import sys
import time
from types import FrameType
from typing import Any

records: dict[str, list[tuple[float, float, float, int]]] = {"automatic": [], "forced": []}
_started: list[tuple[float, float]] = []
_forcing: list[bool] = []


def _probe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append((time.monotonic(), time.thread_time()))
    elif _started:
        wall, cpu = _started.pop()
        kind = "forced" if _forcing else "automatic"
        records[kind].append(
            (wall, time.monotonic() - wall, time.thread_time() - cpu, info["generation"])
        )


def _force(_signum: int, _frame: FrameType | None) -> None:
    _forcing.append(True)
    gc.collect()
    _forcing.pop()


def _dump() -> None:
    with open(os.environ["TEMPER_BENCH_GC_FILE"], "w") as output:
        json.dump(records, output)


def main() -> None:
    gc.callbacks.append(_probe)
    signal.signal(signal.SIGUSR1, _force)
    atexit.register(_dump)
    profile_path = os.environ.get("TEMPER_BENCH_PROFILE_FILE")
    if profile_path:
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()

        def write_profile() -> None:
            profiler.disable()
            profiler.dump_stats(profile_path)

        atexit.register(write_profile)
    # Python put this script's directory first on sys.path, where bench/rightsizer.py would
    # hide the rightsizer package that temper.cli imports.
    script_directory = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry) != script_directory]
    sys.argv = ["temper", *sys.argv[1:]]
    runpy.run_module("temper.cli", run_name="__main__")


if __name__ == "__main__":
    main()
