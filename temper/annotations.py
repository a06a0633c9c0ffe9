"""The ``temper.codes/`` annotation and label contract, with typed values.

Every value is compact JSON carrying a schema version ``v``. Parsers raise
:class:`~temper.errors.InvalidAnnotationError` naming the key and the bad value; callers
report it with the object and carry on without that value.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from temper.errors import InvalidAnnotationError
from temper.tiers import Tier

DOMAIN = "temper.codes"
TIER_LOAD = f"{DOMAIN}/tier-load"
SCHEDULER = f"{DOMAIN}/scheduler"
SAFE_MODE_REQUESTED = f"{DOMAIN}/safe-mode-requested"
OVERCOMMIT_LABEL = f"{DOMAIN}/overcommit"
OVERCOMMIT_ENABLED = "enabled"
ORIGINAL_REQUESTS = f"{DOMAIN}/original-requests"
PROFILE = f"{DOMAIN}/profile"
RECOMMENDATION = f"{DOMAIN}/recommendation"
# Opt-in label of the rightsizer's applier, on a Namespace or a workload object.
RIGHTSIZE_APPLY_LABEL = f"{DOMAIN}/rightsize-apply"
RIGHTSIZE_APPLY_TRACKING = "tracking"
RIGHTSIZE_APPLY_OFF = "off"
RIGHTSIZE_APPLIED = f"{DOMAIN}/rightsize-applied"

TIER_LOAD_VERSION = 1
ORIGINAL_REQUESTS_VERSION = 1

# Values of the ``temper.codes/scheduler`` annotation (``unsupported: <reason>`` is prefixed).
SCHEDULER_SCX_LAYERED = "scx_layered"
SCHEDULER_STOCK = "stock"
SCHEDULER_STOCK_KERNEL_MODE = "stock-kernel-mode"
SCHEDULER_SAFE_MODE = "safe-mode"
SCHEDULER_UNSUPPORTED_PREFIX = "unsupported: "


def dumps(value: Any) -> str:
    """Serialise an annotation value as compact JSON with sorted keys."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _loads_object(key: str, raw: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidAnnotationError(
            f"annotation {key}={raw[:200]!r} is not valid JSON: {error}"
        ) from error
    if not isinstance(value, dict):
        raise InvalidAnnotationError(f"annotation {key}={raw[:200]!r} must be a JSON object")
    return value


def _int_field(key: str, data: Mapping[str, Any], name: str, *, minimum: int = 0) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidAnnotationError(
            f"annotation {key}: field {name!r} is {value!r}, expected an integer >= {minimum}"
        )
    return value


@dataclass(frozen=True)
class TierLoadEntry:
    """Load of one tier on one node."""

    requested_cpu_millicores: int = 0
    used_cpu_millicores: int = 0
    runq_delay_p99_us: int = 0
    # CPU still available to this tier at its protection level: fenced CPUs for critical,
    # grouped capacity for high and normal, idle capacity for the batch tiers.
    protection_capacity_millicores: int = 0
    pods: int = 0

    def to_json(self) -> dict[str, int]:
        """Return the wire form with the short field names of the contract."""
        return {
            "req_m": self.requested_cpu_millicores,
            "used_m": self.used_cpu_millicores,
            "rqd_p99_us": self.runq_delay_p99_us,
            "cap_m": self.protection_capacity_millicores,
            "pods": self.pods,
        }


