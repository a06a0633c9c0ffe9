"""Pooled percentiles per arm and ladder step, the Markdown table, the JSON record and the plot."""

import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from bench.colocation.runner import CellResult, NanosecondArray, percentiles_us

BASELINE_ARM = "stock"


@dataclass
class Row:
    """One arm at one ladder step, over its repetitions."""

    arm: str
    fillers: int
    repetitions: int
    p50_us: float | None
    p99_us: float | None
    p999_us: float | None
    p99_rep_min_us: float | None
    p99_rep_median_us: float | None
    p99_rep_max_us: float | None
    # Median of the per-repetition p99 over the same arm's median with no fillers. The median
    # keeps one repetition disturbed by other work on the machine from deciding the ratio.
    p99_growth: float | None
    service_p99_us: float | None
    lateness_p99_us: float | None
    target_rate: float
    achieved_rate: float
    timeouts: int
    filler_iterations_per_second: float
    filler_throughput_ratio_to_stock: float | None
    memcached_cores: float | None
    loadgen_cores: float | None
    machine_busy_fraction: float
    memcached_throttled_periods: int | None
    # Results written before these were measured load without them.
    filler_cores: float | None = None
    filler_preemptions_per_second: float | None = None

    @property
    def p99_spread(self) -> float | None:
        """(max - min) / median of the per-repetition p99: the noise of this cell."""
        if None in (self.p99_rep_min_us, self.p99_rep_max_us, self.p99_rep_median_us):
            return None
        assert self.p99_rep_min_us is not None and self.p99_rep_max_us is not None
        assert self.p99_rep_median_us is not None
        return (self.p99_rep_max_us - self.p99_rep_min_us) / self.p99_rep_median_us


