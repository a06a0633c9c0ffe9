"""Bounded scheduler trace capture through tracefs, served on /trace."""

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.observe.observer import Observer
from agent.observe.routes import add_routes
from agent.observe.trace import TraceCapture, find_tracefs
from agent.settings import AgentSettings, CgroupDriver
from tests.cgrouphelpers import is_root

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root for tracefs"),
    pytest.mark.skipif(find_tracefs(None) is None, reason="needs tracefs mounted"),
]

# One event line of the ftrace text format: task-pid, optional tgid, [cpu], flags, time, event.
EVENT_LINE = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d{3})\]\s+"
    r"(?P<flags>\S+)\s+(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<args>.*)$"
)


def parse_ftrace_text(text: str) -> list[tuple[int, float, str, str]]:
    """(cpu, timestamp, event, arguments) of each event; raise ValueError on a malformed line."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# tracer:"):
        raise ValueError(f"missing '# tracer:' header: {lines[:1]}")
    events = []
    for line in lines[1:]:
        if line.startswith("#") or not line.strip() or line.startswith("CPU:"):
            continue  # comments, and "CPU:N [LOST n EVENTS]" markers
        match = EVENT_LINE.match(line)
        if match is None:
            raise ValueError(f"malformed trace line: {line!r}")
        events.append((int(match["cpu"]), float(match["ts"]), match["event"], match["args"]))
    return events


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = AgentSettings(
        node_name="node-a",
        cgroup_driver=CgroupDriver.CGROUPFS,
        state_dir=tmp_path,
        bpf_enabled=False,
    )
    layout = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V1, CgroupDriver.CGROUPFS)
    observer = Observer(settings, layout, lambda: [])
    app = web.Application()
    add_routes(app, observer, TraceCapture(None, max_seconds=5.0, max_bytes=256 * 1024))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_trace_is_valid_ftrace_text(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/trace", params={"seconds": "1"})
    assert response.status == 200
    text = await response.text()
    events = parse_ftrace_text(text)
    names = {event for _, _, event, _ in events}
    assert "sched_switch" in names
    assert "sched_wakeup" in names or "sched_waking" in names
    switch = next(args for _, _, event, args in events if event == "sched_switch")
    assert re.match(r"prev_comm=.* prev_pid=\d+ .* ==> next_comm=.* next_pid=\d+", switch)
    for cpu in {cpu for cpu, _, _, _ in events}:
        stamps = [ts for c, ts, _, _ in events if c == cpu]
        assert stamps == sorted(stamps)
    assert "attachment" in response.headers["Content-Disposition"]


async def test_trace_respects_byte_limit(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/trace", params={"seconds": "2"})
    body = await response.read()
    assert len(body) <= 256 * 1024
    assert body.endswith(b"\n")


async def test_second_capture_gets_409(client: TestClient[web.Request, web.Application]) -> None:
    first = asyncio.create_task(client.get("/trace", params={"seconds": "2"}))
    await asyncio.sleep(0.5)
    second = await client.get("/trace", params={"seconds": "1"})
    assert second.status == 409
    message = (await second.json())["error"]
    assert "already running" in message
    assert "retry" in message
    assert (await first).status == 200


@pytest.mark.parametrize("seconds", ["0", "-1", "abc", "6"])
async def test_invalid_seconds_get_400(
    client: TestClient[web.Request, web.Application], seconds: str
) -> None:
    response = await client.get("/trace", params={"seconds": seconds})
    assert response.status == 400
    assert "at most 5" in (await response.json())["error"]


async def test_observe_before_first_sample_is_503(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/observe")
    assert response.status == 503
