"""Settings of the multi-cluster hub, mixed into the plane's settings tree."""

from pathlib import Path

from pydantic import Field

from temper.settings import Settings


class HubSettings(Settings):
    """Settings of the hub: this cluster's name, the key of stored peer tokens, peer access."""

    hub_enabled: bool = Field(
        False,
        description="Serve the multi-cluster hub routes under /api/v1/hub; every plane serves "
        "as a peer of a hub either way",
    )
    hub_allowed_peers: list[str] = Field(
        default_factory=list,
        description="Hosts (host or host:port) that peer URLs may name; empty: any host",
    )

    hub_cluster_name: str = Field(
        "local",
        min_length=1,
        max_length=63,
        pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Name of this plane's own cluster in the hub's views; peers may not use it",
    )
    hub_key_path: Path = Field(
        Path("/var/lib/temper/plane-hub.key"),
        description="File with the secret that encrypts the peer tokens stored in the "
        "database; created with mode 0600 when missing. Keep it outside the database's volume "
        "(the Helm chart mounts it from a Secret)",
    )
    hub_peer_timeout_seconds: float = Field(
        5.0,
        gt=0.0,
        le=120.0,
        description="Seconds one request from the hub to a peer plane may take; a slower peer "
        "is reported unreachable",
    )
    hub_ca_file: Path | None = Field(
        None,
        description="PEM file of the certificate authorities that sign peer planes' https "
        "certificates; unset: the system's trust store",
    )
