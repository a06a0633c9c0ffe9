"""Settings tree of the management plane."""

from pathlib import Path

from pydantic import Field

from plane.explorer_settings import ExplorerSettings
from plane.hub_settings import HubSettings
from plane.savings_settings import SavingsSettings
from temper.service import ServiceSettings


class PlaneSettings(ExplorerSettings, SavingsSettings, HubSettings, ServiceSettings):
    """Settings of ``temper plane``; environment variables start with TEMPER_PLANE_."""

    listen_address: str = Field(
        "127.0.0.1", description="Address the REST API listens on (0.0.0.0 in a pod)"
    )
    port: int = Field(9410, ge=0, le=65535, description="TCP port of the REST API (0: any)")
    database_path: Path = Field(
        Path("/var/lib/temper/plane.sqlite3"),
        description="SQLite file holding the API tokens and the audit log; created when missing",
    )
    safe_mode_namespace: str = Field(
        "temper",
        min_length=1,
        description="Namespace whose temper.codes/safe-mode-requested annotation stops "
        "enforcement on every node (the agents' --safe-mode-namespace)",
    )
    eviction_grace_period_seconds: int | None = Field(
        None,
        ge=0,
        le=86_400,
        description="Grace period in seconds passed with each eviction of a drain; default: "
        "each pod's terminationGracePeriodSeconds",
    )
    kube_request_timeout_seconds: float = Field(
        30.0,
        gt=0.0,
        le=600.0,
        description="Seconds one request of an action to the API server may take",
    )
