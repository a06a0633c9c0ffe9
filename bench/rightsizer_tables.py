"""Markdown tables and PNG plots of bench/rightsizer.py."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench.rightsizer_learned import Detection
from bench.rightsizer_replay import Score, slack_at_risk
from bench.rightsizer_traces import DAY_SECONDS, Trace

METHODS = ("Temper", "Temper reviewed", "VPA", "KRR")
# Results of one suite: method -> trace name -> score.
Results = dict[str, dict[str, Score]]


def percent(value: float) -> str:
    """Format a share as a percentage with two decimals."""
    return f"{value * 100:.2f}%"


def row(cells: Sequence[object]) -> str:
    """Return one Markdown table row."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def families(traces: Sequence[Trace]) -> list[str]:
    """Return the trace families in their first-seen order."""
    seen: list[str] = []
    for trace in traces:
        if trace.family not in seen:
            seen.append(trace.family)
    return seen


def mean_of(results: Results, method: str, names: Sequence[str], field: str) -> float:
    """Return the mean of one score field of ``method`` over the named traces."""
    return float(np.mean([getattr(results[method][name], field) for name in names]))


def print_suite(traces: Sequence[Trace], results: Results) -> dict[str, tuple[float, float]]:
    """Print slack and seconds above per family.

    Returns each method's mean slack and mean share of seconds above over all traces.
    """
    print(row(["family", *(f"{m} slack" for m in METHODS), *(f"{m} above" for m in METHODS)]))
    print(row(["---", *["---:"] * (2 * len(METHODS))]))
    groups = [
        (family, [t.name for t in traces if t.family == family]) for family in families(traces)
    ]
    groups.append(("**all**", [t.name for t in traces]))
    for family, names in groups:
        slack = [mean_of(results, m, names, "slack_millicores") for m in METHODS]
        above = [mean_of(results, m, names, "above_share") for m in METHODS]
        print(row([family, *(f"{s:.0f}m" for s in slack), *(percent(a) for a in above)]))
    overall = {
        m: (
            mean_of(results, m, groups[-1][1], "slack_millicores"),
            mean_of(results, m, groups[-1][1], "above_share"),
        )
        for m in METHODS
    }
    vpa_slack, vpa_above = overall["VPA"]
    print()
    for method in ("Temper", "Temper reviewed"):
        method_slack, method_above = overall[method]
        print(
            f"{method}: mean slack {(method_slack - vpa_slack) / vpa_slack * 100:+.1f}% "
            f"against VPA's, with {percent(method_above)} of seconds above the request "
            f"against VPA's {percent(vpa_above)}."
        )
    return overall


def fixed_request_slack(trace: Trace, above_share: float) -> float:
    """Return the slack of the best request held fixed over the scored day at ``above_share``.

    That request is the (1 - above_share) quantile of the day's per-second CPU use: no
    request that stays the same all day has less slack at that share of seconds above it.
    """
    end = int(trace.history.end_seconds[-1])
    used = trace.used_per_second[end - int(DAY_SECONDS) : end]
    return float((np.quantile(used, 1 - above_share) - used.mean()) * 1000)


def print_equal_risk(
    traces: Sequence[Trace], results: Results, sweep: dict[float, Results]
) -> float:
    """Print Temper's slack against VPA's at the same seconds above; return the change.

    Only traces whose Temper share of seconds above lies within VPA's sweep are compared;
    the others are listed, because extrapolating VPA there would favour one side.
    """
    print(
        row(
            [
                "family",
                "traces compared",
                "Temper slack",
                "Temper above",
                "VPA slack at that share",
                "change",
                "best fixed request's slack",
            ]
        )
    )
    print(row(["---", *["---:"] * 6]))
    totals: dict[str, list[float]] = {"temper": [], "vpa": [], "fixed": []}
    excluded: list[str] = []
    for family in families(traces):
        values: dict[str, list[float]] = {"temper": [], "vpa": [], "fixed": [], "above": []}
        members = [t for t in traces if t.family == family]
        for trace in members:
            own = results["Temper"][trace.name]
            points = [
                (runs["VPA"][trace.name].above_share, runs["VPA"][trace.name].slack_millicores)
                for runs in sweep.values()
            ]
            slack, inside = slack_at_risk(points, own.above_share)
            if not inside:
                aboves = [above for above, _ in points]
                excluded.append(
                    f"{trace.name} (Temper {percent(own.above_share)}, VPA "
                    f"{percent(min(aboves))} to {percent(max(aboves))})"
                )
                continue
            values["temper"].append(own.slack_millicores)
            values["vpa"].append(slack)
            values["fixed"].append(fixed_request_slack(trace, own.above_share))
            values["above"].append(own.above_share)
        if not values["temper"]:
            print(row([family, f"0 of {len(members)}", "", "", "", "", ""]))
            continue
        for name in totals:
            totals[name] += values[name]
        mean = {name: float(np.mean(items)) for name, items in values.items()}
        print(
            row(
                [
                    family,
                    f"{len(values['temper'])} of {len(members)}",
                    f"{mean['temper']:.0f}m",
                    percent(mean["above"]),
                    f"{mean['vpa']:.0f}m",
                    f"{(mean['temper'] - mean['vpa']) / mean['vpa'] * 100:+.1f}%",
                    f"{mean['fixed']:.0f}m",
                ]
            )
        )
    overall = {name: float(np.mean(items)) for name, items in totals.items()}
    change = (overall["temper"] - overall["vpa"]) / overall["vpa"]
    print(
        row(
            [
                "**all compared**",
                f"**{len(totals['temper'])} of {len(traces)}**",
                f"**{overall['temper']:.0f}m**",
                "",
                f"**{overall['vpa']:.0f}m**",
                f"**{change * 100:+.1f}%**",
                f"**{overall['fixed']:.0f}m**",
            ]
        )
    )
    percentiles = ", ".join(f"{p:g}" for p in sweep)
    print(
        f"\nVPA's target percentile swept over {percentiles}; for each trace VPA's slack is "
        "interpolated on its sweep at Temper's share of seconds above the request. The last "
        "column is the best request held fixed over the scored day, chosen knowing the day "
        "in advance, at the same share."
    )
    if excluded:
        print(f"Not compared, Temper's share outside VPA's sweep: {', '.join(excluded)}.")
    return change


