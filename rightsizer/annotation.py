"""The ``temper.codes/recommendation`` annotation on a workload: schema version 1.

Compact JSON, sorted keys::

    {"v": 1, "ts": 1733333333, "status": "proposed", "pods": 3, "trk_s": 300,
     "window": {"start": 1733246933, "end": 1733333333, "observed_s": 86390.0},
     "containers": {"app": {
         "req_m": 1350, "trk_req_m": 1180, "lim_m": null, "lim_why": "no CPU limit: ...",
         "cur_req_m": 2000, "cur_lim_m": null, "conf": 0.98, "basis": "window",
         "findings": [{"kind": "hot-thread", "group": "evloop", "pods": 3,
                       "metrics": {"hot_fraction": 0.62}, "advice": "..."}]}},
     "decision": {"ts": 1733340000, "note": "..."}}

``status`` is ``proposed`` until someone runs ``temper rightsize accept`` or ``dismiss``;
``decision`` then records when and an optional note. The rightsizer never changes the
pod template itself. ``req_m`` is the reviewed request; ``trk_req_m`` is the tracking
request, valid for ``trk_s`` seconds after ``ts`` (for an automation that resizes pods in
place). Both tracking fields are optional, so annotations written before them still parse.
"""

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson

from temper.annotations import RECOMMENDATION, dumps
from temper.errors import InvalidAnnotationError

RECOMMENDATION_VERSION = 1


class Status(StrEnum):
    """Review state of a recommendation."""

    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"


@dataclass(frozen=True)
class FindingSummary:
    """A finding merged over the pods of a workload."""

    kind: str
    group: str
    pods: int
    metrics: dict[str, float]
    advice: str


@dataclass(frozen=True)
class ContainerAdvice:
    """The recommendation for one container name of a workload; CPU in millicores."""

    request_millicores: int
    limit_millicores: int | None
    limit_reason: str
    current_request_millicores: int | None
    current_limit_millicores: int | None
    confidence: float
    basis: str
    findings: tuple[FindingSummary, ...] = ()
    tracking_request_millicores: int | None = None

    @property
    def values(self) -> tuple[int, int | None]:
        """The recommended request and limit, which decide whether a review still applies."""
        return self.request_millicores, self.limit_millicores


@dataclass(frozen=True)
class WorkloadRecommendation:
    """The annotation value: every container of a workload, with the data window."""

    timestamp_seconds: float
    window_start_seconds: float
    window_end_seconds: float
    observed_seconds: float
    pods: int
    containers: dict[str, ContainerAdvice]
    status: Status = Status.PROPOSED
    decided_seconds: float | None = None
    note: str | None = None
    tracking_seconds: float | None = None  # how long the tracking requests stay valid

    def same_values(self, other: "WorkloadRecommendation") -> bool:
        """True when both recommend the same request and limit for the same containers."""
        return {n: c.values for n, c in self.containers.items()} == {
            n: c.values for n, c in other.containers.items()
        }

    def decide(
        self, status: Status, now_seconds: float, note: str | None
    ) -> "WorkloadRecommendation":
        """Return a copy that records a review decision."""
        return replace(self, status=status, decided_seconds=now_seconds, note=note)

    def encode(self) -> str:
        """Return the annotation value."""
        value: dict[str, Any] = {
            "v": RECOMMENDATION_VERSION,
            "ts": round(self.timestamp_seconds),
            "status": self.status.value,
            "pods": self.pods,
            "window": {
                "start": round(self.window_start_seconds),
                "end": round(self.window_end_seconds),
                "observed_s": round(self.observed_seconds, 1),
            },
            "containers": {name: _encode_container(c) for name, c in self.containers.items()},
        }
        if self.tracking_seconds is not None:
            value["trk_s"] = round(self.tracking_seconds)
        if self.decided_seconds is not None:
            decision: dict[str, Any] = {"ts": round(self.decided_seconds)}
            if self.note:
                decision["note"] = self.note
            value["decision"] = decision
        return dumps(value)

    @classmethod
    def decode(cls, raw: str) -> "WorkloadRecommendation":
        """Parse an annotation value; raise InvalidAnnotationError naming the bad field."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise InvalidAnnotationError(
                f"annotation {RECOMMENDATION}={raw[:200]!r} is not valid JSON: {error}"
            ) from error
        if not isinstance(data, dict) or data.get("v") != RECOMMENDATION_VERSION:
            version = data.get("v") if isinstance(data, dict) else None
            raise InvalidAnnotationError(
                f"annotation {RECOMMENDATION}: schema version v={version!r} is not supported, "
                f"expected {RECOMMENDATION_VERSION}; run `temper rightsize recommend` again"
            )
        try:
            window = data["window"]
            decision = data.get("decision") or {}
            return cls(
                timestamp_seconds=float(data["ts"]),
                window_start_seconds=float(window["start"]),
                window_end_seconds=float(window["end"]),
                observed_seconds=float(window["observed_s"]),
                pods=int(data["pods"]),
                containers={
                    str(name): _decode_container(c) for name, c in data["containers"].items()
                },
                status=Status(data["status"]),
                decided_seconds=float(decision["ts"]) if "ts" in decision else None,
                note=decision.get("note"),
                tracking_seconds=float(data["trk_s"]) if data.get("trk_s") is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidAnnotationError(
                f"annotation {RECOMMENDATION}={raw[:200]!r} does not match schema v1: "
                f"{error!r}; run `temper rightsize recommend` again"
            ) from error


def _encode_container(advice: ContainerAdvice) -> dict[str, Any]:
    value: dict[str, Any] = {
        "req_m": advice.request_millicores,
        "lim_m": advice.limit_millicores,
        "lim_why": advice.limit_reason,
        "cur_req_m": advice.current_request_millicores,
        "cur_lim_m": advice.current_limit_millicores,
        "conf": advice.confidence,
        "basis": advice.basis,
        "findings": [
            {
                "kind": f.kind,
                "group": f.group,
                "pods": f.pods,
                "metrics": f.metrics,
                "advice": f.advice,
            }
            for f in advice.findings
        ],
    }
    if advice.tracking_request_millicores is not None:
        value["trk_req_m"] = advice.tracking_request_millicores
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _decode_container(data: dict[str, Any]) -> ContainerAdvice:
    return ContainerAdvice(
        request_millicores=int(data["req_m"]),
        limit_millicores=_optional_int(data.get("lim_m")),
        limit_reason=str(data.get("lim_why", "")),
        current_request_millicores=_optional_int(data.get("cur_req_m")),
        current_limit_millicores=_optional_int(data.get("cur_lim_m")),
        confidence=float(data["conf"]),
        basis=str(data.get("basis", "window")),
        tracking_request_millicores=_optional_int(data.get("trk_req_m")),
        findings=tuple(
            FindingSummary(
                kind=str(f["kind"]),
                group=str(f["group"]),
                pods=int(f["pods"]),
                metrics={str(k): float(v) for k, v in f.get("metrics", {}).items()},
                advice=str(f.get("advice", "")),
            )
            for f in data.get("findings", [])
        ),
    )
