"""Settings of the explorer, the live event stream, the agent proxy and drain, mixed into the
plane's settings tree."""

import string

from pydantic import Field, field_validator

from temper.settings import Settings

AGENT_URL_PLACEHOLDERS = frozenset({"node_name", "node_ip"})


class ExplorerSettings(Settings):
    """Settings for finding node agents, streaming events and logs, and draining nodes."""

    agent_namespace: str = Field(
        "temper",
        min_length=1,
        max_length=63,
        pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace of the agent pods, searched for the agent of a node",
    )
    agent_label_selector: str = Field(
        "app.kubernetes.io/component=agent",
        min_length=1,
        max_length=1000,
        description="Label selector of the agent pods (the Helm chart's agent labels)",
    )
    agent_port: int = Field(
        9402,
        ge=1,
        le=65535,
        description="TCP port of the agent's /observe, /config and /trace endpoints on its pod IP",
    )
    agent_url_template: str = Field(
        "",
        max_length=1000,
        description="Base URL of a node's agent with the placeholders {node_name} and "
        "{node_ip} (the Node's InternalIP), for example http://{node_ip}:9402; empty: the "
        "pod IP of the agent pod on the node",
    )
    agent_timeout_seconds: float = Field(
        5.0,
        gt=0.0,
        le=120.0,
        description="Seconds one request to a node agent may take (a trace capture gets its "
        "length on top); a slower agent is reported with HTTP 504",
    )
    agent_max_response_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest /observe or /config body read from an agent, in bytes",
    )
    trace_max_seconds: float = Field(
        60.0,
        gt=0.0,
        le=600.0,
        description="Maximum length of a trace capture the plane requests from an agent, in "
        "seconds (the agent applies its own --trace-max-seconds too)",
    )
    events_keepalive_seconds: float = Field(
        15.0,
        gt=0.0,
        le=300.0,
        description="Seconds between keepalive comments on an idle event stream",
    )
    events_queue_size: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Events buffered per event-stream client; a client that falls further "
        "behind gets an overflow event and is disconnected, and must reconnect",
    )
    events_max_clients: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Event streams open at once; further clients get HTTP 503",
    )
    log_limit_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest container log the API server returns for one request without "
        "follow (its limitBytes), in bytes",
    )
    drain_timeout_seconds: float = Field(
        60.0,
        ge=0.0,
        le=3600.0,
        description="Seconds a drain keeps retrying evictions a PodDisruptionBudget blocks and "
        "waits for evicted pods to go, unless the request sets timeoutSeconds; 0: one pass",
    )
    drain_retry_interval_seconds: float = Field(
        5.0,
        gt=0.0,
        le=300.0,
        description="Seconds between two eviction attempts of a blocked pod, and between two "
        "checks whether evicted pods are gone",
    )

    @field_validator("agent_url_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        if not value:
            return value
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as error:
            raise ValueError(f"{value!r} is not a valid URL template: {error}") from error
        unknown = names - AGENT_URL_PLACEHOLDERS
        if unknown:
            raise ValueError(
                f"unknown placeholders {sorted(unknown)} in {value!r}; use {{node_name}} and "
                "{node_ip}"
            )
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/")