def _concatenate(arrays: list[NanosecondArray]) -> NanosecondArray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint64)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def aggregate(cells: list[CellResult]) -> list[Row]:
    """Pool the repetitions of every (arm, fillers) cell, in ladder order, arms in run order."""
    arms = list(dict.fromkeys(c.arm for c in cells))
    steps = sorted({c.fillers for c in cells})
    rows: list[Row] = []
    for arm in arms:
        for fillers in steps:
            group = [c for c in cells if c.arm == arm and c.fillers == fillers]
            if not group:
                continue
            pooled = percentiles_us(_concatenate([c.latency_ns for c in group]))
            rep_p99 = [percentiles_us(c.latency_ns)["p99"] for c in group]
            rep_values = [v for v in rep_p99 if v is not None]
            throttled = [c.memcached_throttled_periods for c in group]
            rows.append(
                Row(
                    arm=arm,
                    fillers=fillers,
                    repetitions=len(group),
                    p50_us=pooled["p50"],
                    p99_us=pooled["p99"],
                    p999_us=pooled["p99.9"],
                    p99_rep_min_us=min(rep_values) if rep_values else None,
                    p99_rep_median_us=statistics.median(rep_values) if rep_values else None,
                    p99_rep_max_us=max(rep_values) if rep_values else None,
                    p99_growth=None,
                    service_p99_us=percentiles_us(_concatenate([c.service_ns for c in group]))[
                        "p99"
                    ],
                    lateness_p99_us=percentiles_us(_concatenate([c.lateness_ns for c in group]))[
                        "p99"
                    ],
                    target_rate=group[0].rate,
                    achieved_rate=statistics.fmean(c.achieved_rate for c in group),
                    timeouts=sum(int(c.loadgen.get("timeouts", 0)) for c in group),
                    filler_iterations_per_second=statistics.fmean(
                        c.filler_iterations_per_second for c in group
                    ),
                    filler_throughput_ratio_to_stock=None,
                    memcached_cores=_mean([c.memcached_cores for c in group]),
                    loadgen_cores=_mean([c.loadgen_cores for c in group]),
                    machine_busy_fraction=statistics.fmean(c.machine_busy_fraction for c in group),
                    memcached_throttled_periods=None
                    if None in throttled
                    else sum(t or 0 for t in throttled),
                    filler_cores=_mean([c.filler_cores for c in group]),
                    filler_preemptions_per_second=_mean(
                        [c.filler_preemptions_per_second for c in group]
                    ),
                )
            )
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[Row]) -> None:
    baseline_p99 = {r.arm: r.p99_rep_median_us for r in rows if r.fillers == 0}
    stock_throughput = {
        r.fillers: r.filler_iterations_per_second for r in rows if r.arm == BASELINE_ARM
    }
    for row in rows:
        base = baseline_p99.get(row.arm)
        if base and row.p99_rep_median_us is not None:
            row.p99_growth = row.p99_rep_median_us / base
        stock = stock_throughput.get(row.fillers)
        if stock:
            row.filler_throughput_ratio_to_stock = row.filler_iterations_per_second / stock


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown_table(rows: list[Row]) -> str:
    """Format the results as a Markdown table, one line per arm and ladder step."""
    header = (
        "| arm | fillers | p50 us | p99 us | p99.9 us | p99 per rep: median (min-max) us | "
        "p99 growth | batch Mit/s | batch vs stock | batch cores | batch preemptions/s | "
        "memcached cores | generator cores | CPU busy | achieved / target req/s | "
        "generator lateness p99 us |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for r in rows:
        batch = "-" if r.fillers == 0 else _fmt(r.filler_iterations_per_second / 1e6)
        batch_ratio = "-" if r.fillers == 0 else _fmt(r.filler_throughput_ratio_to_stock, 2)
        batch_cores = "-" if r.fillers == 0 else _fmt(r.filler_cores, 2)
        preemptions = "-" if r.fillers == 0 else _fmt(r.filler_preemptions_per_second)
        lines.append(
            f"| {r.arm} | {r.fillers} | {_fmt(r.p50_us)} | {_fmt(r.p99_us)} | "
            f"{_fmt(r.p999_us)} | {_fmt(r.p99_rep_median_us)} "
            f"({_fmt(r.p99_rep_min_us)}-{_fmt(r.p99_rep_max_us)}) | "
            f"{_fmt(r.p99_growth, 2)} | {batch} | {batch_ratio} | {batch_cores} | {preemptions} | "
            f"{_fmt(r.memcached_cores, 2)} | {_fmt(r.loadgen_cores, 2)} | "
            f"{_fmt(r.machine_busy_fraction, 2)} | "
            f"{_fmt(r.achieved_rate)} / {_fmt(r.target_rate)} | {_fmt(r.lateness_p99_us)} |"
        )
    return header + "\n".join(lines) + "\n"


def noise_summary(rows: list[Row]) -> dict[str, float | None]:
    """Median, over the cells of each arm, of the relative spread of per-repetition p99."""
    result: dict[str, float | None] = {}
    for arm in dict.fromkeys(r.arm for r in rows):
        spreads = [r.p99_spread for r in rows if r.arm == arm and r.p99_spread is not None]
        result[arm] = round(statistics.median(spreads), 3) if spreads else None
    return result


def rows_as_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    """JSON-ready rows, with the per-cell spread."""
    return [asdict(r) | {"p99_spread": r.p99_spread} for r in rows]


def rows_from_dicts(data: list[dict[str, Any]]) -> list[Row]:
    """Rows read back from ``rows_as_dicts`` output, with their ratios computed again."""
    names = {f.name for f in fields(Row)}
    # The ratios are computed below, so results written before a ratio existed load too.
    computed = {"p99_growth": None, "filler_throughput_ratio_to_stock": None}
    rows = [Row(**(computed | {k: v for k, v in item.items() if k in names})) for item in data]
    _add_ratios(rows)
    return rows


def rows_from_cell_summaries(cells: list[dict[str, Any]]) -> list[Row]:
    """Rows from per-cell summaries alone (``cells.jsonl``), without pooled percentiles."""
    rows: list[Row] = []
    for arm in dict.fromkeys(c["arm"] for c in cells):
        for fillers in sorted({c["fillers"] for c in cells if c["arm"] == arm}):
            group = [c for c in cells if c["arm"] == arm and c["fillers"] == fillers]
            p99 = [c["latency_us"]["p99"] for c in group if c["latency_us"]["p99"] is not None]
            lateness = [
                c["lateness_us"]["p99"] for c in group if c["lateness_us"]["p99"] is not None
            ]
            rows.append(
                Row(
                    arm=arm,
                    fillers=fillers,
                    repetitions=len(group),
                    p50_us=None,
                    p99_us=None,
                    p999_us=None,
                    p99_rep_min_us=min(p99) if p99 else None,
                    p99_rep_median_us=statistics.median(p99) if p99 else None,
                    p99_rep_max_us=max(p99) if p99 else None,
                    p99_growth=None,
                    service_p99_us=None,
                    lateness_p99_us=statistics.median(lateness) if lateness else None,
                    target_rate=group[0]["rate"],
                    achieved_rate=statistics.fmean(c["achieved_rate"] for c in group),
                    timeouts=sum(int(c["loadgen"].get("timeouts", 0)) for c in group),
                    filler_iterations_per_second=statistics.fmean(
                        c["filler_iterations_per_second"] for c in group
                    ),
                    filler_throughput_ratio_to_stock=None,
                    memcached_cores=_mean([c["memcached_cores"] for c in group]),
                    loadgen_cores=_mean([c["loadgen_cores"] for c in group]),
                    machine_busy_fraction=statistics.fmean(
                        c["machine_busy_fraction"] for c in group
                    ),
                    memcached_throttled_periods=None,
                    filler_cores=_mean([c.get("filler_cores") for c in group]),
                    filler_preemptions_per_second=_mean(
                        [c.get("filler_preemptions_per_second") for c in group]
                    ),
                )
            )
    _add_ratios(rows)
    return rows


def plot_title(record: dict[str, Any]) -> str:
    """Return the plot's title: rate, machine, date, and the emulation label of a VM run."""
    machine = record["machine"]
    label = ""
    if record["emulated"]:
        threads = machine.get("tcg_threads")
        label = f" (EMULATED: QEMU TCG guest{f', {threads}-threaded' if threads else ''})"
    return (
        f"memcached at {record['calibration']['rate']:.0f} requests/s beside batch fillers{label}\n"
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), Linux {machine['kernel']}, "
        f"{machine['date_utc'][:10]}"
    )


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Draw p99 against fillers per arm (median and min-max of repetitions) and batch work."""
    import matplotlib  # noqa: PLC0415 - imported only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (latency_axis, batch_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm in dict.fromkeys(r.arm for r in rows):
        mine = [r for r in rows if r.arm == arm and r.p99_rep_median_us is not None]
        x = [r.fillers for r in mine]
        y = [r.p99_rep_median_us or 0.0 for r in mine]
        low = [
            max(0.0, median - (r.p99_rep_min_us or 0.0)) for r, median in zip(mine, y, strict=True)
        ]
        high = [
            max(0.0, (r.p99_rep_max_us or 0.0) - median) for r, median in zip(mine, y, strict=True)
        ]
        latency_axis.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=arm)
        batch = [r for r in mine if r.fillers > 0]
        batch_axis.plot(
            [r.fillers for r in batch],
            [r.filler_iterations_per_second / 1e6 for r in batch],
            marker="o",
            label=arm,
        )
    steps = sorted({r.fillers for r in rows})
    latency_axis.set_xticks(steps)
    batch_axis.set_xticks([s for s in steps if s > 0])
    # From zero, so that the heights of the arms compare as their ratio does.
    batch_axis.set_ylim(bottom=0)
    latency_axis.set_xlabel("batch fillers (CPU-bound processes)")
    latency_axis.set_ylabel("memcached p99 latency (us)")
    latency_axis.set_title(
        "median of the repetitions' p99, bars from their min to their max", fontsize=9
    )
    latency_axis.set_yscale("log")
    latency_axis.grid(True, which="both", alpha=0.3)
    latency_axis.legend()
    batch_axis.set_xlabel("batch fillers (CPU-bound processes)")
    batch_axis.set_ylabel("batch throughput (million iterations/s)")
    batch_axis.set_title("loop iterations per second, summed over fillers", fontsize=9)
    batch_axis.grid(True, alpha=0.3)
    batch_axis.legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