def print_reaction(traces: Sequence[Trace], results: Results) -> list[float]:
    """Print the reaction to each step up; return Temper's reaction times in seconds."""
    print(row(["step-up trace", *METHODS]))
    print(row(["---", *["---:"] * len(METHODS)]))
    temper: list[float] = []
    for trace in (t for t in traces if t.family == "step-up"):
        cells = []
        for method in METHODS:
            seconds = results[method][trace.name].reaction_seconds
            cells.append("not within the day" if seconds is None else f"{seconds / 60:.0f} min")
            if method == "Temper":
                temper.append(float("inf") if seconds is None else seconds)
        print(row([trace.name, *cells]))
    return temper


def print_detection(results: dict[str, Detection]) -> None:
    """Print precision, recall and F1 of each finding rule."""
    print(row(["finding", "precision", "recall", "F1", "true pos.", "false pos.", "false neg."]))
    print(row(["---", *["---:"] * 6]))
    for name, counts in results.items():
        print(
            row(
                [
                    name,
                    f"{counts.precision:.3f}",
                    f"{counts.recall:.3f}",
                    f"{counts.f1:.3f}",
                    counts.true_positives,
                    counts.false_positives,
                    counts.false_negatives,
                ]
            )
        )


def plot_step(trace: Trace, results: Results, path: Path) -> None:
    """Plot the requests of every method around a step up."""
    assert trace.step_seconds is not None
    figure = Figure(figsize=(9, 3.5), dpi=90)
    axes = figure.subplots()
    whole = len(trace.used_per_second) // 60 * 60
    per_minute = trace.used_per_second[:whole].reshape(-1, 60).mean(axis=1)
    minutes = (np.arange(len(per_minute)) * 60 - trace.step_seconds) / 3600
    shown = (minutes > -3) & (minutes < 9)
    axes.plot(
        minutes[shown], per_minute[shown], color="grey", lw=0.7, label="CPU used (1-min mean)"
    )
    for method in METHODS:
        result = results[method][trace.name]
        hours = (result.step_times - trace.step_seconds) / 3600
        visible = (hours > -3) & (hours < 9)
        axes.step(
            hours[visible], result.requests[visible] / 1000, where="post", label=f"{method} request"
        )
    axes.axvline(0, color="black", ls=":", lw=0.8)
    axes.set_xlabel("hours after the step")
    axes.set_ylabel("cores")
    axes.set_title(f"Step up ({trace.name}): request re-computed every 5 minutes")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


def plot_day(trace: Trace, results: Results, path: Path) -> None:
    """Plot the requests of every method over the scored day of one trace."""
    figure = Figure(figsize=(9, 3.5), dpi=90)
    axes = figure.subplots()
    end = int(trace.history.end_seconds[-1])
    start = end - int(DAY_SECONDS)
    per_minute = trace.used_per_second[start:end].reshape(-1, 60).mean(axis=1)
    hours = np.arange(len(per_minute)) / 60
    axes.plot(hours, per_minute, color="grey", lw=0.7, label="CPU used (1-min mean)")
    for method in METHODS:
        result = results[method][trace.name]
        axes.step(
            (result.step_times - start) / 3600,
            result.requests / 1000,
            where="post",
            label=f"{method} request",
        )
    axes.set_xlabel("hours into the scored day")
    axes.set_ylabel("cores")
    axes.set_title(f"Daily cycle ({trace.name}): request re-computed every 5 minutes")
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)


def plot_slack(traces: Sequence[Trace], results: Results, path: Path) -> None:
    """Plot mean slack and seconds above the request per family and method."""
    names = families(traces)
    figure = Figure(figsize=(9, 4), dpi=90)
    axes_slack, axes_above = figure.subplots(1, 2)
    width = 0.8 / len(METHODS)
    positions = np.arange(len(names))
    for offset, method in enumerate(METHODS):
        members = [[t.name for t in traces if t.family == f] for f in names]
        slack = [mean_of(results, method, m, "slack_millicores") for m in members]
        above = [mean_of(results, method, m, "above_share") * 100 for m in members]
        axes_slack.barh(positions + offset * width, slack, width, label=method)
        axes_above.barh(positions + offset * width, above, width, label=method)
    for axes, title in (
        (axes_slack, "mean slack (millicores)"),
        (axes_above, "seconds above request (%)"),
    ):
        axes.set_yticks(positions + width * (len(METHODS) - 1) / 2, names, fontsize=8)
        axes.set_title(title, fontsize=10)
        axes.invert_yaxis()
    axes_above.set_yticklabels([])
    axes_slack.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
