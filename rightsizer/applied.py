"""The ``temper.codes/rightsize-applied`` annotation on a pod: the applier's last resizes.

Compact JSON with sorted keys, schema version 1::

    {"v": 1, "containers": {"app": {"ts": 1733333333, "old_m": 2000, "new_m": 1180,
                                    "orig_m": 2000}}}

Per container: when the applier last resized it (``ts``, Unix seconds), the CPU request
before and after that resize, and ``orig_m``, the request the container had before the
applier first resized it, all in millicores. Containers the applier never resized are absent.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from rightsizer.resizeplan import ContainerChange
from temper.annotations import RIGHTSIZE_APPLIED, dumps
from temper.errors import InvalidAnnotationError

APPLIED_VERSION = 1


@dataclass(frozen=True)
class AppliedResize:
    """The last resize of one container; CPU in millicores."""

    timestamp_seconds: float
    old_millicores: int
    new_millicores: int
    original_millicores: int


def decode_applied(raw: str) -> dict[str, AppliedResize]:
    """Parse an annotation value; raise InvalidAnnotationError naming the problem."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidAnnotationError(
            f"annotation {RIGHTSIZE_APPLIED}={raw[:200]!r} is not valid JSON: {error}"
        ) from error
    if not isinstance(data, dict) or data.get("v") != APPLIED_VERSION:
        raise InvalidAnnotationError(
            f"annotation {RIGHTSIZE_APPLIED}={raw[:200]!r}: expected schema version "
            f"v={APPLIED_VERSION}"
        )
    try:
        return {
            str(name): AppliedResize(
                timestamp_seconds=float(entry["ts"]),
                old_millicores=int(entry["old_m"]),
                new_millicores=int(entry["new_m"]),
                original_millicores=int(entry["orig_m"]),
            )
            for name, entry in data["containers"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InvalidAnnotationError(
            f"annotation {RIGHTSIZE_APPLIED}={raw[:200]!r} does not match schema v1: {error!r}"
        ) from error


def encode_applied(resizes: dict[str, AppliedResize]) -> str:
    """Return the annotation value."""
    containers: dict[str, Any] = {
        name: {
            "ts": round(resize.timestamp_seconds),
            "old_m": resize.old_millicores,
            "new_m": resize.new_millicores,
            "orig_m": resize.original_millicores,
        }
        for name, resize in resizes.items()
    }
    return dumps({"v": APPLIED_VERSION, "containers": containers})


def record_changes(
    previous: dict[str, AppliedResize], changes: Iterable[ContainerChange], now_seconds: float
) -> dict[str, AppliedResize]:
    """Return the record after ``changes``, keeping each container's original request."""
    resizes = dict(previous)
    for change in changes:
        earlier = previous.get(change.name)
        original = change.old_millicores if earlier is None else earlier.original_millicores
        resizes[change.name] = AppliedResize(
            now_seconds, change.old_millicores, change.new_millicores, original
        )
    return resizes
