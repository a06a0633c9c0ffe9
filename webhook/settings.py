"""Settings tree of the overcommit webhook."""

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from temper.service import ServiceSettings
from temper.settings import Settings
from temper.tiers import Tier

# kube-apiserver v1.37 rejects request bodies above 3 MiB (MaxRequestBodyBytes in the
# k8s.io/apiserver server config), so the AdmissionReview of any Pod it stored fits in 4 MiB.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


class WebhookSettings(ServiceSettings):
    """Settings of ``temper webhook``; environment variables start with TEMPER_WEBHOOK_."""

    listen_address: str = Field("127.0.0.1", description="Address the HTTPS server binds")
    port: int = Field(8443, ge=0, le=65535, description="TCP port of the HTTPS server (0: any)")
    tls_cert_file: Path | None = Field(
        None,
        description="PEM serving certificate, reloaded when the file changes. Without it a CA "
        "and a certificate are generated, and the CA goes into the registered "
        "MutatingWebhookConfiguration",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of --tls-cert-file")
    tls_ca_file: Path | None = Field(
        None,
        description="PEM CA that signed --tls-cert-file, written to caBundle on registration. "
        "Without it caBundle stays empty, so the API server uses its system trust store",
    )
    tls_reload_interval_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds between checks of --tls-cert-file and --tls-key-file for changes",
    )
    service_dns_names: list[str] = Field(
        [],
        description="Extra DNS names of the generated serving certificate, such as "
        "temper-webhook.temper-system.svc for the in-cluster Service",
    )
    register_webhook_url: str | None = Field(
        None,
        description="When set (e.g. https://127.0.0.1:8443/mutate), create or update the "
        "MutatingWebhookConfiguration temper-overcommit at start with this clientConfig.url",
    )
    max_request_bytes: int = Field(
        DEFAULT_MAX_REQUEST_BYTES,
        ge=1024,
        description="Maximum AdmissionReview body size in bytes, larger bodies get HTTP 413",
    )
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

    @field_validator("register_webhook_url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        # The API server accepts only https URLs without credentials, query or fragment.
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{url!r} must be an https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"{url!r} must not contain user info, a query or a fragment")
        return url

    @field_validator("tls_key_file")
    @classmethod
    def _check_key_file(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        if (info.data.get("tls_cert_file") is None) != (key_file is None):
            raise ValueError("set both --tls-cert-file and --tls-key-file, or neither")
        return key_file

    @field_validator("tls_ca_file")
    @classmethod
    def _check_ca_file(cls, ca_file: Path | None, info: ValidationInfo) -> Path | None:
        if ca_file is not None and info.data.get("tls_cert_file") is None:
            raise ValueError("--tls-ca-file needs --tls-cert-file and --tls-key-file")
        return ca_file

    def tier_factors(self) -> dict[Tier, float]:
        """Return the request factor of each tier that may be scaled (every tier but critical)."""
        return {
            Tier.HIGH: self.high_factor,
            Tier.NORMAL: self.normal_factor,
            Tier.LOW: self.low_factor,
            Tier.BACKGROUND: self.background_factor,
        }


class RevertSettings(Settings):
    """Options of ``temper webhook revert``.

    Environment variables start with TEMPER_WEBHOOK_REVERT_.
    """

    kubeconfig: str | None = Field(
        None,
        description="Path of a kubeconfig file (default: $KUBECONFIG or ~/.kube/config; in a "
        "pod the service account)",
    )
    namespace: str | None = Field(None, description="Namespace whose mutated pods are listed")
    all_namespaces: bool = Field(False, description="List mutated pods in every namespace")
    apply: bool = Field(
        False,
        description="Resize the pods back to their original CPU requests and remove the "
        "annotation; without it the command only lists what it would do",
    )

    @field_validator("all_namespaces")
    @classmethod
    def _check_scope(cls, all_namespaces: bool, info: ValidationInfo) -> bool:
        if (info.data.get("namespace") is None) != all_namespaces:
            raise ValueError("pass exactly one of --namespace NAME and --all-namespaces")
        return all_namespaces
