"""Client for the statistics socket of scx_layered.

scx_layered serves its statistics on a Unix stream socket, by default
``/var/run/scx/root/stats``. The protocol is one JSON object per line in each direction. The
request ``{"req": "stats", "args": {"target": "top"}}`` gets the response
``{"errno": 0, "args": {"resp": <statistics>}}``. A non-zero ``errno`` comes with an error
string in ``resp``.

Each connection keeps its own baseline. The first response on a connection covers only the
moment between the connection's first request and the response, and every later response
covers the time since the previous request on the same connection. So the client keeps one
connection open and reports ``period_seconds = None`` for the first response, whose rates and
averages mean nothing.

The parser reads the fields listed in :class:`LayerStats` and :class:`SchedulerStats` and
ignores every other field, so a newer scx_layered that adds fields still parses. A field it
reads that is missing or has the wrong type is an error naming the field, the value and the
socket. The shape is the one of scx_layered 1.1.x.
"""

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

DEFAULT_SOCKET_PATH = Path("/var/run/scx/root/stats")
STATS_REQUEST = b'{"req":"stats","args":{"target":"top"}}\n'
# One response per line; a node with many LLCs makes the per-layer arrays long, not megabytes.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_EXCERPT_BYTES = 200


class ScxStatsError(Exception):
    """Reading the statistics failed. ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LayerStats:
    """One layer as scx_layered reports it.

    ``tasks``, ``cpus`` and the CPU range are current values. The others cover the period
    since the previous request on the same connection.
    """

    name: str
    index: int
    tasks: int
    cpus: int
    min_cpus: int
    max_cpus: int
    util_cpus: float
    load_cpus: float
    open_util_ratio: float
    sched_events: int
    preempt_ratio: float
    affinity_violation_ratio: float


@dataclass(frozen=True)
class SchedulerStats:
    """The top-level statistics of scx_layered and its layers by name."""

    at_seconds: float
    busy_ratio: float
    util_cpus: float
    antistall_tasks: int
    userspace_cpu_seconds: float
    layers: Mapping[str, LayerStats]
    # Seconds covered by the period values; None for the first response on a connection.
    period_seconds: float | None = None


def _excerpt(data: bytes) -> str:
    text = data[:_EXCERPT_BYTES].decode(errors="replace")
    return text + ("…" if len(data) > _EXCERPT_BYTES else "")


class _Reader:
    """Typed access to the fields of one JSON object, with errors that name the field."""

    def __init__(self, source: str, where: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise _shape(source, where, value, "a JSON object")
        self.source = source
        self.where = where
        self.value: dict[str, Any] = value

    def _get(self, key: str) -> Any:
        if key not in self.value:
            raise ScxStatsError(
                "shape",
                f"scx_layered statistics from {self.source}: {self.where} has no field "
                f"{key!r}; Temper reads the response shape of scx_layered 1.1.x",
            )
        return self.value[key]

    def number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _shape(self.source, f"{self.where}.{key}", value, "a number")
        if not math.isfinite(value):
            raise _shape(self.source, f"{self.where}.{key}", value, "a finite number")
        return float(value)

    def count(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _shape(self.source, f"{self.where}.{key}", value, "a non-negative integer")
        return value

    def numbers(self, key: str) -> list[float]:
        value = self._get(key)
        if not isinstance(value, list):
            raise _shape(self.source, f"{self.where}.{key}", value, "a list of numbers")
        result = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise _shape(self.source, f"{self.where}.{key}", value, "a list of numbers")
            result.append(float(item))
        return result

    def child(self, key: str) -> "_Reader":
        return _Reader(self.source, f"{self.where}.{key}", self._get(key))


def _shape(source: str, where: str, value: Any, expected: str) -> ScxStatsError:
    shown = _excerpt(orjson.dumps(value))
    return ScxStatsError(
        "shape",
        f"scx_layered statistics from {source}: {where} is {shown}, expected {expected}; "
        "Temper reads the response shape of scx_layered 1.1.x",
    )


def _layer(source: str, name: str, value: Any) -> LayerStats:
    fields = _Reader(source, f"layers[{name!r}]", value)
    return LayerStats(
        name=name,
        index=fields.count("index"),
        tasks=fields.count("tasks"),
        cpus=fields.count("cur_nr_cpus"),
        min_cpus=fields.count("min_nr_cpus"),
        max_cpus=fields.count("max_nr_cpus"),
        util_cpus=fields.number("util") / 100,
        load_cpus=sum(fields.numbers("node_loads")) / 100,
        open_util_ratio=fields.number("util_open_frac") / 100,
        sched_events=fields.count("total"),
        preempt_ratio=fields.number("preempt") / 100,
        affinity_violation_ratio=fields.number("affn_viol") / 100,
    )


def parse_stats(source: str, value: Any) -> SchedulerStats:
    """Turn the ``resp`` object of a ``stats`` response into :class:`SchedulerStats`."""
    top = _Reader(source, "the statistics", value)
    layers = top.child("layers")
    return SchedulerStats(
        at_seconds=top.number("at"),
        busy_ratio=top.number("busy") / 100,
        util_cpus=top.number("util") / 100,
        antistall_tasks=top.count("antistall"),
        userspace_cpu_seconds=top.count("proc_ms") / 1000,
        layers={name: _layer(source, name, entry) for name, entry in layers.value.items()},
    )


def parse_response(source: str, line: bytes) -> SchedulerStats:
    """Parse one response line of the socket at ``source`` (named in errors)."""
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ScxStatsError(
            "malformed",
            f"scx_layered statistics from {source} are not JSON ({error}): {_excerpt(line)!r}",
        ) from None
    envelope = _Reader(source, "the response", message)
    errno = envelope.value.get("errno")
    if isinstance(errno, bool) or not isinstance(errno, int):
        raise _shape(source, "the response's errno", errno, "an integer")
    args = envelope.child("args")
    response = args._get("resp")
    if errno != 0:
        raise ScxStatsError(
            "errno",
            f"scx_layered at {source} refused the stats request with errno {errno}: "
            f"{_excerpt(str(response).encode())}",
        )
    return parse_stats(source, response)


class ScxStatsClient:
    """One long-lived connection to the stats socket, reopened after any error."""

    def __init__(self, socket_path: Path, timeout_seconds: float) -> None:
        self.socket_path = socket_path
        self.timeout_seconds = timeout_seconds
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._previous_at: float | None = None

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._writer is not None

    async def _connect(self) -> None:
        path = self.socket_path
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(
                str(path), limit=MAX_RESPONSE_BYTES
            )
        except FileNotFoundError:
            raise ScxStatsError(
                "missing",
                f"scx_layered stats socket {path} does not exist: scx_layered is not running, "
                "has not started its stats server yet, or serves another path "
                "(set scx_stats_socket_path)",
            ) from None
        except ConnectionRefusedError:
            raise ScxStatsError(
                "refused",
                f"nothing listens on the scx_layered stats socket {path}: it is left over "
                "from a scx_layered that has exited",
            ) from None
        except PermissionError:
            raise ScxStatsError(
                "permission",
                f"no permission to connect to the scx_layered stats socket {path}: run the "
                "agent as root",
            ) from None
        self._previous_at = None
        log.debug("connected to the scx_layered stats socket", extra={"path": str(path)})

    async def _exchange(self) -> bytes:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(STATS_REQUEST)
        await self._writer.drain()
        return await self._reader.readline()

    async def read(self) -> SchedulerStats:
        """Request the statistics once; raise :class:`ScxStatsError` on any failure."""
        path = self.socket_path
        try:
            async with asyncio.timeout(self.timeout_seconds):
                line = await self._exchange()
        except TimeoutError:
            await self.close()
            raise ScxStatsError(
                "timeout",
                f"scx_layered stats socket {path} sent no response within "
                f"{self.timeout_seconds} s (scx_stats_timeout_seconds)",
            ) from None
        except ValueError:
            # StreamReader.readline reports a line beyond its limit as ValueError.
            await self.close()
            raise ScxStatsError(
                "too_large",
                f"the response of scx_layered stats socket {path} is longer than "
                f"{MAX_RESPONSE_BYTES} bytes",
            ) from None
        except ScxStatsError:
            await self.close()
            raise
        except OSError as error:
            await self.close()
            raise ScxStatsError(
                "io", f"reading scx_layered stats socket {path} failed: {error}"
            ) from None
        if not line.endswith(b"\n"):
            await self.close()
            raise ScxStatsError(
                "closed",
                f"scx_layered closed its stats socket {path} without a complete response"
                + (f" (got {_excerpt(line)!r})" if line else ""),
            )
        try:
            stats = parse_response(str(path), line)
        except ScxStatsError:
            await self.close()
            raise
        previous, self._previous_at = self._previous_at, stats.at_seconds
        if previous is None:
            return stats
        return replace(stats, period_seconds=max(0.0, stats.at_seconds - previous))

    async def close(self) -> None:
        """Close the connection; the next read opens a new one."""
        writer, self._reader, self._writer = self._writer, None, None
        self._previous_at = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
