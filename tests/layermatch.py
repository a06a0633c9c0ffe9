"""A matcher for the part of scx_layered's match semantics that Temper's configs use.

scx_layered puts a task in the first layer with an OR block whose conditions all hold; an
empty block holds for every task. Supported conditions: ``CgroupPrefix`` (on the cgroup path
without a leading slash and with a trailing one), ``CommPrefix`` and ``CommPrefixExclude``
(on the thread name). Any other condition raises, so a test cannot pass by ignoring it.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def condition_holds(condition: Mapping[str, Any], cgroup: str, comm: str) -> bool:
    ((key, value),) = condition.items()
    if key == "CgroupPrefix":
        return cgroup.startswith(value)
    if key == "CommPrefix":
        return comm.startswith(value)
    if key == "CommPrefixExclude":
        return not comm.startswith(value)
    raise NotImplementedError(f"the test matcher does not model {key}")


def block_holds(block: Sequence[Mapping[str, Any]], cgroup: str, comm: str) -> bool:
    return all(condition_holds(condition, cgroup, comm) for condition in block)


def layer_for(config: Sequence[Mapping[str, Any]], cgroup: str, comm: str) -> str:
    """Name of the layer scx_layered would put the task in."""
    for layer in config:
        if any(block_holds(block, cgroup, comm) for block in layer["matches"]):
            return str(layer["name"])
    raise AssertionError(f"no layer matches {comm!r} in {cgroup!r}; the config lacks a catch-all")


def matching_blocks(
    layers: Sequence[Mapping[str, Any]], cgroup: str, comm: str
) -> list[tuple[str, int]]:
    """Every (layer, block index) of ``layers`` whose block holds for the task."""
    return [
        (str(layer["name"]), index)
        for layer in layers
        for index, block in enumerate(layer["matches"])
        if block_holds(block, cgroup, comm)
    ]


def task_cgroup(pid: int, tid: int, controller: str = "cpu") -> str:
    """The task's cgroup path as scx_layered formats it: no leading slash, a trailing one.

    scx_layered reads the cgroup v2 path. On this cgroup v1 host the ``cpu`` hierarchy, laid
    out the same way by the kubelet's cgroupfs driver, replaces it.
    """
    for line in Path(f"/proc/{pid}/task/{tid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            relative = path.strip("/")
            return f"{relative}/" if relative else "/"
    raise AssertionError(f"task {tid} of {pid} has no {controller} cgroup")
