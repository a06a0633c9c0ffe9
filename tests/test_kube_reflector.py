"""Reflector against a fake API server on loopback: relists on 410 Gone, object transforms."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from temper.kube import JsonObject, Reflector
from tests.fakeapiserver import (
    END_OF_STREAM,
    FakeApiServer,
    FakeCollection,
    expired_status,
    object_list,
    serve,
    wait_until,
)

NODES = "/api/v1/nodes"
Events = list[tuple[str, JsonObject]]


def node(name: str, resource_version: str) -> JsonObject:
    return {
        "metadata": {"name": name, "resourceVersion": resource_version},
        "status": {"images": [{"names": ["registry.invalid/big:1"], "sizeBytes": 1}]},
    }


def name_only(obj: JsonObject) -> JsonObject:
    return {"metadata": {"name": obj["metadata"]["name"]}}


def failing_transform(obj: JsonObject) -> JsonObject:
    raise KeyError("spec")


@asynccontextmanager
async def running(fake: FakeApiServer, **options: Any) -> AsyncIterator[tuple[Reflector, Events]]:
    """Run a Reflector on NODES against the fake; yield it and the events it emitted."""
    events: Events = []
    async with serve(fake) as client:
        reflector = Reflector(
            client,
            NODES,
            name="test-nodes",
            on_event=lambda event_type, obj: events.append((event_type, obj)),
            **options,
        )
        task = asyncio.create_task(reflector.run())
        try:
            yield reflector, events
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def names(events: Events) -> list[tuple[str, str]]:
    return [(event_type, obj["metadata"]["name"]) for event_type, obj in events]


@pytest.mark.parametrize("expiry", ["error event", "http status"])
async def test_reflector_relists_when_watch_expires(
    expiry: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeApiServer()
    first = object_list("10", [node("a", "9"), node("b", "10")])
    # After the relist, b is gone and c is new.
    second = object_list("20", [node("a", "19"), node("c", "20")])
    nodes = fake.add(NODES, FakeCollection(lists=[first, second]))
    if expiry == "http status":
        nodes.watch_statuses = [410]
    else:
        nodes.events.put_nowait({"type": "MODIFIED", "object": node("a", "11")})
        nodes.events.put_nowait({"type": "ERROR", "object": expired_status()})

    with caplog.at_level(logging.INFO, logger="temper.kube"):
        async with running(fake) as (reflector, events):
            await wait_until(lambda: len(nodes.watch_requests) == 2)

    assert reflector.relists == 2
    assert [request["resourceVersion"] for request in nodes.watch_requests] == ["10", "20"]
    assert sorted(reflector.store) == ["a", "c"]
    assert reflector.store["a"]["metadata"]["resourceVersion"] == "19"
    assert ("DELETED", "b") in names(events)
    assert ("ADDED", "c") in names(events)
    messages = [record.getMessage() for record in caplog.records]
    assert "watch expired, relisting" in messages
    # 410 is the expected end of a watch: no failure is logged and no backoff is taken.
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_reflector_stores_transformed_objects() -> None:
    fake = FakeApiServer()
    nodes = fake.add(NODES, FakeCollection(lists=[object_list("10", [node("a", "9")])]))
    nodes.events.put_nowait({"type": "ADDED", "object": node("b", "11")})
    nodes.events.put_nowait(END_OF_STREAM)

    async with running(fake, transform=name_only) as (reflector, events):
        await wait_until(lambda: len(nodes.watch_requests) == 2)

    assert reflector.store == {"a": name_only(node("a", "9")), "b": name_only(node("b", "11"))}
    assert events == [("ADDED", name_only(node("a", "9"))), ("ADDED", name_only(node("b", "11")))]
    # The watch resumes from the resourceVersion of the object before the transform.
    assert nodes.watch_requests[1]["resourceVersion"] == "11"
    assert reflector.relists == 1


async def test_reflector_without_transform_keeps_objects() -> None:
    fake = FakeApiServer()
    fake.add(NODES, FakeCollection(lists=[object_list("10", [node("a", "9")])]))

    async with running(fake) as (reflector, _events):
        await wait_until(reflector.synced.is_set)

    assert reflector.store == {"a": node("a", "9")}


async def test_reflector_keeps_object_when_transform_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeApiServer()
    fake.add(NODES, FakeCollection(lists=[object_list("10", [node("a", "9")])]))

    with caplog.at_level(logging.ERROR, logger="temper.kube"):
        async with running(fake, transform=failing_transform) as (reflector, events):
            await wait_until(reflector.synced.is_set)

    assert reflector.store == {"a": node("a", "9")}
    assert events == [("ADDED", node("a", "9"))]
    assert [record.getMessage() for record in caplog.records] == [
        "object transform failed, storing the object unchanged"
    ]
