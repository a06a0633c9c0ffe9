"""Grafana dashboards of the observation metrics, built as JSON from code.

``scripts/gen-dashboards.py`` writes them to ``deploy/helm/temper/dashboards/``. Three views:
the node (tiers side by side, linter, the agent's own cost), one tier (its pods), one pod.
Every query filters on the ``instance`` label of the scraped agent.
"""

from typing import Any

SCHEMA_VERSION = 39
RATE = "$__rate_interval"
PANEL_WIDTH = 12
PANEL_HEIGHT = 8


def _target(expression: str, legend: str) -> dict[str, Any]:
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expression,
        "legendFormat": legend,
        "refId": "",
    }


def _panel(
    title: str, targets: list[tuple[str, str]], unit: str, kind: str = "timeseries"
) -> dict[str, Any]:
    built = [_target(expression, legend) for expression, legend in targets]
    for index, target in enumerate(built):
        target["refId"] = chr(ord("A") + index)
    return {
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": built,
    }


def _variable(name: str, query: str, label: str, multi: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "refresh": 2,
        "multi": multi,
        "includeAll": multi,
        "sort": 1,
    }


def _dashboard(
    uid: str, title: str, variables: list[dict[str, Any]], panels: list[dict[str, Any]]
) -> dict[str, Any]:
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        panel["gridPos"] = {
            "x": (index % 2) * PANEL_WIDTH,
            "y": (index // 2) * PANEL_HEIGHT,
            "w": PANEL_WIDTH,
            "h": PANEL_HEIGHT,
        }
    datasource = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
    }
    return {
        "uid": uid,
        "title": title,
        "tags": ["temper"],
        "schemaVersion": SCHEMA_VERSION,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [datasource, *variables]},
        "panels": panels,
    }


def _instance() -> dict[str, Any]:
    return _variable("instance", "label_values(temper_observe_samples_total, instance)", "Agent")


def node_dashboard() -> dict[str, Any]:
    """Tiers of one node side by side, the placement linter and the agent's own cost."""
    node = 'instance=~"$instance"'
    panels = [
        _panel(
            "CPU by tier",
            [(f"sum by (tier) (rate(temper_observe_tier_cpu_seconds_total{{{node}}}[{RATE}]))",
              "{{tier}}")],
            "cores",
        ),
        _panel(
            "Run-queue delay by tier (seconds waited per second)",
            [(f"sum by (tier) (rate(temper_observe_tier_runq_delay_seconds_total{{{node}}}"
              f"[{RATE}]))", "{{tier}}")],
            "s",
        ),
        _panel(
            "p99 wake-up delay by tier (BPF)",
            [(f"histogram_quantile(0.99, sum by (le, tier) (rate("
              f"temper_observe_runq_delay_wakeup_seconds_bucket{{{node}}}[{RATE}])))", "{{tier}}")],
            "s",
        ),
        _panel(
            "Placement linter violations per second",
            [(f"sum by (invariant) (rate(temper_observe_linter_violations_total{{{node}}}"
              f"[{RATE}]))", "{{invariant}}")],
            "ops",
        ),
        _panel(
            "Observation cost",
            [
                (f"rate(temper_observe_sample_cpu_seconds_total{{{node}}}[{RATE}])", "agent"),
                (f"rate(temper_observe_bpf_run_seconds_total{{{node}}}[{RATE}])",
                 "BPF programs (with bpf_stats_enabled)"),
            ],
            "percentunit",
        ),
        _panel(
            "Observation source (1: BPF, 0: procfs only)",
            [(f"temper_observe_bpf_loaded{{{node}}}", "{{instance}}")],
            "none",
            kind="stat",
        ),
    ]  # fmt: skip
    return _dashboard("temper-observe-node", "Temper / Node", [_instance()], panels)


def tier_dashboard() -> dict[str, Any]:
    """The pods of one tier on one node."""
    selector = 'instance=~"$instance", tier="$tier"'
    tier = _variable("tier", "label_values(temper_observe_tier_cpu_seconds_total, tier)", "Tier")
    panels = [
        _panel(
            "CPU by pod",
            [(f"sum by (namespace, pod) (rate(temper_observe_pod_cpu_seconds_total{{{selector}}}"
              f"[{RATE}]))", "{{namespace}}/{{pod}}")],
            "cores",
        ),
        _panel(
            "Run-queue delay per CPU second, by pod",
            [(f"sum by (namespace, pod) (rate(temper_observe_pod_runq_delay_seconds_total"
              f"{{{selector}}}[{RATE}])) / sum by (namespace, pod) (rate("
              f"temper_observe_pod_cpu_seconds_total{{{selector}}}[{RATE}]))",
              "{{namespace}}/{{pod}}")],
            "percentunit",
        ),
        _panel(
            "p99 wake-up delay by pod (BPF)",
            [(f"temper_observe_pod_runq_delay_p99_seconds{{{selector}}}",
              "{{namespace}}/{{pod}}")],
            "s",
        ),
        _panel(
            "Threads by pod",
            [(f"temper_observe_pod_threads{{{selector}}}", "{{namespace}}/{{pod}}")],
            "none",
        ),
    ]  # fmt: skip
    return _dashboard("temper-observe-tier", "Temper / Tier", [_instance(), tier], panels)


def pod_dashboard() -> dict[str, Any]:
    """One pod: CPU, waiting, tail latency of wake-ups, threads and context switches."""
    selector = 'instance=~"$instance", namespace="$namespace", pod="$pod"'
    namespace = _variable(
        "namespace", "label_values(temper_observe_pod_threads, namespace)", "Namespace"
    )
    pod = _variable(
        "pod", 'label_values(temper_observe_pod_threads{namespace="$namespace"}, pod)', "Pod"
    )
    panels = [
        _panel(
            "CPU",
            [(f"sum(rate(temper_observe_pod_cpu_seconds_total{{{selector}}}[{RATE}]))", "cpu")],
            "cores",
        ),
        _panel(
            "Run-queue delay (seconds waited per second)",
            [(f"sum(rate(temper_observe_pod_runq_delay_seconds_total{{{selector}}}[{RATE}]))",
              "waiting")],
            "s",
        ),
        _panel(
            "p99 wake-up delay (BPF)",
            [(f"temper_observe_pod_runq_delay_p99_seconds{{{selector}}}", "p99")],
            "s",
        ),
        _panel(
            "Context switches per second",
            [(f"sum by (kind) (rate(temper_observe_pod_context_switches_total{{{selector}}}"
              f"[{RATE}]))", "{{kind}}")],
            "ops",
        ),
        _panel(
            "Threads",
            [(f"temper_observe_pod_threads{{{selector}}}", "threads")],
            "none",
        ),
    ]  # fmt: skip
    return _dashboard("temper-observe-pod", "Temper / Pod", [_instance(), namespace, pod], panels)


DASHBOARDS = {
    "temper-node.json": node_dashboard,
    "temper-tier.json": tier_dashboard,
    "temper-pod.json": pod_dashboard,
}
