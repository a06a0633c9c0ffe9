"""The ``layer_mismatch`` invariant: compare scx_layered's task count per layer with the pods.

scx_layered reports how many tasks each layer contains, not which ones. The agent can
compute which layer its config puts each pod thread in. This module lists the threads in the
pod cgroups, puts each in the first layer of the running config whose match it satisfies
(as scx_layered does) and compares the result with the reported counts. docs/observe.md
gives the definition, its bounds and its limits. In short:

- scx_layered assigns a task to a layer when the task next becomes runnable after the
  scheduler attached (or after the task changed cgroup or name). A thread that has slept
  since then is counted in no layer, or in its old one. So each thread counts as *settled*
  once it has run since the first count of this scheduler instance (its schedstat
  timeslice count moved, or it did not exist at that first count), else as *unsettled*.
- Per layer, the settled threads give a lower bound of the expected count, settled plus
  unsettled an upper bound. ``mismatch`` is how far the reported count lies outside these
  bounds: tasks that cannot be where the config puts them.
- A layer that can also take tasks outside the pods has no upper bound, so only a shortfall
  counts there. Such a layer has an OR block without a ``CgroupPrefix`` or ``CgroupRegex``,
  like the catch-all.
- The threads are counted right before and right after the stats request, and the bounds
  cover both counts, so threads starting or exiting meanwhile do not count as mismatches.
- scx_layered keeps counting a task that has exited until it is reaped, while
  ``cgroup.threads`` no longer lists it. When a layer contains more tasks than its upper
  bound, the check looks for such zombies in procfs (state ``Z``, in a pod cgroup) and adds
  them to the bound of their layer.
"""

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.observe.targets import PodTarget, tasks_file

if TYPE_CHECKING:
    from agent.observe.linter import LinterCounts

log = logging.getLogger(__name__)

_CGROUP_KINDS = ("CgroupPrefix", "CgroupSuffix", "CgroupContains", "CgroupRegex")
_COMM_KINDS = ("CommPrefix", "PcommPrefix")
_EXCLUDE_SUFFIX = "Exclude"
# Conditions that bind a block to the pod cgroups the check lists.
_POD_BOUND_KINDS = frozenset({"CgroupPrefix", "CgroupRegex"})


class LayerCheckError(Exception):
    """The config uses a match the check cannot evaluate from cgroups and thread names."""


@dataclass(frozen=True)
class _Condition:
    kind: str
    value: str
    exclude: bool
    regex: re.Pattern[str] | None = None


@dataclass(frozen=True)
class CompiledLayer:
    name: str
    blocks: tuple[tuple[_Condition, ...], ...]
    pod_bound: bool


def _condition(layer: str, raw: Mapping[str, Any]) -> _Condition:
    if len(raw) != 1:
        raise LayerCheckError(f"layer {layer!r}: a match must have one key, got {dict(raw)}")
    ((key, value),) = raw.items()
    kind = key.removesuffix(_EXCLUDE_SUFFIX)
    exclude = kind != key
    if kind not in _CGROUP_KINDS + _COMM_KINDS or (exclude and kind not in _COMM_KINDS):
        raise LayerCheckError(
            f"layer {layer!r}: the layer check cannot evaluate the match {key}, only "
            f"{', '.join(_CGROUP_KINDS + _COMM_KINDS)} and the *Exclude forms of the last two"
        )
    if not isinstance(value, str):
        raise LayerCheckError(f"layer {layer!r}: {key} has the value {value!r}, not a string")
    try:
        regex = re.compile(value) if kind == "CgroupRegex" else None
    except re.error as error:
        raise LayerCheckError(f"layer {layer!r}: invalid CgroupRegex {value!r}: {error}") from None
    return _Condition(kind, value, exclude, regex)


def compile_config(config: Sequence[Mapping[str, Any]]) -> list[CompiledLayer]:
    """Turn a layer config into matchers; raise LayerCheckError for matches it cannot model."""
    layers = []
    for spec in config:
        name = str(spec.get("name", ""))
        blocks = tuple(
            tuple(_condition(name, raw) for raw in block) for block in spec.get("matches", [])
        )
        pod_bound = all(
            any(c.kind in _POD_BOUND_KINDS and not c.exclude for c in block) for block in blocks
        )
        layers.append(CompiledLayer(name, blocks, pod_bound and bool(blocks)))
    return layers


