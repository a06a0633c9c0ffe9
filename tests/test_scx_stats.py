"""The scx_layered stats client and monitor against a FAKE stats server on a real Unix socket.

The valid responses are the ones recorded from the real scx_layered 1.1.2 in the sched_ext VM
(``tests/data/scx_layered-1.1.2-stats.json``); the error cases are the ways a socket can fail.
"""

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import agent.scxstats
from agent.scxmonitor import ScxStatsMonitor
from agent.scxstats import ScxStatsClient, ScxStatsError, parse_response
from tests.fakes.scx_stats_server import (
    FakeStatsServer,
    encode,
    load_recording,
    recorded_response,
    stale_socket,
    stats_payload,
    stats_response,
)

LAYERS = ["critical", "low", "normal"]


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be long.
    return tmp_path / "stats"


def test_recorded_responses_parse() -> None:
    recording = load_recording()
    response = recording["responses"]["with_pods"]
    stats = parse_response("recording", json.dumps(response).encode())
    resp = response["args"]["resp"]
    assert list(stats.layers) == list(resp["layers"])
    assert {name: layer.tasks for name, layer in stats.layers.items()} == {
        "background": 0,
        "critical": 5,
        "high": 1,
        "low": 2,
        "normal": 17,
        "normal-limited": 0,
        "profile-latency": 3,
    }
    critical = stats.layers["critical"]
    recorded = resp["layers"]["critical"]
    assert critical.index == recorded["index"]
    assert critical.util_cpus == pytest.approx(recorded["util"] / 100)
    assert critical.load_cpus == pytest.approx(sum(recorded["node_loads"]) / 100)
    assert critical.cpus == recorded["cur_nr_cpus"] == 1
    assert critical.sched_events == recorded["total"]
    assert stats.util_cpus == pytest.approx(resp["util"] / 100)
    assert stats.busy_ratio == pytest.approx(resp["busy"] / 100)
    assert stats.at_seconds == resp["at"]
    for name in ("first_on_connection", "idle"):
        parsed = parse_response(name, json.dumps(recording["responses"][name]).encode())
        assert set(parsed.layers) == set(resp["layers"])


def test_unknown_fields_are_ignored() -> None:
    resp = stats_payload(LAYERS, {"critical": 4})
    resp["a_future_field"] = {"nested": [1, 2]}
    resp["layers"]["critical"]["a_future_layer_field"] = "x"
    stats = parse_response("test", encode({"errno": 0, "args": {"resp": resp}}))
    assert stats.layers["critical"].tasks == 4


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda r: r["layers"]["low"].update(tasks="many"), "layers['low'].tasks is \"many\""),
        (lambda r: r["layers"]["low"].update(tasks=True), "layers['low'].tasks is true"),
        (lambda r: r["layers"]["low"].update(tasks=-1), "layers['low'].tasks is -1"),
        (lambda r: r["layers"]["normal"].pop("util"), "layers['normal'] has no field 'util'"),
        (lambda r: r.update(layers=[]), "the statistics.layers is []"),
        (lambda r: r["layers"]["low"].update(node_loads=[1, "x"]), 'node_loads is [1,"x"]'),
    ],
)
def test_wrong_shapes_name_the_field_and_value(change: Any, named: str) -> None:
    resp = stats_payload(LAYERS)
    change(resp)
    with pytest.raises(ScxStatsError) as raised:
        parse_response("/run/x/stats", encode({"errno": 0, "args": {"resp": resp}}))
    assert raised.value.reason == "shape"
    assert named in str(raised.value)
    assert "/run/x/stats" in str(raised.value)


async def test_client_reads_and_reports_the_period(socket_path: Path) -> None:
    times = iter([1000.0, 1010.5])
    with FakeStatsServer(socket_path, lambda _: stats_response(LAYERS, at=next(times))) as server:
        client = ScxStatsClient(socket_path, timeout_seconds=5)
        first = await client.read()
        second = await client.read()
        await client.close()
    assert first.period_seconds is None
    assert second.period_seconds == pytest.approx(10.5)
    assert list(second.layers) == LAYERS
    # One connection, two requests of the documented form.
    assert [json.loads(line) for line in server.requests] == [
        {"req": "stats", "args": {"target": "top"}}
    ] * 2


async def expect_error(client: ScxStatsClient, reason: str, *texts: str) -> ScxStatsError:
    with pytest.raises(ScxStatsError) as raised:
        await client.read()
    assert raised.value.reason == reason, str(raised.value)
    for text in texts:
        assert text in str(raised.value)
    assert not client.connected
    return raised.value


async def test_missing_socket(socket_path: Path) -> None:
    client = ScxStatsClient(socket_path, timeout_seconds=1)
    await expect_error(client, "missing", str(socket_path), "scx_stats_socket_path")


async def test_stale_socket_left_by_an_exited_scheduler(socket_path: Path) -> None:
    client = ScxStatsClient(stale_socket(socket_path), timeout_seconds=1)
    await expect_error(client, "refused", str(socket_path), "left over")


async def test_timeout(socket_path: Path) -> None:
    release = threading.Event()

    def hang(_: bytes) -> bytes:
        release.wait(10)
        return b""

    with FakeStatsServer(socket_path, hang):
        client = ScxStatsClient(socket_path, timeout_seconds=0.3)
        await expect_error(client, "timeout", str(socket_path), "0.3 s")
        release.set()


