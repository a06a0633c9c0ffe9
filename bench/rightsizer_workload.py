"""A small multi-threaded workload with named threads, recorded by bench/rightsizer.py.

Usage: python bench/rightsizer_workload.py SCENARIO SECONDS

Each thread names itself with prctl(PR_SET_NAME) so /proc shows it as the kernel would
show a named pool thread. CPU work is SHA-256 over a 256 KiB buffer, which releases the
GIL, so threads really run in parallel. Scenarios and their ground truth:

- ``hot``: ``evloop`` hashes without pause (a hot thread); 4 ``helper-N`` threads wake
  every 50 ms for a short hash.
- ``burst``: 8 ``burst-N`` threads start a 150 ms hash burst together every second, more
  threads than this machine has cores (a burst pool).
- ``chain``: ``ping``, ``pong`` and ``relay`` pass a token around a ring thousands of
  times a second (a wake chain); a separate ``noise`` process keeps the CPUs busy so
  each wake-up waits in the run queue.
- ``pool``: 4 ``worker-N`` threads hash 20 ms and sleep 80 ms (a steady pool, nothing to
  find).
- ``unnamed``: a hot thread, 4 pool threads and 3 idle threads that keep the process name,
  as Go and most Python programs do; each prints ``ROLE TID`` so the benchmark knows the
  true classes.
"""

import ctypes
import hashlib
import queue
import sys
import threading
import time
from collections.abc import Callable

PR_SET_NAME = 15
BUFFER = bytes(256 * 1024)


def set_thread_name(name: str) -> None:
    """Set the calling thread's kernel name (at most 15 bytes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def hash_for(seconds: float) -> None:
    """Burn CPU for about ``seconds`` of wall time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hashlib.sha256(BUFFER).digest()


def start(name: str, body: Callable[..., None], *args: object) -> threading.Thread:
    """Start a daemon thread that names itself ``name`` and runs ``body(*args)``."""

    def run() -> None:
        set_thread_name(name)
        body(*args)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def spin(stop: threading.Event) -> None:
    while not stop.is_set():
        hash_for(0.05)


def wake_and_hash(stop: threading.Event, sleep_seconds: float, work_seconds: float) -> None:
    while not stop.is_set():
        time.sleep(sleep_seconds)
        hash_for(work_seconds)


def hot(stop: threading.Event) -> None:
    start("evloop", spin, stop)
    for i in range(4):
        start(f"helper-{i}", wake_and_hash, stop, 0.05, 0.002)


def burst(stop: threading.Event) -> None:
    barrier = threading.Barrier(8)

    def member() -> None:
        while not stop.is_set():
            barrier.wait()
            hash_for(0.15)
            time.sleep(max(0.0, 1.0 - time.monotonic() % 1.0))

    for i in range(8):
        start(f"burst-{i}", member)


def chain(stop: threading.Event) -> None:
    names = ("ping", "pong", "relay")
    queues: list[queue.SimpleQueue[int]] = [queue.SimpleQueue() for _ in names]

    def hop(index: int) -> None:
        inbox, outbox = queues[index], queues[(index + 1) % len(names)]
        while not stop.is_set():
            token = inbox.get()
            hashlib.sha256(b"x" * 64).digest()
            outbox.put(token)

    for index, name in enumerate(names):
        start(name, hop, index)
    queues[0].put(0)


def noise(stop: threading.Event) -> None:
    for i in range(2):
        start(f"noise-{i}", spin, stop)


def pool(stop: threading.Event) -> None:
    for i in range(4):
        start(f"worker-{i}", wake_and_hash, stop, 0.08, 0.02)


def unnamed(stop: threading.Event) -> None:
    """Every role at once, no thread names; each thread prints its role and tid."""
    roles: list[tuple[str, Callable[..., None], tuple[object, ...]]] = [
        ("hot", spin, (stop,)),
        *[("busy", wake_and_hash, (stop, 0.08, 0.02)) for _ in range(4)],
        *[("idle", wake_and_hash, (stop, 1.0, 0.0)) for _ in range(3)],
    ]
    ready = threading.Barrier(len(roles) + 1)
    lines: list[str] = []

    def report(role: str, body: Callable[..., None], args: tuple[object, ...]) -> None:
        lines.append(f"{role} {threading.get_native_id()}")
        ready.wait()
        body(*args)

    for role, body, args in roles:
        threading.Thread(target=report, args=(role, body, args), daemon=True).start()
    ready.wait()
    print("\n".join(lines), flush=True)


SCENARIOS = {
    "unnamed": unnamed,
    "hot": hot,
    "burst": burst,
    "chain": chain,
    "noise": noise,
    "pool": pool,
}


def main() -> int:
    scenario, seconds = sys.argv[1], float(sys.argv[2])
    if scenario != "unnamed":
        set_thread_name(f"main-{scenario}")
    stop = threading.Event()
    SCENARIOS[scenario](stop)
    print("ready", flush=True)
    time.sleep(seconds)
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
