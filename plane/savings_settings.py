"""Settings of the savings view, mixed into the plane's settings tree."""

from pathlib import Path

from pydantic import Field

from temper.settings import Settings


class SavingsSettings(Settings):
    """Settings for the savings view's price table."""

    price_table_path: Path | None = Field(
        None,
        description="YAML or JSON file of prices per machine type (currency, machineTypes: "
        "{TYPE: {cpuCoreHour, nodeHour}}, default); reread when it changes. Unset: savings "
        "are reported in CPU and nodes without prices",
    )
