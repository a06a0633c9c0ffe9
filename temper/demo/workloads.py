"""The demo's workloads: pods in all five tiers, created in this order."""

from dataclasses import dataclass

from temper.tiers import Tier


@dataclass(frozen=True)
class Workload:
    """One demo pod."""

    name: str
    tier: Tier | None  # None: no PriorityClass, so the pod lands in the normal tier
    cpu_request: str
    cpu_limit: str | None = None
    memory: str = "256Mi"


WORKLOADS = (
    Workload("payments-db", Tier.CRITICAL, "1500m", "1500m"),
    Workload("checkout-api", Tier.CRITICAL, "1"),
    Workload("search-api", Tier.HIGH, "1"),
    Workload("catalog-api", Tier.HIGH, "500m"),
    Workload("web-frontend", Tier.NORMAL, "500m"),
    Workload("admin-ui", None, "250m"),
    Workload("report-builder", Tier.LOW, "1"),
    Workload("etl-nightly", Tier.LOW, "1500m"),
    Workload("log-compactor", Tier.BACKGROUND, "1"),
    Workload("ml-training", Tier.BACKGROUND, "2"),
)