@pytest.mark.parametrize(
    ("response", "reason", "text"),
    [
        (b"this is not json\n", "malformed", "are not JSON"),
        (b'{"errno": 0}\n', "shape", "the response has no field 'args'"),
        (b'{"errno": "0", "args": {"resp": {}}}\n', "shape", 'errno is "0"'),
        (b'{"errno": 0, "args": {"resp": {"at": 1}}}\n', "shape", "no field 'layers'"),
        (b'["errno", 0]\n', "shape", "expected a JSON object"),
        (recorded_response("unknown_target"), "errno", "errno 22"),
        (b'{"errno": 0, "args": {"resp"', "closed", "without a complete response"),
    ],
)
async def test_bad_responses(socket_path: Path, response: bytes, reason: str, text: str) -> None:
    with FakeStatsServer(socket_path, lambda _: response):
        client = ScxStatsClient(socket_path, timeout_seconds=2)
        await expect_error(client, reason, str(socket_path), text)


async def test_closed_without_response(socket_path: Path) -> None:
    with FakeStatsServer(socket_path, lambda _: None):
        client = ScxStatsClient(socket_path, timeout_seconds=2)
        await expect_error(client, "closed", str(socket_path))


async def test_too_large_response(socket_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.scxstats, "MAX_RESPONSE_BYTES", 1024)
    with FakeStatsServer(socket_path, lambda _: stats_response(LAYERS)):
        client = ScxStatsClient(socket_path, timeout_seconds=2)
        await expect_error(client, "too_large", "1024 bytes")


async def test_client_reconnects_after_an_error(socket_path: Path) -> None:
    responses = iter([b"garbage\n", stats_response(LAYERS), stats_response(LAYERS)])
    with FakeStatsServer(socket_path, lambda _: next(responses)):
        client = ScxStatsClient(socket_path, timeout_seconds=2)
        await expect_error(client, "malformed")
        again = await client.read()
        assert again.period_seconds is None  # a new connection starts a new baseline
        assert (await client.read()).period_seconds is not None
        await client.close()


def monitor(socket_path: Path, attached: list[bool]) -> ScxStatsMonitor:
    return ScxStatsMonitor(
        socket_path,
        interval_seconds=1,
        timeout_seconds=1,
        attached=lambda: attached[0],
        instance=lambda: (1, "1"),
        running_config=lambda: None,
    )


async def test_monitor_exports_metrics_while_attached(socket_path: Path) -> None:
    attached = [True]
    unit = monitor(socket_path, attached)
    registry = CollectorRegistry()
    unit.register(registry)
    tasks = {"critical": 3, "low": 7, "normal": 40}
    with FakeStatsServer(socket_path, lambda _: stats_response(LAYERS, tasks)):
        await unit.poll()
        first = generate_latest(registry).decode()
        await unit.poll()
        second = generate_latest(registry).decode()
        attached[0] = False
        await unit.poll()
        detached = generate_latest(registry).decode()
    assert 'temper_scx_layer_tasks{layer="critical"} 3.0' in first
    assert 'temper_scx_layer_tasks{layer="low"} 7.0' in first
    assert "temper_scx_stats_up 1.0" in first
    # The first response on a connection covers no real period: no utilisation yet.
    assert "temper_scx_layer_util_cpus{" not in first
    assert 'temper_scx_layer_util_cpus{layer="critical"}' in second
    assert "temper_scx_busy_ratio " in second
    events = load_recording()["responses"]["with_pods"]["args"]["resp"]["layers"]["critical"]
    assert f'temper_scx_layer_sched_events_total{{layer="critical"}} {2 * events["total"]}.0' in (
        second
    )
    assert "temper_scx_stats_reads_total 2.0" in second
    assert "temper_scx_layer_tasks{" not in detached
    assert "temper_scx_stats_up 0.0" in detached
    assert not unit.client.connected


async def test_monitor_counts_failures_and_logs_them_rate_limited(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unit = monitor(socket_path, [True])
    registry = CollectorRegistry()
    unit.register(registry)
    with caplog.at_level(logging.DEBUG, logger="agent.scxmonitor"):
        for _ in range(4):
            await unit.poll()
        with FakeStatsServer(socket_path, lambda _: stats_response(LAYERS)):
            await unit.poll()
        await unit.client.close()
    metrics = generate_latest(registry).decode()
    assert 'temper_scx_stats_errors_total{reason="missing"} 4.0' in metrics
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # The first failure may be the stats server starting after the attach: debug only. The
    # second is a warning; the next ones within a minute are counted, not logged.
    assert len(warnings) == 1
    assert str(socket_path) in warnings[0].getMessage() + str(warnings[0].__dict__)
    assert any(r.getMessage() == "scx_layered statistics readable again" for r in caplog.records)
    assert unit.latest is not None


async def test_monitor_run_survives_failures(socket_path: Path) -> None:
    unit = monitor(socket_path, [True])
    unit.interval_seconds = 0.05
    stop = asyncio.Event()
    task = asyncio.create_task(unit.run(stop))
    await asyncio.sleep(0.3)
    with FakeStatsServer(socket_path, lambda _: b"garbage\n"):
        await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert unit.errors["missing"] >= 2
    assert unit.errors["malformed"] >= 2
