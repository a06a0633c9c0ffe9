"""Containers and recommendations for the tests of the rightsizer's tracking applier."""

from typing import Any

from rightsizer.annotation import ContainerAdvice, Status, WorkloadRecommendation

# The CPU request that container() gives by default, and that recommendations report as current.
DEFAULT_CPU_REQUEST = "2"


def container(
    name: str = "app",
    cpu_request: str | None = DEFAULT_CPU_REQUEST,
    cpu_limit: str | None = None,
    memory: str | None = None,
) -> dict[str, Any]:
    """Build a container spec. ``memory`` sets both its request and its limit."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if cpu_request is not None:
        requests["cpu"] = cpu_request
    if cpu_limit is not None:
        limits["cpu"] = cpu_limit
    if memory is not None:
        requests["memory"] = limits["memory"] = memory
    return {
        "name": name,
        "image": "registry.invalid/app:1",
        "resources": {"requests": requests, "limits": limits},
    }


def tracking_recommendation(
    tracking_m: int | None,
    *,
    request_m: int,
    computed: float,
    window_end: float,
    status: Status = Status.PROPOSED,
    tracking_seconds: float | None = 300,
    containers: tuple[str, ...] = ("app",),
) -> WorkloadRecommendation:
    """Build a recommendation with a one-day window ending at ``window_end`` that gives every
    container in ``containers`` the same advice: a request of ``request_m``, a tracking
    request of ``tracking_m`` and a current request of 2000m."""
    advice = ContainerAdvice(
        request_millicores=request_m,
        limit_millicores=None,
        limit_reason="",
        current_request_millicores=2000,
        current_limit_millicores=None,
        confidence=1.0,
        basis="window",
        tracking_request_millicores=tracking_m,
    )
    return WorkloadRecommendation(
        timestamp_seconds=computed,
        window_start_seconds=window_end - 86400,
        window_end_seconds=window_end,
        observed_seconds=86400,
        pods=1,
        containers=dict.fromkeys(containers, advice),
        status=status,
        tracking_seconds=tracking_seconds,
    )
