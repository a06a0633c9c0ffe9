"""Settings tree of the scheduler extender."""

from pydantic import Field

from temper.service import ServiceSettings


class ExtenderSettings(ServiceSettings):
    """Settings of ``temper extender``; environment variables start with TEMPER_EXTENDER_."""

    listen_address: str = Field("127.0.0.1", description="Address the HTTP server binds")
    port: int = Field(8888, ge=0, le=65535, description="TCP port of the HTTP server (0: any)")
    publish_interval_seconds: float = Field(
        10.0,
        gt=0,
        description="The agents' tier-load publish interval in seconds; an annotation older "
        "than three intervals counts as missing and gets the neutral score",
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest ExtenderArgs body accepted, in bytes; larger ones get HTTP 413",
    )
