"""Prometheus metrics of the agent, in a registry of its own."""

from prometheus_client import CollectorRegistry, Counter, Gauge


class AgentMetrics:
    """Every metric the agent exports; label cardinality stays bounded (tier, reason)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "temper_agent_reconciles_total",
            "Layer config recomputations",
            registry=self.registry,
        )
        self.config_writes = Counter(
            "temper_agent_config_writes_total",
            "Times a changed scx_layered config was written",
            registry=self.registry,
        )
        self.invalid_configs = Counter(
            "temper_agent_invalid_configs_total",
            "Generated configs rejected by validation (the previous config stays)",
            registry=self.registry,
        )
        self.layers = Gauge(
            "temper_agent_layers", "Layers in the current config", registry=self.registry
        )
        self.tier_pods = Gauge(
            "temper_agent_tier_pods", "Pods per tier", ["tier"], registry=self.registry
        )
        self.tier_requested = Gauge(
            "temper_agent_tier_requested_cpu_millicores",
            "Sum of CPU requests per tier, in millicores",
            ["tier"],
            registry=self.registry,
        )
        self.invalid_objects = Counter(
            "temper_agent_invalid_objects_total",
            "Pods or annotations ignored because a value was invalid",
            ["reason"],
            registry=self.registry,
        )
        self.publish_errors = Counter(
            "temper_agent_publish_errors_total",
            "Failed writes of the Node annotations",
            registry=self.registry,
        )
        self.scheduler_restarts = Gauge(
            "temper_agent_scheduler_restarts",
            "scx_layered restarts caused by config changes since the agent started",
            registry=self.registry,
        )
        self.scheduler_failures = Gauge(
            "temper_agent_scheduler_failures",
            "scx_layered starts that failed or crashed since the agent started",
            registry=self.registry,
        )
        self.blackout_seconds = Gauge(
            "temper_agent_scheduler_blackout_seconds",
            "Seconds the node ran the stock scheduler during scx_layered restarts",
            registry=self.registry,
        )
        self.unenforced_limit_pods = Gauge(
            "temper_agent_unenforced_cpu_limit_pods",
            "Pods with a CPU limit that scx_layered does not enforce through cpu.max; the "
            "agent bounds them with a -limited layer in whole CPUs",
            registry=self.registry,
        )
        self.enforcing = Gauge(
            "temper_agent_enforcing",
            "1 while scx_layered enforces the tiers on this node",
            registry=self.registry,
        )
