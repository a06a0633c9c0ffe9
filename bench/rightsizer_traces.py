"""Seeded synthetic per-thread traces with ground-truth labels, for bench/rightsizer.py.

Each trace is one container: per-thread CPU use, run-queue delay, timeslices and context
switches per 10-second interval (what the collector stores), plus the container's CPU use
per second (what "seconds above the request" is scored on). The per-second series keeps
the mean of each interval, so both views agree.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rightsizer.history import ContainerHistory, ContainerKey, ThreadInfo
from rightsizer.names import name_group

INTERVAL_SECONDS = 10.0
DAY_SECONDS = 86400.0


@dataclass
class ThreadTrace:
    """One generated thread: per-interval CPU use and wait in cores, and its behaviour."""

    comm: str
    usage: np.ndarray
    wait: np.ndarray
    slice_ms: float  # CPU time per timeslice
    voluntary_share: float = 0.9  # share of switches that are voluntary
    label: str = "other"  # ground truth: hot, pool, chain, busy, idle, other


@dataclass
class Trace:
    """A generated or recorded container trace with its labels."""

    name: str
    family: str
    history: ContainerHistory
    used_per_second: np.ndarray
    labels: dict[int, str] = field(default_factory=dict)  # tid -> ground-truth label
    step_seconds: float | None = None
    step_level_cores: float | None = None  # P90 of demand after the step

    def tids(self, label: str) -> set[int]:
        """Return the tids with ground-truth ``label``."""
        return {tid for tid, value in self.labels.items() if value == label}


def _ar1(rng: np.random.Generator, n: int, coefficient: float, sigma: float) -> np.ndarray:
    """Return an AR(1) series with stationary standard deviation ``sigma``."""
    noise = rng.normal(0.0, sigma * np.sqrt(1 - coefficient**2), n)
    series = np.empty(n)
    series[0] = rng.normal(0.0, sigma)
    for i in range(1, n):
        series[i] = coefficient * series[i - 1] + noise[i]
    return series


def _level(rng: np.random.Generator, base: np.ndarray, cv: float) -> np.ndarray:
    """Multiply a base level by autocorrelated noise with coefficient of variation ``cv``."""
    level: np.ndarray = np.clip(base * (1 + _ar1(rng, len(base), 0.8, cv)), 0.0, None)
    return level


def build_trace(
    name: str,
    family: str,
    threads: list[ThreadTrace],
    rng: np.random.Generator,
    burstiness: float,
    *,
    step_seconds: float | None = None,
) -> Trace:
    """Assemble thread traces into a container history and a per-second usage series.

    ``burstiness`` is the shape of the gamma distribution that spreads each interval's CPU
    over its 10 seconds: 50 is smooth, 0.3 puts most of it into one or two seconds.
    """
    count = len(threads[0].usage)
    usage = np.stack([np.clip(t.usage, 0, 1) for t in threads], axis=1)
    wait = np.stack([np.clip(t.wait, 0, 1) for t in threads], axis=1)
    wait = np.minimum(wait, 1 - usage)
    cpu_seconds = usage * INTERVAL_SECONDS
    slice_seconds = np.array([t.slice_ms / 1000 for t in threads])
    slices = np.ceil(cpu_seconds / slice_seconds)
    voluntary = np.round(slices * np.array([t.voluntary_share for t in threads]))
    history = ContainerHistory(
        key=ContainerKey("bench", name, f"uid-{name}", "app"),
        end_seconds=(np.arange(count, dtype=np.float64) + 1) * INTERVAL_SECONDS,
        seconds=np.full(count, INTERVAL_SECONDS),
        threads=tuple(
            ThreadInfo(tgid=1000, tid=1000 + i, comm=t.comm, group=name_group(t.comm))
            for i, t in enumerate(threads)
        ),
        cpu_seconds=cpu_seconds,
        runq_delay_seconds=wait * INTERVAL_SECONDS,
        timeslices=slices,
        voluntary_switches=voluntary,
        nonvoluntary_switches=slices - voluntary,
    )
    per_interval = np.zeros((count, int(INTERVAL_SECONDS)))
    for column in range(usage.shape[1]):
        per_interval += _spread(rng, usage[:, column], burstiness)
    per_second = per_interval.reshape(-1)
    trace = Trace(
        name=name,
        family=family,
        history=history,
        used_per_second=per_second,
        labels={1000 + i: t.label for i, t in enumerate(threads)},
        step_seconds=step_seconds,
    )
    if step_seconds is not None:
        after = history.end_seconds > step_seconds + 600
        trace.step_level_cores = float(np.percentile(history.demand[after].sum(axis=1), 90))
    return trace


def _spread(rng: np.random.Generator, usage: np.ndarray, burstiness: float) -> np.ndarray:
    """Spread each interval's CPU use of one thread over its seconds, keeping the mean.

    A thread cannot use more than one core in any second: threads above half a core vary
    their idle time instead of their CPU time, so they stay at or below 1.
    """
    spread = rng.gamma(burstiness, 1.0, (len(usage), int(INTERVAL_SECONDS)))
    spread /= spread.mean(axis=1, keepdims=True)
    column = usage[:, None]
    per_second = np.where(column > 0.5, 1 - (1 - column) * spread, column * spread)
    return np.clip(per_second, 0.0, 1.0)


def _light(rng: np.random.Generator, n: int, comm: str, cores: float) -> ThreadTrace:
    return ThreadTrace(
        comm, _level(rng, np.full(n, cores), 0.5), np.full(n, cores * 0.03), 2.0, label="idle"
    )


def _pool(
    rng: np.random.Generator, base: np.ndarray, size: int, comm: str, *, cv: float, wait: float
) -> list[ThreadTrace]:
    shares = rng.dirichlet(np.full(size, 20.0))
    total = _level(rng, base, cv)
    return [
        ThreadTrace(
            comm.format(i),
            total * share * rng.uniform(0.9, 1.1, len(base)),
            total * share * wait,
            rng.uniform(1.0, 4.0),
            label="busy",
        )
        for i, share in enumerate(shares)
    ]


def steady(rng: np.random.Generator, n: int) -> list[ThreadTrace]:
    """Return a pool of 8 workers at a constant level with noise, plus light helpers."""
    base = np.full(n, rng.uniform(0.6, 1.5))
    return [
        *_pool(rng, base, 8, "worker-{}", cv=0.12, wait=0.03),
        _light(rng, n, "main", 0.005),
        _light(rng, n, "gc-0", 0.01),
    ]


def diurnal(rng: np.random.Generator, n: int) -> list[ThreadTrace]:
    """Return a pool whose level follows a daily cycle between 0.4x and 1.6x its mean."""
    t = np.arange(n) * INTERVAL_SECONDS
    base = rng.uniform(0.5, 1.2) * (
        1 + 0.6 * np.sin(2 * np.pi * t / DAY_SECONDS + rng.uniform(0, 6.28))
    )
    return [*_pool(rng, base, 8, "worker-{}", cv=0.12, wait=0.03), _light(rng, n, "main", 0.005)]


def bursty(rng: np.random.Generator, n: int) -> list[ThreadTrace]:
    """Return 16 executor threads that run short bursts together and queue for CPUs."""
    threads = []
    for i in range(16):
        active = rng.random(n) < 0.9
        usage = active * rng.uniform(0.005, 0.04, n) * (1 + 3 * (rng.random(n) < 0.05))
        threads.append(
            ThreadTrace(f"exec-{i}", usage, usage * rng.uniform(0.4, 1.5, n), 8.0, 0.8, "pool")
        )
    return [*threads, _light(rng, n, "main", 0.005)]


def _step(rng: np.random.Generator, n: int, up: bool) -> tuple[list[ThreadTrace], float]:
    # A step down follows 2.5 days at the high level, so long memories show their cost.
    step_at = rng.uniform(30, 40) * 3600 if up else rng.uniform(60, 66) * 3600
    low = rng.uniform(0.3, 0.6)
    high = low * rng.uniform(2.0, 3.0)
    t = np.arange(n) * INTERVAL_SECONDS
    before, after = (low, high) if up else (high, low)
    base = np.where(t < step_at, before, after)
    return [
        *_pool(rng, base, 8, "worker-{}", cv=0.1, wait=0.03),
        _light(rng, n, "main", 0.005),
    ], step_at


def single_thread_bound(rng: np.random.Generator, n: int) -> list[ThreadTrace]:
    """Return an event loop that saturates a core for long stretches, workers, a wake chain."""
    period = 180  # intervals (30 minutes)
    duty = rng.uniform(0.35, 1.0)
    on = (np.arange(n) % period) < duty * period
    starved = rng.random() < 0.5
    run = rng.uniform(0.55, 0.7) if starved else rng.uniform(0.9, 0.99)
    loop_usage = np.where(on, run * rng.uniform(0.97, 1.0, n), rng.uniform(0.05, 0.15, n))
    loop_wait = np.where(on, (1 - run) * rng.uniform(0.85, 1.0, n), 0.005)
    threads = [ThreadTrace("evloop", loop_usage, loop_wait, 4.0, 0.3, "hot")]
    threads += [_light(rng, n, f"worker-{i}", 0.03) for i in range(6)]
    for i in range(rng.integers(2, 4)):
        usage = rng.uniform(0.03, 0.06, n)
        threads.append(
            ThreadTrace(f"io-{i}", usage, usage * rng.uniform(0.3, 0.6, n), 0.15, 0.98, "chain")
        )
    return threads


def large_pool(rng: np.random.Generator, n: int) -> list[ThreadTrace]:
    """Return 64 lightly loaded pool threads, no bursts, plus JIT compiler threads."""
    base = np.full(n, rng.uniform(2.0, 4.0))
    pool = _pool(rng, base, 64, "pool-1-thread-{}", cv=0.1, wait=0.02)
    compiler = [_light(rng, n, f"C2 CompilerThre{i}"[:15], 0.02) for i in range(2)]
    return [*pool, *compiler]


FAMILIES: dict[str, tuple[Callable[[np.random.Generator, int], list[ThreadTrace]], float]] = {
    "steady": (steady, 20.0),
    "diurnal": (diurnal, 20.0),
    "bursty": (bursty, 0.3),
    "single-thread-bound": (single_thread_bound, 5.0),
    "large-pool": (large_pool, 20.0),
}


def suite(seeds: list[int], days: float = 2.0) -> list[Trace]:
    """Return one trace per family, step-up and step-down family and seed.

    Traces last ``days`` days, step-down traces twice as long; the last day is scored.
    """
    n = int(days * DAY_SECONDS / INTERVAL_SECONDS)
    traces = []
    for seed in seeds:
        for family, (generate, burstiness) in FAMILIES.items():
            rng = np.random.default_rng([seed, len(family)])
            traces.append(
                build_trace(f"{family}-{seed}", family, generate(rng, n), rng, burstiness)
            )
        for up in (True, False):
            family = "step-up" if up else "step-down"
            rng = np.random.default_rng([seed, 100 + up])
            threads, step_at = _step(rng, n if up else 2 * n, up)
            traces.append(
                build_trace(f"{family}-{seed}", family, threads, rng, 20.0, step_seconds=step_at)
            )
    return traces


def _detection_case(rng: np.random.Generator, n: int, case: str) -> list[ThreadTrace]:
    """Hard cases for hot-thread detection: near misses and positives in company."""
    light = [_light(rng, n, f"worker-{i}", 0.03) for i in range(4)]
    if case == "busy-pool":  # every thread near a core: the average shows it, no hot thread
        return [
            ThreadTrace(f"calc-{i}", rng.uniform(0.85, 0.97, n), np.full(n, 0.02), 5.0, 0.2, "busy")
            for i in range(4)
        ]
    if case == "near-hot":  # a busy thread that stays well below one core
        return [
            ThreadTrace("loop", rng.uniform(0.6, 0.75, n), np.full(n, 0.02), 4.0, 0.3, "busy"),
            *light,
        ]
    if case == "spiky":  # saturates a core in only 10% of the intervals
        spikes = rng.random(n) < 0.1
        return [
            ThreadTrace("loop", np.where(spikes, 0.97, 0.1), np.full(n, 0.01), 4.0, 0.3, "busy"),
            *light,
        ]
    if case == "hot-with-pool":
        pool = _pool(rng, np.full(n, 1.0), 4, "worker-{}", cv=0.1, wait=0.03)
        return [
            ThreadTrace("evloop", rng.uniform(0.9, 0.99, n), np.full(n, 0.01), 4.0, 0.3, "hot"),
            *pool,
        ]
    if case == "two-hot":
        return [
            ThreadTrace(f"shard-{i}", rng.uniform(0.88, 0.99, n), np.full(n, 0.01), 4.0, 0.3, "hot")
            for i in range(2)
        ] + light
    if case == "starved-hot":
        run = rng.uniform(0.5, 0.65, n)
        return [ThreadTrace("evloop", run, (1 - run) * 0.8, 4.0, 0.3, "hot"), *light]
    raise ValueError(f"unknown detection case {case!r}")


DETECTION_CASES = ("busy-pool", "near-hot", "spiky", "hot-with-pool", "two-hot", "starved-hot")


def detection_suite(seeds: list[int], hours: float = 6.0) -> list[Trace]:
    """Return one short trace per hard detection case and seed."""
    n = int(hours * 3600 / INTERVAL_SECONDS)
    traces = []
    for seed in seeds:
        for index, case in enumerate(DETECTION_CASES):
            rng = np.random.default_rng([seed, 200 + index])
            traces.append(
                build_trace(f"{case}-{seed}", case, _detection_case(rng, n, case), rng, 5.0)
            )
    return traces


def unnamed_threads(rng: np.random.Generator, n: int) -> list[ThreadTrace]:
    """Return a Go-style process: every thread has the binary name, only behaviour differs."""
    threads = single_thread_bound(rng, n)
    workers = _pool(rng, np.full(n, rng.uniform(0.5, 1.0)), 8, "w{}", cv=0.12, wait=0.03)
    idle = [_light(rng, n, "idle", 0.002) for _ in range(6)]
    named = [threads[0], *workers, *idle, *[t for t in threads if t.label == "chain"]]
    for thread in named:
        thread.comm = "server"
    return named


def grouping_suite(seeds: list[int], hours: float = 6.0) -> list[Trace]:
    """Return one unnamed-thread trace per seed; labels are the behaviour classes."""
    n = int(hours * 3600 / INTERVAL_SECONDS)
    traces = []
    for seed in seeds:
        rng = np.random.default_rng([seed, 300])
        traces.append(build_trace(f"unnamed-{seed}", "unnamed", unnamed_threads(rng, n), rng, 5.0))
    return traces
