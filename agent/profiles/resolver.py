"""The agent's view of workload profiles: a current catalog and the profile layers per pass.

The catalog is reread whenever a file in ``profile_dirs`` appears, disappears or changes
(a ConfigMap update swaps the files), which the reconcile loop notices within one pass.
Every problem (an invalid file, a bad annotation, a treatment that was not applied) is
logged once per pod and message. None of them stops the rest of the config.
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.cgroups import CgroupLayout
from agent.podinfo import PodInfo
from agent.profiles.catalog import Catalog, directories_fingerprint, load_catalog, select_profile
from agent.profiles.layers import ProfiledPod, ProfileLayerPlan, compute_profile_layers
from agent.topology import Topology
from temper.tiers import Tier

log = logging.getLogger(__name__)


class ProfileResolver:
    """Selects each pod's profile and builds the shared profile layers."""

    def __init__(self, profile_dirs: Sequence[Path]) -> None:
        self.profile_dirs = tuple(profile_dirs)
        self.catalog = Catalog(())
        self.plan = ProfileLayerPlan(layers=[])
        self._fingerprint: object = None
        # Messages already logged, per pod key; pruned when the pod goes away.
        self._reported: dict[str, set[str]] = {}

    def refresh(self) -> Catalog:
        """Reload the catalog when the profile files changed; log each invalid file."""
        fingerprint = (
            tuple(directory.is_dir() for directory in self.profile_dirs),
            directories_fingerprint(self.profile_dirs),
        )
        if fingerprint == self._fingerprint:
            return self.catalog
        self._fingerprint = fingerprint
        self.catalog = load_catalog(self.profile_dirs)
        log.info(
            "workload profiles loaded",
            extra={
                "profiles": self.catalog.names,
                "profile_dirs": [str(d) for d in self.profile_dirs],
            },
        )
        for problem in self.catalog.problems:
            log.error("ignoring an invalid workload profile file", extra={"problem": problem})
        return self.catalog

    def _report_once(self, pod: str, message: str) -> bool:
        seen = self._reported.setdefault(pod, set())
        if message in seen:
            return False
        seen.add(message)
        return True

    def profile_layers(
        self,
        pods: Mapping[str, Mapping[str, Any]],
        infos: Iterable[PodInfo],
        layout: CgroupLayout,
        topology: Topology,
    ) -> list[dict[str, Any]]:
        """Select each pod's profile and build this pass's profile layers.

        ``pods`` maps pod keys to pod objects, for the annotations and images.
        """
        catalog = self.refresh()
        infos = [info for info in infos if not info.terminal]
        profiled = []
        for info in infos:
            pod = pods.get(info.key)
            if pod is None:
                continue
            selection = select_profile(pod, catalog)
            if selection.problem and self._report_once(info.key, selection.problem):
                log.warning(
                    "ignoring the pod's profile annotation",
                    extra={"pod": info.key, "problem": selection.problem},
                )
            if selection.profile is not None:
                profiled.append(ProfiledPod(info, selection.profile))
                message = f"profile {selection.profile.name} ({selection.reason})"
                if self._report_once(info.key, message):
                    log.info(
                        "workload profile selected",
                        extra={
                            "pod": info.key,
                            "profile": selection.profile.name,
                            "selected_by": selection.reason,
                        },
                    )
        critical_request = sum(i.cpu_request_millicores for i in infos if i.tier is Tier.CRITICAL)
        self.plan = compute_profile_layers(
            profiled, layout, topology, critical_request_millicores=critical_request
        )
        for skipped in self.plan.skipped:
            message = f"{skipped.group}: {skipped.reason}"
            if self._report_once(skipped.pod, message):
                log.log(
                    logging.WARNING if skipped.layer_full else logging.INFO,
                    "profile treatment not applied; the threads stay in the pod's tier layer",
                    extra={
                        "pod": skipped.pod,
                        "profile": skipped.profile,
                        "group": skipped.group,
                        "treatment": skipped.treatment.value,
                        "reason": skipped.reason,
                    },
                )
        present = set(pods)
        for key in [k for k in self._reported if k not in present]:
            del self._reported[key]
        return self.plan.layers
