"""A self-contained HTML report: the table, the patches and one plot per pod container.

Plots are matplotlib PNGs embedded as base64 data URLs, so the page is one file.
"""

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from matplotlib.figure import Figure

from rightsizer.annotation import WorkloadRecommendation
from rightsizer.history import ContainerHistory
from rightsizer.owners import Workload
from rightsizer.report import render_table

MAX_PLOTS_PER_WORKLOAD = 6

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
pre { background: #f4f4f4; padding: 1em; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; }
"""


def plot_history(
    history: ContainerHistory,
    request_millicores: int,
    current_millicores: int | None,
    tracking_millicores: int | None = None,
) -> str:
    """Return a base64 PNG of usage, demand and the top thread over time, with the requests."""
    hours = (history.end_seconds - history.end_seconds[-1]) / 3600
    # A Figure without pyplot needs no GUI backend and keeps no global state.
    figure = Figure(figsize=(9, 3), dpi=80)
    axes = figure.subplots()
    axes.plot(hours, history.demand.sum(axis=1), lw=0.8, label="demand (CPU + run-queue delay)")
    axes.plot(hours, history.usage.sum(axis=1), lw=0.8, label="CPU used")
    axes.plot(hours, history.usage.max(axis=1), lw=0.8, label="busiest thread")
    axes.axhline(request_millicores / 1000, color="green", ls="--", label="recommended request")
    if tracking_millicores is not None:
        axes.axhline(
            tracking_millicores / 1000, color="purple", ls="-.", label="tracking request (now)"
        )
    if current_millicores is not None:
        axes.axhline(current_millicores / 1000, color="grey", ls=":", label="current request")
    axes.set_xlabel("hours before the newest interval")
    axes.set_ylabel("cores")
    axes.set_title(str(history.key))
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def write_html(
    path: Path,
    entries: Sequence[tuple[Workload, WorkloadRecommendation, Sequence[ContainerHistory]]],
) -> None:
    """Write the report page to ``path``."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Temper CPU recommendations</title><style>{_STYLE}</style></head><body>",
        f"<h1>Temper CPU recommendations</h1><p>Generated {generated}. Nothing has been "
        "applied: review each workload, then apply its patch or run <code>temper rightsize "
        "accept|dismiss</code>.</p>",
        f"<pre>{html.escape(render_table([(w, r) for w, r, _ in entries]))}</pre>",
    ]
    for workload, recommendation, histories in entries:
        parts.append(f"<h2>{html.escape(str(workload))}</h2>")
        for history in list(histories)[:MAX_PLOTS_PER_WORKLOAD]:
            advice = recommendation.containers.get(history.key.container)
            if advice is None or history.intervals == 0:
                continue
            image = plot_history(
                history,
                advice.request_millicores,
                advice.current_request_millicores,
                advice.tracking_request_millicores,
            )
            parts.append(
                f"<img alt='{html.escape(str(history.key))}' src='data:image/png;base64,{image}'>"
            )
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
