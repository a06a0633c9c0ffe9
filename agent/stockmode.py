"""Stock-kernel mode: ``SCHED_IDLE`` treatment for batch tiers through cgroup ``cpu.idle``.

On kernels without sched_ext, the low and background tiers still get out of the way: their
pod cgroups get ``cpu.idle = 1``, which makes the CFS group entity of the pod a SCHED_IDLE
entity (Linux 5.15+, cgroup v1 ``cpu`` controller and cgroup v2 alike). The kubelet does not
manage ``cpu.idle``, so nothing fights the change.

Every value changed is recorded first in a state file with its original content, and restored
when a pod leaves the batch tiers, when the mode is switched off, and when the agent stops.
A new agent reads the state file, so values changed by an agent that crashed are restored
too.
"""

import logging
from collections.abc import Iterable
from pathlib import Path

import orjson

from agent.cgroups import CgroupLayout
from agent.podinfo import PodInfo

log = logging.getLogger(__name__)

IDLE_FILE = "cpu.idle"


class StockKernelMode:
    """Sets and restores ``cpu.idle`` on the pod cgroups of batch-tier pods."""

    def __init__(self, layout: CgroupLayout, state_file: Path) -> None:
        self.layout = layout
        self.state_file = state_file
        # cgroup directory -> original cpu.idle content
        self.changed: dict[str, str] = self._load()
        self._missing_reported: set[str] = set()

    def _load(self) -> dict[str, str]:
        try:
            data = orjson.loads(self.state_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.error(
                "cannot read the stock-kernel-mode state file; values changed by an earlier "
                "agent will not be restored",
                extra={"path": str(self.state_file), "error": str(error)},
            )
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(self.changed))
        temporary.replace(self.state_file)

    def apply(self, pods: Iterable[PodInfo]) -> list[str]:
        """Give batch pods ``cpu.idle = 1`` and restore every other changed cgroup.

        Returns the pod keys whose cgroup is missing on this node (reported, retried later).
        """
        wanted: dict[str, str] = {}
        missing: list[str] = []
        for pod in pods:
            if not pod.tier.is_batch or pod.terminal:
                continue
            directory = self.layout.pod_directory(pod.cgroup_uid, pod.qos)
            if not (directory / IDLE_FILE).exists():
                missing.append(pod.key)
                if pod.key not in self._missing_reported:
                    self._missing_reported.add(pod.key)
                    log.warning(
                        "pod cgroup not found, cpu.idle not set; retrying on the next pass",
                        extra={"pod": pod.key, "path": str(directory / IDLE_FILE)},
                    )
                continue
            wanted[str(directory)] = pod.key
        for stale in sorted(set(self.changed) - set(wanted)):
            self._restore(stale)
        for wanted_directory, key in wanted.items():
            self._set_idle(Path(wanted_directory), key)
        return missing

    def _set_idle(self, directory: Path, pod_key: str) -> None:
        path = directory / IDLE_FILE
        try:
            current = path.read_text().strip()
            if str(directory) not in self.changed:
                if current == "1":
                    return  # someone else set it; not ours to restore
                self.changed[str(directory)] = current
                self._save()
            if current != "1":
                path.write_text("1")
                log.info("cpu.idle set", extra={"pod": pod_key, "path": str(path)})
        except OSError as error:
            log.error(
                "cannot set cpu.idle; the pod keeps its normal CPU weight",
                extra={"pod": pod_key, "path": str(path), "error": str(error)},
            )

    def _restore(self, directory: str) -> None:
        original = self.changed.pop(directory)
        path = Path(directory) / IDLE_FILE
        try:
            path.write_text(original)
            log.info("cpu.idle restored", extra={"path": str(path), "value": original})
        except FileNotFoundError:
            pass  # the pod and its cgroup are gone
        except OSError as error:
            log.error(
                "cannot restore cpu.idle",
                extra={"path": str(path), "value": original, "error": str(error)},
            )
        self._save()

    def restore_all(self) -> None:
        """Put back every value this mode changed."""
        for directory in sorted(self.changed):
            self._restore(directory)
