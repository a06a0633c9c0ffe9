"""The profiles the agent loads, and the selection of one profile per pod.

Catalog order: custom profiles first (the ``profile_dirs`` in the order given, ``*.yaml`` and
``*.yml`` files by name within each), then the builtins by name. A custom profile with a
builtin's name replaces that builtin. When two custom files use one name, the first wins and
the second is reported.

Selection for one pod:

1. The annotation ``temper.codes/profile: NAME`` picks that profile, and ``none`` turns
   profiles off for the pod. A value that is not a valid name, or names no known profile, is
   reported and ignored, so step 2 decides.
2. Otherwise the first profile in catalog order with an image glob that matches the image of
   one of the pod's containers. A glob is matched against the image reference as written
   (``mysql:8.4``, ``docker.io/library/mysql@sha256:...``) and against its repository
   without tag and digest (``mysql``, ``docker.io/library/mysql``).
"""

import fnmatch
import importlib.resources
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.profiles.schema import (
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    NO_PROFILE,
    Profile,
    ProfileError,
    load_profile,
    load_profile_text,
)
from temper.annotations import PROFILE

PROFILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Catalog:
    """Known profiles in selection order, and the files that could not be used."""

    profiles: tuple[Profile, ...]
    problems: tuple[str, ...] = ()

    def get(self, name: str) -> Profile | None:
        """Return the profile called ``name``, or None."""
        return next((p for p in self.profiles if p.name == name), None)

    @property
    def names(self) -> list[str]:
        """Profile names in selection order."""
        return [p.name for p in self.profiles]


@dataclass(frozen=True)
class Selection:
    """The profile chosen for one pod and why; ``problem`` is set for a bad annotation."""

    profile: Profile | None
    reason: str
    problem: str | None = None


def builtin_profiles() -> list[Profile]:
    """Load the profiles shipped in ``agent/profiles/builtin``; they must all be valid."""
    directory = importlib.resources.files("agent.profiles").joinpath("builtin")
    profiles = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(PROFILE_SUFFIXES):
            profiles.append(load_profile_text(entry.read_text("utf-8"), f"builtin:{entry.name}"))
    return sorted(profiles, key=lambda p: p.name)


def profile_files(directories: Iterable[Path]) -> list[Path]:
    """Profile files of the directories in catalog order; hidden entries are skipped."""
    files: list[Path] = []
    for directory in directories:
        if directory.is_dir():
            files.extend(
                path
                for path in sorted(directory.iterdir())
                if path.suffix in PROFILE_SUFFIXES and not path.name.startswith(".")
            )
    return files


def directories_fingerprint(directories: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every profile file; a change means the catalog must be reread."""
    stamps = []
    for path in profile_files(directories):
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def load_catalog(directories: Sequence[Path]) -> Catalog:
    """Custom profiles from ``directories`` followed by the builtins they do not replace."""
    problems: list[str] = []
    custom: list[Profile] = []
    for directory in directories:
        if not directory.is_dir():
            problems.append(
                f"{directory}: profile directory not found; mount it or remove it from profile_dirs"
            )
    for path in profile_files(directories):
        try:
            profile = load_profile(path)
        except ProfileError as error:
            problems.extend(error.problems)
            continue
        first = next((p for p in custom if p.name == profile.name), None)
        if first is not None:
            problems.append(
                f"{path}: name {profile.name!r} is already used by {first.source}, which wins; "
                "rename one of them"
            )
            continue
        custom.append(profile)
    replaced = {p.name for p in custom}
    builtins = [p for p in builtin_profiles() if p.name not in replaced]
    return Catalog(tuple(custom + builtins), tuple(problems))


def image_repository(image: str) -> str:
    """Strip digest and tag from an image reference: ``host:5000/db/mysql:8@sha256:..``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def image_matches(image: str, pattern: str) -> bool:
    """True when the glob matches the image reference or its repository."""
    return fnmatch.fnmatchcase(image, pattern) or fnmatch.fnmatchcase(
        image_repository(image), pattern
    )


def pod_images(pod: Mapping[str, Any]) -> list[str]:
    """Images of the pod's (regular) containers."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return [str(c["image"]) for c in containers if isinstance(c, Mapping) and c.get("image")]


def _annotation(pod: Mapping[str, Any]) -> str | None:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(PROFILE)
    return None if value is None else str(value)


def select_profile(pod: Mapping[str, Any], catalog: Catalog) -> Selection:
    """Pick the pod's profile: the annotation first, then the container images."""
    problem = None
    value = _annotation(pod)
    if value == NO_PROFILE:
        return Selection(None, f"annotation {PROFILE}={NO_PROFILE}")
    if value is not None:
        if len(value) > MAX_NAME_LENGTH or not NAME_PATTERN.match(value):
            problem = (
                f"annotation {PROFILE}={value[:100]!r} is not a profile name; use a name such "
                f"as 'mysql-innodb', or {NO_PROFILE!r} to turn profiles off"
            )
        else:
            profile = catalog.get(value)
            if profile is not None:
                return Selection(profile, f"annotation {PROFILE}={value}")
            problem = (
                f"annotation {PROFILE}={value!r} names no known profile; known profiles: "
                f"{', '.join(catalog.names)}"
            )
    images = pod_images(pod)
    for profile in catalog.profiles:
        for image in images:
            if any(image_matches(image, pattern) for pattern in profile.images):
                return Selection(profile, f"image {image}", problem)
    return Selection(None, "no annotation and no matching image", problem)
