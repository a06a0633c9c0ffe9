"""The exception hierarchy shared by every component.

Third-party errors (the Kubernetes clients, aiohttp, the filesystem) are translated into these
at the boundary and chained with ``raise ... from``.
"""


class TemperError(Exception):
    """Base class of every error Temper raises on purpose."""


class InvalidSettingsError(TemperError):
    """A setting is missing or out of range; the message names its path and the valid values."""


class InvalidQuantityError(TemperError, ValueError):
    """A Kubernetes resource quantity could not be parsed."""


class InvalidAnnotationError(TemperError, ValueError):
    """A ``temper.codes/`` annotation value does not match its schema."""


class KubernetesError(TemperError):
    """A call to the Kubernetes API server failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ResourceExpiredError(KubernetesError):
    """A watch resourceVersion is too old (HTTP 410 Gone); the caller must relist."""


class ControlPlaneError(TemperError):
    """The local control plane (etcd, kube-apiserver, kube-scheduler) failed to start or stop."""
