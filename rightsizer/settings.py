"""Settings tree of the rightsizer."""

from pydantic import Field

from temper.service import ServiceSettings


class RightsizerSettings(ServiceSettings):
    """Settings of ``temper rightsize``; environment variables start with TEMPER_RIGHTSIZE_."""

    observe_urls: list[str] = Field(
        default_factory=list,
        description="URL of an agent's /observe endpoint to collect per-thread history from",
    )
    history_path: str = Field(
        "temper-history.sqlite", description="SQLite file that keeps per-thread history"
    )
    retention_days: float = Field(14.0, gt=0, description="Days of history kept")
