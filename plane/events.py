"""Fan-out of the watch cache's Node and Pod changes to the event-stream clients.

The cache calls :meth:`EventHub.publish` for every object a reflector lists or watches. The
hub turns the object into the same summary the read endpoints return. It drops changes that
leave the summary as it was (a relist, or a status field the summary does not show), and
puts the others on the queue of every subscriber whose filter matches. Each queue is bounded:
a subscriber that falls behind by more than its bound is marked overflowed, gets no further
events, and its stream ends with an ``overflow`` event so that the client reconnects and
starts from a fresh snapshot.
"""

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from plane import views
from temper.kube import object_key

log = logging.getLogger(__name__)

KINDS = ("nodes", "pods")
_KIND_NAMES = {"nodes": "Node", "pods": "Pod"}
_EVENT_NAMES = {"nodes": "node", "pods": "pod"}


@dataclass(frozen=True)
class StreamFilter:
    """Event selection of a subscriber; an empty namespace or node matches everything."""

    kinds: frozenset[str] = frozenset(KINDS)
    namespace: str = ""
    node: str = ""

    def matches(self, kind: str, summary: Mapping[str, Any]) -> bool:
        """True when an event of ``kind`` ("nodes" or "pods") about ``summary`` is wanted."""
        if kind not in self.kinds:
            return False
        if kind == "nodes":
            return not self.node or summary.get("name") == self.node
        if self.namespace and summary.get("namespace") != self.namespace:
            return False
        return not self.node or summary.get("node") == self.node


@dataclass(frozen=True)
class Event:
    """One change: its sequence number, the kind, the watch type and the object's summary."""

    seq: int
    kind: str
    type: str
    key: str
    summary: Mapping[str, Any]

    def encode(self, with_id: bool = True) -> bytes:
        """Return the server-sent-event frame of this change."""
        data = orjson.dumps(
            {"type": self.type, "kind": _KIND_NAMES[self.kind], "key": self.key,
             "object": self.summary}
        )  # fmt: skip
        head = f"id: {self.seq}\n" if with_id else ""
        return f"{head}event: {_EVENT_NAMES[self.kind]}\n".encode() + b"data: " + data + b"\n\n"


@dataclass(eq=False)
class Subscriber:
    """One event-stream client: its filter and its bounded queue."""

    filter: StreamFilter
    queue: asyncio.Queue[Event]
    overflowed: bool = False
    dropped: int = 0


class TooManySubscribersError(Exception):
    """The hub already serves its maximum number of streams."""


class EventHub:
    """Keeps the last summary of every Node and Pod and fans changes out to subscribers."""

    def __init__(self, queue_size: int, max_subscribers: int) -> None:
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self.subscribers: set[Subscriber] = set()
        self.published = 0
        self._seq = 0
        self._last: dict[str, dict[str, Mapping[str, Any]]] = {kind: {} for kind in KINDS}

    def subscribe(self, stream_filter: StreamFilter) -> Subscriber:
        """Register a subscriber; raise TooManySubscribersError at the limit."""
        if len(self.subscribers) >= self.max_subscribers:
            raise TooManySubscribersError(
                f"{len(self.subscribers)} event streams are open, the limit "
                f"(--events-max-clients) is {self.max_subscribers}"
            )
        subscriber = Subscriber(stream_filter, asyncio.Queue(self.queue_size))
        self.subscribers.add(subscriber)
        log.info(
            "event stream opened",
            extra={"streams": len(self.subscribers), "kinds": sorted(stream_filter.kinds)},
        )
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove a subscriber; safe to call twice."""
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            log.info(
                "event stream closed",
                extra={
                    "streams": len(self.subscribers),
                    "overflowed": subscriber.overflowed,
                    "dropped": subscriber.dropped,
                },
            )

    def snapshot(self, stream_filter: StreamFilter) -> list[Event]:
        """Return the current summaries that match ``stream_filter`` as ADDED events without ids."""
        return [
            Event(0, kind, "ADDED", key, summary)
            for kind in KINDS
            for key, summary in sorted(self._last[kind].items())
            if stream_filter.matches(kind, summary)
        ]

    def prime(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """Record the summaries of objects already in the cache, without publishing them."""
        for obj in objects:
            self._last[kind][object_key(obj)] = _summary(kind, obj)

    def publish(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        """Record a change of a Node or Pod and queue it for every matching subscriber."""
        key = object_key(obj)
        last = self._last[kind]
        if event_type == "DELETED":
            summary = last.pop(key, None) or _summary(kind, obj)
        else:
            summary = _summary(kind, obj)
            previous = last.get(key)
            last[key] = summary
            if previous == summary:
                return
            event_type = "MODIFIED" if previous is not None else "ADDED"
        self._seq += 1
        self.published += 1
        event = Event(self._seq, kind, event_type, key, summary)
        for subscriber in self.subscribers:
            if subscriber.overflowed or not subscriber.filter.matches(kind, summary):
                continue
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscriber.overflowed = True
                subscriber.dropped += 1
                log.warning(
                    "event stream client fell behind, ending its stream",
                    extra={"queue_size": self.queue_size},
                )


def _summary(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return views.node_summary(obj) if kind == "nodes" else views.pod_summary(obj)
