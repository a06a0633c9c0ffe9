"""CPU constraints of each namespace's LimitRanges, kept in memory from a watch.

The LimitRanger admission plugin validates a pod after the mutating webhooks, so a CPU request
scaled below a LimitRange ``min``, or far enough below its limit to exceed
``maxLimitRequestRatio``, gets the pod rejected. The admission handler reads the constraints
from :class:`LimitRangeIndex`, which a Reflector on ``/api/v1/limitranges`` feeds, and never
calls the API server itself.

The arithmetic copies LimitRanger in kube-apiserver v1.37
(``plugin/pkg/admission/limitranger/admission.go``): quantities compare as millicores rounded
up, and a ratio check fails when ``float(limit) / float(request) * 1000`` exceeds the ratio in
millis.
"""

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from temper.errors import InvalidQuantityError
from temper.kube import object_key
from temper.quantity import cpu_millicores, parse_quantity

log = logging.getLogger(__name__)

LIMIT_RANGES_PATH = "/api/v1/limitranges"


@dataclass(frozen=True)
class CpuLimitRange:
    """CPU constraints that LimitRanger enforces in one namespace.

    Minimums are in millicores, 0 when no LimitRange sets one. A ratio bounds
    ``limit / request`` and is None when no LimitRange sets one. Several LimitRanges in a
    namespace all apply, so they combine to the largest minimum and the smallest ratio.
    """

    container_min_millicores: int = 0
    container_max_limit_request_ratio: Decimal | None = None
    pod_min_millicores: int = 0
    pod_max_limit_request_ratio: Decimal | None = None

    def combine(self, other: "CpuLimitRange") -> "CpuLimitRange":
        """Return the constraints a pod must meet to satisfy both ``self`` and ``other``."""
        return CpuLimitRange(
            container_min_millicores=max(
                self.container_min_millicores, other.container_min_millicores
            ),
            container_max_limit_request_ratio=_smaller_ratio(
                self.container_max_limit_request_ratio, other.container_max_limit_request_ratio
            ),
            pod_min_millicores=max(self.pod_min_millicores, other.pod_min_millicores),
            pod_max_limit_request_ratio=_smaller_ratio(
                self.pod_max_limit_request_ratio, other.pod_max_limit_request_ratio
            ),
        )


NO_LIMIT_RANGE = CpuLimitRange()


def _smaller_ratio(first: Decimal | None, second: Decimal | None) -> Decimal | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


def ratio_millis(ratio: Decimal) -> int:
    """Return the ratio in millis rounded up, as ``Quantity.MilliValue`` does."""
    return math.ceil(ratio * 1000)


def ratio_exceeded(limit_millicores: int, request_millicores: int, ratio: Decimal) -> bool:
    """Return True when LimitRanger would reject ``limit / request`` against ``ratio``.

    A request of 0 always fails the check, as in LimitRanger.
    """
    if request_millicores <= 0 or limit_millicores <= 0:
        return True
    observed = float(limit_millicores) / float(request_millicores) * 1000
    return observed > float(ratio_millis(ratio))


def ratio_floor_millicores(limit_millicores: int, ratio: Decimal) -> int:
    """Return the smallest request in millicores that keeps ``limit / request`` within ratio."""
    millis = ratio_millis(ratio)
    floor = -(-limit_millicores * 1000 // millis)
    # The exact bound can still fail LimitRanger's float comparison by one unit in the last
    # place, so step up until that same comparison passes.
    while ratio_exceeded(limit_millicores, floor, ratio):
        floor += 1
    return floor


def pod_cpu_total(
    containers: Sequence[int | None], init_containers: Sequence[tuple[int | None, bool]]
) -> int | None:
    """Aggregate per-container CPU values the way LimitRanger does for type Pod.

    ``containers`` holds the value of each regular container and ``init_containers`` the value
    and the restartable (sidecar) flag of each init container, in spec order; None means the
    container does not set the resource. Regular containers and sidecars add up. Each classic
    init container counts with the sidecars declared before it, and the pod gets the larger of
    the sum and the largest init value. Returns None when no container sets the resource.
    """
    present = any(value is not None for value in containers)
    total = sum(value for value in containers if value is not None)
    sidecars = 0
    init_max = 0
    for value, restartable in init_containers:
        present = present or value is not None
        amount = value or 0
        if restartable:
            total += amount
            sidecars += amount
            candidate = sidecars
        else:
            candidate = amount + sidecars
        init_max = max(init_max, candidate)
    return max(total, init_max) if present else None


def _quantity_field(item: Mapping[str, Any], section: str) -> Any:
    values = item.get(section)
    if not isinstance(values, Mapping):
        return None
    return values.get("cpu")


def parse_limit_range(limit_range: Mapping[str, Any]) -> CpuLimitRange:
    """Return the CPU constraints of one LimitRange object.

    Only items of type Container and Pod bound CPU requests. Raises InvalidQuantityError for a
    CPU value that is not a quantity.
    """
    spec = limit_range.get("spec")
    items = spec.get("limits") if isinstance(spec, Mapping) else None
    result = NO_LIMIT_RANGE
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or item.get("type") not in ("Container", "Pod"):
            continue
        minimum = _quantity_field(item, "min")
        ratio = _quantity_field(item, "maxLimitRequestRatio")
        min_millicores = 0 if minimum is None else cpu_millicores(minimum)
        parsed_ratio = None if ratio is None else parse_quantity(ratio)
        if item["type"] == "Container":
            constraint = CpuLimitRange(
                container_min_millicores=min_millicores,
                container_max_limit_request_ratio=parsed_ratio,
            )
        else:
            constraint = CpuLimitRange(
                pod_min_millicores=min_millicores, pod_max_limit_request_ratio=parsed_ratio
            )
        result = result.combine(constraint)
    return result


class LimitRangeIndex:
    """The combined CPU constraints per namespace, updated from LimitRange watch events.

    ``synced`` turns True once the owner has seen the first complete list. Until then the
    index cannot tell a namespace without LimitRanges from one not listed yet.
    """

    def __init__(self) -> None:
        self.synced = False
        self._objects: dict[str, dict[str, CpuLimitRange]] = {}
        self._namespaces: dict[str, CpuLimitRange] = {}

    def observe(self, event_type: str, limit_range: Mapping[str, Any]) -> None:
        """Apply one ADDED, MODIFIED or DELETED event; the Reflector's ``on_event`` hook."""
        metadata = limit_range.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        name = str(metadata.get("name", ""))
        objects = self._objects.setdefault(namespace, {})
        if event_type == "DELETED":
            objects.pop(name, None)
        else:
            try:
                objects[name] = parse_limit_range(limit_range)
            except InvalidQuantityError as error:
                # The API server validates LimitRanges, so this needs a bug on either side.
                log.warning(
                    "LimitRange has an invalid CPU quantity, ignoring it",
                    extra={"limit_range": object_key(limit_range), "error": str(error)},
                )
                objects.pop(name, None)
        combined = NO_LIMIT_RANGE
        for constraint in objects.values():
            combined = combined.combine(constraint)
        if objects:
            self._namespaces[namespace] = combined
        else:
            self._objects.pop(namespace, None)
            self._namespaces.pop(namespace, None)

    def for_namespace(self, namespace: str) -> CpuLimitRange:
        """Return the constraints of ``namespace``, or none when it has no LimitRange."""
        return self._namespaces.get(namespace, NO_LIMIT_RANGE)
