"""Bounds on the slack of any request re-computed every 5 minutes, for bench/rightsizer.py.

The replay keeps each request for one cadence (5 minutes). Two references, both given the
future, show how much slack is left to win in each trace family:

- the 5-minute oracle knows every second of CPU use in each coming block and picks each
  block's request, trading blocks against each other, for the least slack at a given share
  of seconds above over the day. No method that holds a request for 5 minutes has less
  slack at that share, so it is a lower bound;
- the mean oracle knows only the mean CPU use of each coming block and adds one margin,
  chosen in hindsight, that gives the day the same share of seconds above. It is what a
  perfect level forecast with an ideal margin would reach; the seconds inside a block stay
  unknown, as they are to any causal method.
"""

from collections.abc import Sequence

import numpy as np

from bench.rightsizer_tables import Results, families, percent, row
from bench.rightsizer_traces import DAY_SECONDS, Trace

BLOCK_SECONDS = 300
# Prices of one second above the request, in core-seconds of request, swept to trace the
# 5-minute oracle's slack against its share of seconds above.
ORACLE_PRICES = np.concatenate(([0.0], np.logspace(-4, 2.5, 240)))


def scored_use(trace: Trace) -> np.ndarray:
    """Return the per-second CPU use of the scored day (the trace's last day)."""
    end = int(trace.history.end_seconds[-1])
    used: np.ndarray = trace.used_per_second[end - int(DAY_SECONDS) : end]
    return used


def oracle_slack(used: np.ndarray, above_share: float) -> float:
    """Return the 5-minute oracle's least mean slack at ``above_share``, in millicores.

    For each price of a second above, every block independently takes the request that
    minimises its request-seconds plus the price of its seconds above. The prices trace the
    lower convex hull of (share above, slack), which is interpolated at ``above_share``.
    """
    blocks = len(used) // BLOCK_SECONDS
    use = used[: blocks * BLOCK_SECONDS].reshape(blocks, BLOCK_SECONDS)
    # Candidate k of each block: the request equal to its (k+1)-th largest second, which
    # leaves at most k seconds above it; k = BLOCK_SECONDS is a zero request.
    descending = -np.sort(-use, axis=1)
    candidates = np.concatenate([descending, np.zeros((blocks, 1))], axis=1)
    counts = np.arange(BLOCK_SECONDS + 1)
    points = []
    for price in ORACLE_PRICES:
        choice = (BLOCK_SECONDS * candidates + price * counts).argmin(axis=1)
        request = candidates[np.arange(blocks), choice]
        above = float((use > request[:, None]).mean())
        slack = float((request.mean() - use.mean()) * 1000)
        points.append((above, slack))
    aboves = np.array([above for above, _ in sorted(points)])
    slacks = np.minimum.accumulate(np.array([slack for _, slack in sorted(points)]))
    return float(np.interp(above_share, aboves, slacks))


def mean_oracle_slack(used: np.ndarray, above_share: float) -> float:
    """Return the mean oracle's mean slack at ``above_share``, in millicores."""
    blocks = len(used) // BLOCK_SECONDS
    use = used[: blocks * BLOCK_SECONDS].reshape(blocks, BLOCK_SECONDS)
    means = use.mean(axis=1, keepdims=True)
    margin = float(np.quantile(use - means, 1 - above_share))
    return float((means + margin - use).mean() * 1000)


def print_bounds(traces: Sequence[Trace], results: Results) -> dict[str, float]:
    """Print, per family, Temper and VPA against both oracles; return the overall means.

    Each trace is compared at its own shares of seconds above: Temper's and VPA's.
    """
    print(
        row(
            [
                "family",
                "Temper slack",
                "Temper above",
                "5-min oracle at Temper's share",
                "mean oracle at Temper's share",
                "VPA slack",
                "VPA above",
                "5-min oracle at VPA's share",
                "oracle vs VPA",
            ]
        )
    )
    print(row(["---", *["---:"] * 8]))
    columns = ("temper", "temper_above", "oracle", "mean", "vpa", "vpa_above", "oracle_vpa")
    overall: dict[str, list[float]] = {name: [] for name in columns}
    groups = [(f, [t for t in traces if t.family == f]) for f in families(traces)]
    for family, members in [*groups, ("**all**", list(traces))]:
        values: dict[str, list[float]] = {name: [] for name in columns}
        for trace in members:
            used = scored_use(trace)
            temper = results["Temper"][trace.name]
            vpa = results["VPA"][trace.name]
            values["temper"].append(temper.slack_millicores)
            values["temper_above"].append(temper.above_share)
            values["oracle"].append(oracle_slack(used, temper.above_share))
            values["mean"].append(mean_oracle_slack(used, temper.above_share))
            values["vpa"].append(vpa.slack_millicores)
            values["vpa_above"].append(vpa.above_share)
            values["oracle_vpa"].append(oracle_slack(used, vpa.above_share))
        mean = {name: float(np.mean(items)) for name, items in values.items()}
        if family == "**all**":
            overall = values
        print(
            row(
                [
                    family,
                    f"{mean['temper']:.0f}m",
                    percent(mean["temper_above"]),
                    f"{mean['oracle']:.0f}m",
                    f"{mean['mean']:.0f}m",
                    f"{mean['vpa']:.0f}m",
                    percent(mean["vpa_above"]),
                    f"{mean['oracle_vpa']:.0f}m",
                    f"{(mean['oracle_vpa'] - mean['vpa']) / mean['vpa'] * 100:+.1f}%",
                ]
            )
        )
    print(
        "\nThe 5-minute oracle knows every second of each coming 5-minute block; no request "
        "held for 5 minutes has less slack at the same share of seconds above. The mean "
        "oracle knows each block's mean CPU use and adds one margin chosen in hindsight. "
        "The last column is the least slack change against VPA that any such request could "
        "reach at VPA's own share of seconds above, trace by trace."
    )
    return {name: float(np.mean(items)) for name, items in overall.items()}
