"""Settings tree of the rightsizer."""

from pydantic import Field

from temper.service import ServiceSettings


class RightsizerSettings(ServiceSettings):
    """Settings of ``temper rightsize``; environment variables start with TEMPER_RIGHTSIZE_."""

    observe_urls: list[str] = Field(
        [],
        description="URL of an agent's /observe endpoint to collect per-thread history from",
    )
    history_path: str = Field(
        "temper-history.sqlite", description="SQLite file that keeps per-thread history"
    )
    retention_days: float = Field(
        14.0, gt=0, description="Days of history kept; older intervals are deleted"
    )
    collect_interval_seconds: float = Field(
        10.0,
        ge=0.5,
        le=600.0,
        description="Seconds between two reads of every agent's /observe snapshot; each "
        "stored interval covers this long",
    )
    request_timeout_seconds: float = Field(
        5.0, gt=0, le=60.0, description="Seconds one /observe request may take"
    )
    window_hours: float = Field(
        24.0,
        gt=0,
        le=24.0 * 90,
        description="Hours of history a recommendation looks at; a step down in demand "
        "shows in the reviewed request after about this long",
    )
    target_seconds_above_ratio: float = Field(
        0.05,
        ge=0.0,
        lt=0.5,
        description="Risk budget: the share of time the container's CPU demand (CPU time plus "
        "run-queue delay) may exceed the request, as a fraction from 0 to 0.5. The reviewed "
        "request is the (1 - ratio) percentile of demand over the window; the tracking "
        "request is sized so that the same share of past intervals would have been above it. "
        "Measured over collected intervals, so use that varies within an interval adds "
        "seconds above",
    )
    margin_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Safety margin added to both requests, as a fraction: 0.1 adds a tenth",
    )
    reaction_minutes: float = Field(
        6.0,
        ge=1.0,
        le=240.0,
        description="Minutes of recent history that detect a step up: once their median "
        "exceeds the level a request covers, their maximum plus a tenth sets that request, so "
        "a step up shows after about half this long",
    )
    apply_interval_minutes: float = Field(
        5.0,
        ge=1.0,
        le=60.0,
        description="Minutes between two in-place applications of the tracking request by "
        "`temper rightsize apply` (its pass interval) or another automation: the tracking "
        "request covers this long after it is computed. The reviewed request covers the "
        "whole window and ignores this",
    )
    level_minutes: float = Field(
        30.0,
        ge=5.0,
        le=240.0,
        description="Minutes of recent demand whose mean is the level that the tracking "
        "request follows",
    )
    min_cpu_millicores: int = Field(
        10,
        ge=1,
        description="Smallest CPU request recommended, and the smallest one `apply` sets, "
        "in millicores",
    )
    recommend_limits: bool = Field(
        False,
        description="Also recommend a CPU limit (otherwise the limit is left unset and the "
        "recommendation says why)",
    )
    apply_tracking_enabled: bool = Field(
        False,
        description="Let `temper rightsize apply` resize the running pods of opted-in "
        "workloads (label temper.codes/rightsize-apply=tracking on the Namespace or the "
        "workload) in place to their tracking request. Off: `apply` only reports what it "
        "would resize and writes nothing",
    )
    apply_hysteresis_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Resize a container only when its bounded tracking request differs from "
        "its current CPU request by more than this fraction of the current request",
    )
    apply_max_resized_pods: int = Field(
        20,
        ge=1,
        le=10000,
        description="Maximum number of pods resized in place per apply interval; the others "
        "wait for the next interval. Pods with an increase go first, then the largest change",
    )
    listen_address: str = Field(
        "127.0.0.1",
        description="Address of the /metrics and /healthz server while `apply` runs as a "
        "service (without --ticks)",
    )
    port: int = Field(9404, ge=0, le=65535, description="TCP port of that server (0: any)")