class _Task:
    """A thread to match. Its names are read from procfs only when a condition needs them."""

    def __init__(self, proc: Path, tid: int, cgroup: str, absolute: str) -> None:
        self.proc = proc
        self.tid = tid
        self.cgroup = cgroup
        self.absolute = absolute
        self._comm: str | None = None
        self._pcomm: str | None = None

    def comm(self) -> str:
        if self._comm is None:
            self._comm = _read(self.proc / str(self.tid) / "comm")
        return self._comm

    def pcomm(self) -> str:
        if self._pcomm is None:
            tgid = str(self.tid)
            for line in _read(self.proc / str(self.tid) / "status").splitlines():
                if line.startswith("Tgid:"):
                    tgid = line.split()[1]
                    break
            self._pcomm = _read(self.proc / tgid / "comm")
        return self._pcomm


def _read(path: Path) -> str:
    try:
        return path.read_text().rstrip("\n")
    except OSError:
        return ""


def _holds(condition: _Condition, task: _Task) -> bool:
    kind, value = condition.kind, condition.value
    if kind == "CgroupPrefix":
        result = task.cgroup.startswith(value)
    elif kind == "CgroupSuffix":
        result = task.cgroup.endswith(value)
    elif kind == "CgroupContains":
        result = value in task.cgroup
    elif kind == "CgroupRegex":
        assert condition.regex is not None
        result = condition.regex.search(task.absolute) is not None
    elif kind == "CommPrefix":
        result = task.comm().startswith(value)
    else:
        result = task.pcomm().startswith(value)
    return result != condition.exclude


def layer_for(layers: Sequence[CompiledLayer], task: _Task) -> str | None:
    """Return the first layer with an OR block whose conditions all hold (an empty one does)."""
    for layer in layers:
        if any(all(_holds(c, task) for c in block) for block in layer.blocks):
            return layer.name
    return None


# The layers a thread of one cgroup can land in, in order, each with the thread-name
# conditions of its OR blocks whose cgroup conditions hold there. The last entry may have a
# block without conditions: every thread that gets that far lands in it.
_CgroupPlan = tuple[tuple[str, tuple[tuple[_Condition, ...], ...]], ...]


def _cgroup_plan(layers: Sequence[CompiledLayer], cgroup: str, absolute: str) -> _CgroupPlan:
    """Evaluate the cgroup conditions of ``layers`` once for every thread of a cgroup."""
    probe = _Task(Path("/nonexistent"), 0, cgroup, absolute)
    plan = []
    for layer in layers:
        blocks = []
        for block in layer.blocks:
            if all(_holds(c, probe) for c in block if c.kind in _CGROUP_KINDS):
                blocks.append(tuple(c for c in block if c.kind not in _CGROUP_KINDS))
        if blocks:
            plan.append((layer.name, tuple(blocks)))
            if () in blocks:
                break  # every thread that gets here matches: later layers are unreachable
    return tuple(plan)


def _layer_in_plan(plan: _CgroupPlan, task: _Task) -> str | None:
    for name, blocks in plan:
        if any(all(_holds(c, task) for c in block) for block in blocks):
            return name
    return None


# A cgroup directory's link count and its subdirectories, as last listed.
_Listing = tuple[int, list[str]]


def _cgroup_directories(top: str, listed: dict[str, _Listing]) -> list[str]:
    """``top`` and every directory below it (cgroups), without following symlinks.

    A cgroup directory's link count is 2 plus its subdirectories. So a directory with a link
    count of 2 has none, and one whose count and listed subdirectories are all unchanged since
    ``listed`` (updated here) has the same ones: neither is listed again, a ``stat`` suffices.
    """
    found: list[str] = []
    pending: list[tuple[str, os.stat_result | None]] = [(top, None)]
    while pending:
        directory, status = pending.pop()
        try:
            if status is None:
                status = os.stat(directory, follow_symlinks=False)
            found.append(directory)
            links = status.st_nlink
            if links == 2:
                continue
            children: list[tuple[str, os.stat_result | None]] | None = None
            known = listed.get(directory)
            if known is not None and known[0] == links == 2 + len(known[1]):
                try:
                    children = [(path, os.stat(path, follow_symlinks=False)) for path in known[1]]
                except OSError:
                    children = None  # one of them is gone: list the directory
            if children is None:
                with os.scandir(directory) as entries:
                    paths = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
                listed[directory] = (links, paths)
                children = [(path, None) for path in paths]
            pending += children
        except OSError:
            continue  # removed while listed
    return found