@dataclass(frozen=True)
class TierLoad:
    """Value of ``temper.codes/tier-load`` on a Node."""

    timestamp_seconds: float
    node_cpu_millicores: int
    tiers: Mapping[Tier, TierLoadEntry] = field(default_factory=dict)

    def encode(self) -> str:
        """Return the annotation value."""
        return dumps(
            {
                "v": TIER_LOAD_VERSION,
                "ts": round(self.timestamp_seconds, 3),
                "cpu_m": self.node_cpu_millicores,
                "tiers": {tier.value: entry.to_json() for tier, entry in self.tiers.items()},
            }
        )

    @classmethod
    def decode(cls, raw: str) -> "TierLoad":
        """Parse an annotation value; raise InvalidAnnotationError naming the bad field."""
        data = _loads_object(TIER_LOAD, raw)
        if data.get("v") != TIER_LOAD_VERSION:
            raise InvalidAnnotationError(
                f"annotation {TIER_LOAD}: schema version v={data.get('v')!r} is not supported, "
                f"expected {TIER_LOAD_VERSION}; upgrade the reader or the agent"
            )
        timestamp = data.get("ts")
        if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
            raise InvalidAnnotationError(
                f"annotation {TIER_LOAD}: field 'ts' is {timestamp!r}, expected Unix seconds"
            )
        raw_tiers = data.get("tiers")
        if not isinstance(raw_tiers, dict):
            raise InvalidAnnotationError(
                f"annotation {TIER_LOAD}: field 'tiers' is {raw_tiers!r}, expected an object"
            )
        tiers: dict[Tier, TierLoadEntry] = {}
        for name, entry in raw_tiers.items():
            try:
                tier = Tier(name)
            except ValueError as error:
                raise InvalidAnnotationError(
                    f"annotation {TIER_LOAD}: unknown tier {name!r}, expected one of "
                    f"{', '.join(t.value for t in Tier)}"
                ) from error
            if not isinstance(entry, dict):
                raise InvalidAnnotationError(
                    f"annotation {TIER_LOAD}: tier {name!r} is {entry!r}, expected an object"
                )
            tiers[tier] = TierLoadEntry(
                requested_cpu_millicores=_int_field(TIER_LOAD, entry, "req_m"),
                used_cpu_millicores=_int_field(TIER_LOAD, entry, "used_m"),
                runq_delay_p99_us=_int_field(TIER_LOAD, entry, "rqd_p99_us"),
                protection_capacity_millicores=_int_field(TIER_LOAD, entry, "cap_m"),
                pods=_int_field(TIER_LOAD, entry, "pods"),
            )
        return cls(
            timestamp_seconds=float(timestamp),
            node_cpu_millicores=_int_field(TIER_LOAD, data, "cpu_m"),
            tiers=tiers,
        )


@dataclass(frozen=True)
class OriginalRequests:
    """Value of ``temper.codes/original-requests`` on a Pod: CPU requests before mutation.

    ``containers`` and ``init_containers`` map a container name to its original CPU request
    as written in the pod spec, or None when the container had no CPU request.
    """

    containers: Mapping[str, str | None]
    init_containers: Mapping[str, str | None] = field(default_factory=dict)

    def encode(self) -> str:
        """Return the annotation value."""
        value: dict[str, Any] = {"v": ORIGINAL_REQUESTS_VERSION, "cpu": dict(self.containers)}
        if self.init_containers:
            value["initCpu"] = dict(self.init_containers)
        return dumps(value)

    @classmethod
    def decode(cls, raw: str) -> "OriginalRequests":
        """Parse an annotation value; raise InvalidAnnotationError naming the bad field."""
        data = _loads_object(ORIGINAL_REQUESTS, raw)
        if data.get("v") != ORIGINAL_REQUESTS_VERSION:
            raise InvalidAnnotationError(
                f"annotation {ORIGINAL_REQUESTS}: schema version v={data.get('v')!r} is not "
                f"supported, expected {ORIGINAL_REQUESTS_VERSION}"
            )
        parsed: list[dict[str, str | None]] = []
        for name in ("cpu", "initCpu"):
            section = data.get(name, {})
            if not isinstance(section, dict) or not all(
                isinstance(v, str) or v is None for v in section.values()
            ):
                raise InvalidAnnotationError(
                    f"annotation {ORIGINAL_REQUESTS}: field {name!r} is {section!r}, expected "
                    "an object of container name to CPU quantity or null"
                )
            parsed.append(section)
        return cls(containers=parsed[0], init_containers=parsed[1])


def is_safe_mode_requested(annotations: Mapping[str, str] | None) -> bool:
    """True when ``temper.codes/safe-mode-requested`` is ``"true"`` (case-insensitive)."""
    if not annotations:
        return False
    return str(annotations.get(SAFE_MODE_REQUESTED, "")).strip().lower() == "true"
