"""The request-rate calibration and the interleaved ladder of cells."""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.colocation.arms import Arm
from bench.colocation.processes import BenchmarkError
from bench.colocation.runner import CellResult, Testbed, Window

log = logging.getLogger(__name__)

# A probe rate counts as sustained when this share of its requests completed in the window.
SUSTAINED_FRACTION = 0.97
RATE_STEP_FACTOR = 1.5
MAX_PROBES = 10
MIN_RATE = 50
# A probe whose p99 exceeds both this multiple of the sweep's lowest p99 and the floor below
# counts as overloaded.
OVERLOAD_FACTOR = 10.0
OVERLOAD_FLOOR_US = 2000.0


@dataclass(frozen=True)
class CalibrationPoint:
    """One probe of the sweep: memcached alone at a rate."""

    rate: float
    achieved_rate: float
    memcached_cores: float | None
    loadgen_cores: float | None
    p99_us: float | None
    # p99 jumped far above the lowest p99 of the sweep: memcached or the generator queues.
    overloaded: bool = False

    @property
    def sustained(self) -> bool:
        """True when the generator and memcached kept up with the rate without queueing."""
        return self.achieved_rate >= SUSTAINED_FRACTION * self.rate and not self.overloaded


@dataclass
class Calibration:
    """The chosen rate and the sweep behind it."""

    rate: float
    target_memcached_cores: float
    points: list[CalibrationPoint] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rate": self.rate,
            "target_memcached_cores": self.target_memcached_cores,
            "note": self.note,
            "points": [
                {
                    "rate": p.rate,
                    "achieved_rate": round(p.achieved_rate, 1),
                    "memcached_cores": None
                    if p.memcached_cores is None
                    else round(p.memcached_cores, 3),
                    "loadgen_cores": None if p.loadgen_cores is None else round(p.loadgen_cores, 3),
                    "p99_us": p.p99_us,
                    "overloaded": p.overloaded,
                }
                for p in self.points
            ],
        }


def calibrate(
    testbed: Testbed,
    stock: Arm,
    *,
    target_cores: float,
    start_rate: float,
    max_rate: float,
    window: Window,
) -> Calibration:
    """Find the rate at which memcached alone uses ``target_cores`` of CPU.

    Probes rates from ``start_rate`` upwards by a factor of 1.5 with no fillers (halving it
    first while even ``start_rate`` is not sustained), interpolates linearly between the
    probes around the target and rounds down to two significant digits. The climb stops at a
    probe that is not sustained: under 97% of its requests completed in the window, or a p99
    above ten times the lowest p99 of the sweep and above 2 ms. When memcached never
    reaches the target before the generator stops keeping up (or ``max_rate``), the highest
    sustained rate is used and the calibration records that in its note.
    """
    points: list[CalibrationPoint] = []
    rate = start_rate
    for _ in range(MAX_PROBES):
        cell = testbed.run_cell(stock, 0, -1, rate, window)
        p99_us = cell.summary()["latency_us"]["p99"]
        lowest = min((p.p99_us for p in points if p.p99_us is not None), default=p99_us)
        point = CalibrationPoint(
            rate=rate,
            achieved_rate=cell.achieved_rate,
            memcached_cores=cell.memcached_cores,
            loadgen_cores=cell.loadgen_cores,
            p99_us=p99_us,
            overloaded=p99_us is not None
            and lowest is not None
            and p99_us > max(OVERLOAD_FACTOR * lowest, OVERLOAD_FLOOR_US),
        )
        points.append(point)
        log.info(
            "calibration probe",
            extra={
                "rate": rate,
                "achieved_rate": round(point.achieved_rate),
                "memcached_cores": point.memcached_cores,
                "loadgen_cores": point.loadgen_cores,
                "p99_us": point.p99_us,
            },
        )
        if not point.sustained:
            if any(p.sustained for p in points) or rate / 2 < MIN_RATE:
                break
            rate /= 2  # even the first rate is too fast for this machine (an emulated VM)
            continue
        if (point.memcached_cores or 0.0) >= target_cores or rate >= max_rate:
            break
        rate = min(max_rate, rate * RATE_STEP_FACTOR)
    sustained = [p for p in points if p.sustained and p.memcached_cores is not None]
    if not sustained:
        raise BenchmarkError(
            f"the load generator sustained none of the probe rates {[p.rate for p in points]}: "
            "lower --calibration-start-rate or run on a quieter machine"
        )
    below = [p for p in sustained if (p.memcached_cores or 0.0) < target_cores]
    above = [p for p in sustained if (p.memcached_cores or 0.0) >= target_cores]
    note = ""
    if above and below:
        low = max(below, key=lambda p: p.rate)
        high = min(above, key=lambda p: p.rate)
        low_cores, high_cores = low.memcached_cores or 0.0, high.memcached_cores or 0.0
        fraction = (target_cores - low_cores) / max(1e-9, high_cores - low_cores)
        chosen = low.rate + fraction * (high.rate - low.rate)
    elif above:
        first = min(above, key=lambda p: p.rate)
        chosen = first.rate * target_cores / max(1e-9, first.memcached_cores or 0.0)
    else:
        best = max(sustained, key=lambda p: p.rate)
        chosen = best.rate
        note = (
            f"memcached reached only {best.memcached_cores:.2f} cores at the highest sustained "
            f"rate {best.rate:.0f}/s, below the target of {target_cores:.2f}"
        )
    return Calibration(
        rate=round_down_two_digits(chosen),
        target_memcached_cores=target_cores,
        points=points,
        note=note,
    )


