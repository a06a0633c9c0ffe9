"""Parse an agent's ``/observe`` snapshot (schema version 1) into typed records.

Only the per-thread part is kept: the rightsizer needs, per container, each thread's
cumulative CPU time, run-queue delay, timeslice count and context switches.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from temper.errors import TemperError

SNAPSHOT_VERSION = 1


class InvalidSnapshotError(TemperError, ValueError):
    """An ``/observe`` body does not match schema version 1."""


@dataclass(frozen=True, slots=True)
class ThreadSample:
    """Cumulative counters of one thread at the snapshot's time."""

    tgid: int
    tid: int
    comm: str
    cpu_seconds_total: float
    runq_delay_seconds_total: float
    timeslices_total: int
    voluntary_ctxt_switches_total: int
    nonvoluntary_ctxt_switches_total: int


@dataclass(frozen=True, slots=True)
class ContainerSample:
    """The threads of one container."""

    name: str
    threads: tuple[ThreadSample, ...]


@dataclass(frozen=True, slots=True)
class PodSample:
    """One pod of a snapshot."""

    namespace: str
    name: str
    uid: str
    containers: tuple[ContainerSample, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One ``/observe`` response of one agent."""

    node: str
    timestamp_seconds: float
    pods: tuple[PodSample, ...]


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise InvalidSnapshotError(
            f"{where}: field {name!r} is {value!r}, expected {expected}; "
            f"the agent must serve /observe schema v{SNAPSHOT_VERSION}"
        )
    return value


def _number(data: Mapping[str, Any], name: str, where: str) -> float:
    value = float(_field(data, name, (int, float), where))
    if value < 0:
        raise InvalidSnapshotError(f"{where}: field {name!r} is {value}, expected >= 0")
    return value


def _thread(data: Any, where: str) -> ThreadSample:
    if not isinstance(data, dict):
        raise InvalidSnapshotError(f"{where}: thread entry is {data!r}, expected an object")
    return ThreadSample(
        tgid=int(_field(data, "tgid", int, where)),
        tid=int(_field(data, "tid", int, where)),
        comm=str(_field(data, "comm", str, where)),
        cpu_seconds_total=_number(data, "cpu_seconds_total", where),
        runq_delay_seconds_total=_number(data, "runq_delay_seconds_total", where),
        timeslices_total=int(_number(data, "timeslices_total", where)),
        voluntary_ctxt_switches_total=int(_number(data, "voluntary_ctxt_switches_total", where)),
        nonvoluntary_ctxt_switches_total=int(
            _number(data, "nonvoluntary_ctxt_switches_total", where)
        ),
    )


def _container(data: Any, where: str) -> ContainerSample:
    if not isinstance(data, dict):
        raise InvalidSnapshotError(f"{where}: container entry is {data!r}, expected an object")
    name = data.get("name") or ""
    inner = f"{where} container {name!r}"
    threads = _field(data, "threads", list, inner)
    return ContainerSample(name=str(name), threads=tuple(_thread(t, inner) for t in threads))


def _pod(data: Any, where: str) -> PodSample:
    if not isinstance(data, dict):
        raise InvalidSnapshotError(f"{where}: pod entry is {data!r}, expected an object")
    namespace = str(_field(data, "namespace", str, where))
    name = str(_field(data, "name", str, where))
    inner = f"{where} pod {namespace}/{name}"
    containers = _field(data, "containers", list, inner)
    return PodSample(
        namespace=namespace,
        name=name,
        uid=str(_field(data, "uid", str, inner)),
        containers=tuple(_container(c, inner) for c in containers),
    )


def parse_snapshot(body: bytes | Mapping[str, Any], source: str) -> Snapshot:
    """Validate and convert one ``/observe`` body; ``source`` (the URL) names it in errors."""
    if isinstance(body, bytes | bytearray):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidSnapshotError(f"{source}: body is not JSON: {error}") from error
    else:
        data = body
    if not isinstance(data, dict):
        raise InvalidSnapshotError(f"{source}: body is {type(data).__name__}, expected an object")
    if data.get("v") != SNAPSHOT_VERSION:
        raise InvalidSnapshotError(
            f"{source}: schema version v={data.get('v')!r} is not supported, expected "
            f"{SNAPSHOT_VERSION}; upgrade the rightsizer or the agent"
        )
    pods = _field(data, "pods", list, source)
    return Snapshot(
        node=str(_field(data, "node", str, source)),
        timestamp_seconds=_number(data, "ts", source),
        pods=tuple(_pod(p, source) for p in pods),
    )
