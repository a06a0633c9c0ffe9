"""Prices per machine type for the savings view, read from a YAML or JSON file.

The file maps a machine type, as the standard Node label ``node.kubernetes.io/instance-type``
names it, to a price per CPU-core-hour and per node-hour::

    currency: USD
    machineTypes:
      m6i.xlarge: {cpuCoreHour: 0.048, nodeHour: 0.192}
    default: {cpuCoreHour: 0.05, nodeHour: 0.2}

``default`` prices Nodes without the label and machine types the table does not list. Without
it, those Nodes stay unpriced and the savings view marks them unpriced instead of guessing a price.
"""

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from temper.errors import TemperError

log = logging.getLogger(__name__)

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# The label's name before Kubernetes 1.17; kubelets of some providers still set both.
LEGACY_INSTANCE_TYPE_LABEL = "beta.kubernetes.io/instance-type"
# 8760 hours a year divided by 12, the convention of cloud price lists.
HOURS_PER_MONTH = 730.0


class PriceTableError(TemperError):
    """The price table file is missing, unreadable or invalid."""


class MachinePrice(BaseModel):
    """Prices of one machine type, in the table's currency."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    cpu_core_hour: float = Field(alias="cpuCoreHour", ge=0.0, allow_inf_nan=False)
    node_hour: float = Field(alias="nodeHour", ge=0.0, allow_inf_nan=False)

    def to_json(self) -> dict[str, float]:
        """Return the API form."""
        return {"cpuCoreHour": self.cpu_core_hour, "nodeHour": self.node_hour}


class PriceTable(BaseModel):
    """Prices per machine type, with an optional price for unlisted and unlabelled Nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    currency: str = Field("USD", min_length=1, max_length=16)
    machine_types: dict[str, MachinePrice] = Field(default_factory=dict, alias="machineTypes")
    default: MachinePrice | None = None


class PriceSource(StrEnum):
    """Source of a machine type's price: its own table entry, the default, or none."""

    TABLE = "table"
    DEFAULT = "default"
    NONE = "none"


@dataclass(frozen=True)
class Price:
    """The price that applies to one machine type, or None with source ``none``."""

    price: MachinePrice | None
    source: PriceSource

    def cpu_per_hour(self, millicores: int) -> float | None:
        """Return the hourly price of ``millicores`` of CPU requests, None when unpriced."""
        return None if self.price is None else millicores / 1000 * self.price.cpu_core_hour

    def nodes_per_hour(self, nodes: int) -> float | None:
        """Return the hourly price of ``nodes`` Nodes, None when unpriced."""
        return None if self.price is None else nodes * self.price.node_hour


def lookup(table: PriceTable | None, machine_type: str | None) -> Price:
    """Return the price of ``machine_type`` (None: the Node has no instance-type label)."""
    if table is None:
        return Price(None, PriceSource.NONE)
    if machine_type is not None and machine_type in table.machine_types:
        return Price(table.machine_types[machine_type], PriceSource.TABLE)
    if table.default is not None:
        return Price(table.default, PriceSource.DEFAULT)
    return Price(None, PriceSource.NONE)


def node_machine_type(node: Mapping[str, Any]) -> str | None:
    """Return the Node's machine type from its instance-type label, or None without one."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    value = labels.get(INSTANCE_TYPE_LABEL) or labels.get(LEGACY_INSTANCE_TYPE_LABEL)
    return str(value) if value else None


def parse_price_table(text: str, source: str) -> PriceTable:
    """Parse a price table from YAML or JSON text; ``source`` names it in errors."""
    try:
        # A .json file gets the JSON parser, whose messages point at JSON syntax.
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PriceTableError(f"price table {source} is not valid YAML or JSON: {error}") from error
    if not isinstance(data, dict):
        raise PriceTableError(
            f"price table {source} must be a mapping with currency, machineTypes and default, "
            f"got {type(data).__name__}"
        )
    try:
        return PriceTable.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']} "
            f"(got {problem.get('input')!r})"
            for problem in error.errors()
        )
        raise PriceTableError(
            f"price table {source} is invalid: {problems}; prices are non-negative numbers per "
            "CPU-core-hour (cpuCoreHour) and per node-hour (nodeHour)"
        ) from error


def load_price_table(path: Path) -> PriceTable:
    """Read and validate the price table file at ``path``."""
    try:
        text = path.read_text()
    except OSError as error:
        raise PriceTableError(
            f"cannot read the price table {path}: {error}; fix --price-table-path"
        ) from error
    return parse_price_table(text, str(path))


class PriceBook:
    """The current price table, reread when its file changes.

    A file that becomes invalid is logged and the last valid table stays in use. ``error``
    then contains the reason, which the savings view reports.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.error: str | None = None
        self._table: PriceTable | None = None
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            # An invalid file at start-up stops the plane with the error.
            self._stamp = self._file_stamp(path)
            self._table = load_price_table(path)
            log.info(
                "price table loaded",
                extra={"path": str(path), "machine_types": len(self._table.machine_types)},
            )

    @staticmethod
    def _file_stamp(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> PriceTable | None:
        """Return the table, rereading the file first when it changed."""
        if self.path is None:
            return None
        stamp = self._file_stamp(self.path)
        if stamp == self._stamp:
            return self._table
        self._stamp = stamp
        try:
            table = load_price_table(self.path)
        except PriceTableError as error:
            self.error = f"{error}; still using the previous table"
            log.error(
                "price table changed but is invalid, keeping the previous one",
                extra={"path": str(self.path), "error": str(error)},
            )
            return self._table
        self._table = table
        self.error = None
        log.info(
            "price table reloaded",
            extra={"path": str(self.path), "machine_types": len(table.machine_types)},
        )
        return table


def per_month(per_hour: float | None) -> float | None:
    """Return the monthly amount of an hourly one (730 hours a month)."""
    return None if per_hour is None else per_hour * HOURS_PER_MONTH


def rounded(amount: float | None) -> float | None:
    """Round a money amount to 6 decimals for the API, keeping None."""
    if amount is None or not math.isfinite(amount):
        return None
    return round(amount, 6)
