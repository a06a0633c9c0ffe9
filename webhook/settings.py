"""Settings tree of the overcommit webhook."""

from pathlib import Path

from pydantic import Field

from temper.service import ServiceSettings


class WebhookSettings(ServiceSettings):
    """Settings of ``temper webhook``; environment variables start with TEMPER_WEBHOOK_."""

    listen_address: str = Field("127.0.0.1", description="Address the HTTPS server binds")
    port: int = Field(8443, ge=0, le=65535, description="TCP port of the HTTPS server (0: any)")
    tls_cert_file: Path | None = Field(
        None,
        description="PEM serving certificate; without it a CA and certificate are generated "
        "and the CA is injected into the MutatingWebhookConfiguration",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of --tls-cert-file")
    high_factor: float = Field(
        0.8, gt=0, le=1, description="Factor applied to CPU requests of high-tier pods"
    )
    normal_factor: float = Field(
        0.6, gt=0, le=1, description="Factor applied to CPU requests of normal-tier pods"
    )
    low_factor: float = Field(
        0.4, gt=0, le=1, description="Factor applied to CPU requests of low-tier pods"
    )
    background_factor: float = Field(
        0.25, gt=0, le=1, description="Factor applied to CPU requests of background-tier pods"
    )
    min_cpu_millicores: int = Field(
        10, ge=1, description="Floor of a scaled CPU request, in millicores"
    )