def _read_bytes(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


@dataclass
class TaskCounts:
    """Pod threads per layer of one count: settled (ran since the baseline) and unsettled."""

    settled: dict[str, int] = field(default_factory=dict)
    unsettled: dict[str, int] = field(default_factory=dict)
    # Each thread's cgroup as scx_layered formats it.
    cgroups: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerResult:
    """One layer of a comparison; ``expected_max`` is None for layers open to other tasks."""

    reported: int
    expected_min: int
    expected_max: int | None
    mismatch: int


@dataclass(frozen=True)
class CheckResult:
    """A comparison, or why none was made (``detail``)."""

    layers: Mapping[str, LayerResult]
    mismatch: int
    detail: str
    at_seconds: float


def _schedstat_timeslices(proc: str, tid: int) -> int | None:
    data = _read_bytes(f"{proc}/{tid}/schedstat")
    try:
        return None if data is None else int(data.split()[2])
    except (IndexError, ValueError):
        return None


class LayerCheck:
    """Counts pod threads per layer and compares them with scx_layered's counts."""

    def __init__(
        self,
        layout: CgroupLayout,
        counts: "LinterCounts | None" = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.layout = layout
        self.counts = counts
        self.proc = proc_root
        self.hierarchy = layout.root if layout.version is CgroupVersion.V2 else layout.root / "cpu"
        self._instance: object = None
        self._baseline: dict[int, int] | None = None
        self._settled: set[int] = set()
        self._compiled: tuple[Sequence[Mapping[str, Any]], list[CompiledLayer]] | None = None
        # Plans of the cgroups seen at the last count, for the layers they were made for.
        self._plans: dict[str, _CgroupPlan] = {}
        # Per pod cgroup: the subdirectories of its cgroups at the last count.
        self._listed: dict[str, dict[str, _Listing]] = {}
        self._plans_for: Sequence[CompiledLayer] | None = None
        self.result: CheckResult | None = None
        self.mismatch_total = 0

    def reset(self) -> None:
        """Forget the baseline and the last result (the scheduler detached)."""
        self._instance = None
        self._baseline = None
        self._settled.clear()
        self.result = None

    def layers(self, config: Sequence[Mapping[str, Any]]) -> list[CompiledLayer]:
        """Return the compiled config, compiled again only when another config object is passed."""
        if self._compiled is None or self._compiled[0] is not config:
            self._compiled = (config, compile_config(config))
        return self._compiled[1]

    def count(
        self, instance: object, layers: Sequence[CompiledLayer], targets: Iterable[PodTarget]
    ) -> TaskCounts:
        """List the threads of the pods' cgroups and count them per layer.

        ``instance`` identifies the running scheduler; when it changes, this count becomes
        the baseline and every thread in it is unsettled. Blocking I/O: run it in a thread.
        The cgroup conditions of the layers are evaluated once per cgroup. Thread names are
        read only when a layer that a cgroup's threads can reach tests them.
        """
        if instance != self._instance:
            self._instance, self._baseline = instance, None
            self._settled.clear()
        if self._plans_for is not layers:
            self._plans_for, self._plans = layers, {}
        first = self._baseline is None
        baseline: dict[int, int] = {} if self._baseline is None else self._baseline
        settled = self._settled
        counts = TaskCounts(
            settled=dict.fromkeys((layer.name for layer in layers), 0),
            unsettled=dict.fromkeys((layer.name for layer in layers), 0),
        )
        seen: set[int] = set()
        plans: dict[str, _CgroupPlan] = {}
        listing = tasks_file(self.layout)
        hierarchy = str(self.hierarchy)
        prefix = f"{hierarchy}/"
        root = str(self.layout.root)
        walked: dict[str, dict[str, _Listing]] = {}
        for target in targets:
            top = str(target.directory)
            known = self._listed.get(top, {})
            directories = _cgroup_directories(top, known)
            walked[top] = {path: known[path] for path in directories if path in known}
            for directory in directories:
                data = _read_bytes(f"{directory}/{listing}")
                if not data:
                    continue  # no thread, or the cgroup went away while it was listed
                try:
                    tids = list(map(int, data.split()))
                except ValueError:
                    continue
                if directory.startswith(prefix):
                    relative = directory[len(prefix) :]
                else:
                    relative = os.path.relpath(directory, hierarchy)
                cgroup = f"{relative}/"
                absolute = f"{root}/{relative}"
                plan = plans.get(cgroup) or self._plans.get(cgroup)
                if plan is None:
                    plan = _cgroup_plan(layers, cgroup, absolute)
                plans[cgroup] = plan
                for layer, listed in self._by_layer(plan, tids, cgroup, absolute).items():
                    members = listed
                    if first or not settled.issuperset(listed):
                        members = self._settle(listed, baseline, first=first)
                    seen.update(members)
                    counts.cgroups.update(dict.fromkeys(members, cgroup))
                    ran = len(settled.intersection(members))
                    counts.settled[layer] += ran
                    counts.unsettled[layer] += len(members) - ran
        self._plans = plans
        self._listed = walked
        self._settled &= seen
        self._baseline = {tid: value for tid, value in baseline.items() if tid in seen}
        return counts

    def _settle(self, tids: list[int], baseline: dict[int, int], *, first: bool) -> list[int]:
        """Record the baseline (first count) or which threads ran since; return those alive.

        Settled threads stay settled: only the others cost a read of their schedstat.
        """
        settled, proc = self._settled, str(self.proc)
        alive = []
        for tid in tids:
            if not first and tid in settled:
                alive.append(tid)
                continue
            slices = _schedstat_timeslices(proc, tid)
            if slices is None:
                continue  # exited since the listing
            if first:
                baseline[tid] = slices
            elif tid not in baseline or slices > baseline[tid]:
                settled.add(tid)
            alive.append(tid)
        return alive

    def _by_layer(
        self, plan: _CgroupPlan, tids: list[int], cgroup: str, absolute: str
    ) -> dict[str, list[int]]:
        """Split the threads of one cgroup by layer; threads in no layer are left out."""
        if not plan:
            return {}
        name, blocks = plan[0]
        if () in blocks:
            return {name: tids}  # the cgroup decides: no thread name is needed
        by_layer: dict[str, list[int]] = {}
        for tid in tids:
            layer = _layer_in_plan(plan, _Task(self.proc, tid, cgroup, absolute))
            if layer is not None:
                by_layer.setdefault(layer, []).append(tid)
        return by_layer

    def compare(
        self,
        layers: Sequence[CompiledLayer],
        before: TaskCounts,
        after: TaskCounts,
        reported: Mapping[str, int],
        at_seconds: float,
    ) -> CheckResult:
        """Compare the reported counts with both counts, keep and return the result.

        Blocking I/O when a layer contains more tasks than expected: run it in a thread.
        """
        names = [layer.name for layer in layers]
        if sorted(names) != sorted(reported):
            return self.skip(
                f"scx_layered reports the layers {sorted(reported)} but the config of the "
                f"running scheduler has {sorted(names)}",
                at_seconds,
            )
        low = {name: min(before.settled[name], after.settled[name]) for name in names}
        high = {
            name: max(
                before.settled[name] + before.unsettled[name],
                after.settled[name] + after.unsettled[name],
            )
            for name in names
        }
        bounded = {layer.name for layer in layers if layer.pod_bound}
        if any(reported[name] > high[name] for name in bounded):
            for name, zombies in self.zombies(layers, after.cgroups).items():
                high[name] += zombies
        results: dict[str, LayerResult] = {}
        for name in names:
            count = reported[name]
            mismatch = max(0, low[name] - count)
            if name in bounded:
                mismatch += max(0, count - high[name])
            upper = high[name] if name in bounded else None
            results[name] = LayerResult(count, low[name], upper, mismatch)
        total = sum(result.mismatch for result in results.values())
        self.mismatch_total += total
        if self.counts is not None:
            self.counts.events["layer_mismatch"] += total
        self.result = CheckResult(results, total, "", at_seconds)
        return self.result

    def zombies(
        self, layers: Sequence[CompiledLayer], threads: Mapping[int, str]
    ) -> dict[str, int]:
        """Count the exited, unreaped processes of the pod cgroups per layer.

        ``threads`` maps the listed pod threads to their cgroups. This scans every process
        in procfs, so it runs only when a layer reports more tasks than expected.
        """
        found: dict[str, int] = {}
        try:
            pids = [int(entry.name) for entry in os.scandir(self.proc) if entry.name.isdigit()]
        except OSError:
            return found
        for pid in pids:
            if pid in threads:
                continue
            fields = _read(self.proc / str(pid) / "stat").rpartition(")")[2].split()
            if len(fields) < 2 or fields[0] != "Z":
                continue
            cgroup = self._zombie_cgroup(pid)
            if cgroup is None:
                cgroup = threads.get(int(fields[1]))  # cgroup v1: the parent's
            if cgroup is None:
                continue
            task = _Task(self.proc, pid, cgroup, f"{self.layout.root}/{cgroup.rstrip('/')}")
            layer = layer_for(layers, task)
            if layer is not None:
                found[layer] = found.get(layer, 0) + 1
        return found

    def _zombie_cgroup(self, pid: int) -> str | None:
        """Read a zombie's cgroup v2 path, which procfs keeps reporting after the exit.

        On cgroup v1 procfs shows zombies in the root cgroup, so the caller uses the cgroup
        of the parent, when the parent is a pod thread.
        """
        if self.layout.version is not CgroupVersion.V2:
            return None
        for line in _read(self.proc / str(pid) / "cgroup").splitlines():
            if line.startswith("0::"):
                relative = line[3:].removesuffix(" (deleted)").strip("/")
                return f"{relative}/" if relative else "/"
        return None

    def skip(self, detail: str, at_seconds: float, *, logged: bool = True) -> CheckResult:
        """Record that no comparison was made, and why; log each new reason once if ``logged``."""
        if logged and (self.result is None or self.result.detail != detail):
            log.info("layer check skipped", extra={"reason": detail})
        self.result = CheckResult({}, 0, detail, at_seconds)
        return self.result