def round_down_two_digits(rate: float) -> float:
    """Round a rate down to two significant digits (37,412 becomes 37,000 and 368 becomes 360)."""
    if rate < MIN_RATE:
        return float(MIN_RATE)
    step = 10 ** max(0, math.floor(math.log10(rate)) - 1)
    return float(math.floor(rate / step) * step)


def arm_order(arms: list[Arm], step_index: int, repetition: int) -> list[Arm]:
    """Rotate the arms from one repetition (and step) to the next, so none always runs first."""
    shift = (step_index + repetition) % len(arms)
    return arms[shift:] + arms[:shift]


@dataclass
class Campaign:
    """The cells run so far, and whether the time budget cut the ladder short."""

    cells: list[CellResult] = field(default_factory=list)
    cut_short: bool = False


def run_ladder(
    testbed: Testbed,
    arms: list[Arm],
    *,
    ladder: list[int],
    repetitions: int,
    rate: float,
    window: Window,
    deadline: float,
    on_cell: Callable[[CellResult], None] | None = None,
    done: list[CellResult] | None = None,
) -> Campaign:
    """Run every arm at every ladder step, ``repetitions`` times, arms alternating within a step.

    Stops starting cells once ``time.monotonic()`` passes ``deadline``. ``on_cell`` receives each
    cell as soon as it is done, so that a crash keeps what was measured before it. The cells in
    ``done`` (kept by an earlier boot of the same run) are not run again and come first in the
    campaign.
    """
    campaign = Campaign(cells=list(done or []))
    finished = {(cell.arm, cell.fillers, cell.repetition) for cell in campaign.cells}
    for step_index, fillers in enumerate(ladder):
        for repetition in range(repetitions):
            for arm in arm_order(arms, step_index, repetition):
                if (arm.name, fillers, repetition) in finished:
                    continue
                if time.monotonic() > deadline:
                    campaign.cut_short = True
                    log.warning(
                        "time budget used up, the ladder stops here",
                        extra={"fillers": fillers, "repetition": repetition, "arm": arm.name},
                    )
                    return campaign
                cell = testbed.run_cell(arm, fillers, repetition, rate, window)
                summary = cell.summary()
                log.info(
                    "cell done",
                    extra={
                        "arm": arm.name,
                        "fillers": fillers,
                        "repetition": repetition,
                        "p99_us": summary["latency_us"]["p99"],
                        "achieved_rate": summary["achieved_rate"],
                        "filler_iterations_per_second": summary["filler_iterations_per_second"],
                        "busy": summary["machine_busy_fraction"],
                    },
                )
                campaign.cells.append(cell)
                if on_cell is not None:
                    on_cell(cell)
    return campaign
