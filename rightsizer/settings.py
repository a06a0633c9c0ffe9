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
        "shows in the request after about this long",
    )
    demand_percentile: float = Field(
        0.95,
        gt=0.5,
        le=1.0,
        description="Percentile of per-interval CPU demand (CPU time plus run-queue delay) "
        "that the request covers, as a fraction from 0.5 to 1",
    )
    margin_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Safety margin added to the demand percentile, as a fraction: 0.1 adds a tenth",
    )
    reaction_minutes: float = Field(
        6.0,
        ge=1.0,
        le=240.0,
        description="Minutes of recent history that detect a step up: once their median "
        "exceeds the window's percentile, their maximum plus a tenth sets the request, so a "
        "step up shows after about half this long",
    )
    min_cpu_millicores: int = Field(
        10, ge=1, description="Smallest CPU request recommended, in millicores"
    )
    recommend_limits: bool = Field(
        False,
        description="Also recommend a CPU limit (otherwise the limit is left unset and the "
        "recommendation says why)",
    )
