"""The workload profile format: YAML in, a validated :class:`Profile` out.

A profile gives the thread groups of one program their own scheduling treatment::

    name: mysql-innodb
    description: MySQL server with the InnoDB storage engine
    match:
      images: ["mysql", "*/mysql"]
    groups:
      - name: redo-log
        threads: ["ib_log_writer", "ib_log_flush"]
        treatment: exclusive

``threads`` lists thread-name prefixes. scx_layered matches a thread's name (the kernel's
``comm``) with ``CommPrefix`` only, so a pattern may end in one ``*`` (``ib_io_*`` is the
same as ``ib_io_``) but carries no other wildcard. The kernel keeps the first 15 bytes of a
thread name, so a longer prefix could never match and is rejected.

Within a profile the first group (in file order) whose prefix matches a thread wins. A later
prefix that an earlier, shorter prefix already covers could never take effect and is rejected.

Every problem is reported with the file, the field and the fix, all at once.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from agent.validation import MAX_AND_CONDITIONS, MAX_COMM_BYTES, MAX_OR_BLOCKS
from temper.errors import TemperError

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_LENGTH = 63
# The annotation value that turns profiles off for a pod; no profile may use it as its name.
NO_PROFILE = "none"
GLOB_CHARACTERS = "*?["
_TOP_LEVEL_KEYS = ("name", "description", "match", "groups")
_MATCH_KEYS = ("images",)
_GROUP_KEYS = ("name", "threads", "treatment")
# A block holds the pod's CgroupPrefix and the group's CommPrefix besides the exclusions.
MAX_EXCLUSIONS = MAX_AND_CONDITIONS - 2


class Treatment(StrEnum):
    """Scheduling treatment of a thread group; agent.profiles.layers builds the layer of each."""

    EXCLUSIVE = "exclusive"
    LATENCY = "latency"
    YIELD = "yield"
    DEFAULT = "default"


@dataclass(frozen=True)
class ThreadGroup:
    """Threads of one role in a program, named by comm prefixes."""

    name: str
    prefixes: tuple[str, ...]
    treatment: Treatment


@dataclass(frozen=True)
class Profile:
    """A validated workload profile."""

    name: str
    description: str
    images: tuple[str, ...]
    groups: tuple[ThreadGroup, ...]
    # The file the profile came from, for messages.
    source: str

    def exclusions(self, group_index: int, prefix: str) -> tuple[str, ...]:
        """Prefixes of earlier groups that are more specific than ``prefix``.

        A thread matching one of them belongs to that earlier group, so the OR block of
        ``prefix`` excludes them with ``CommPrefixExclude``.
        """
        earlier = [p for group in self.groups[:group_index] for p in group.prefixes]
        return tuple(p for p in earlier if p != prefix and p.startswith(prefix))


class ProfileError(TemperError, ValueError):
    """A profile file is invalid; ``problems`` lists each as ``file: field: problem; fix``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid workload profile:\n  " + "\n  ".join(problems))
        self.problems = list(problems)


def thread_prefix(pattern: str) -> str:
    """Strip the trailing ``*`` of a valid thread pattern, which leaves its CommPrefix."""
    return pattern[:-1] if pattern.endswith("*") else pattern


def _truncate_bytes(text: str, limit: int) -> str:
    return text.encode()[:limit].decode(errors="ignore")


def _check_thread_pattern(where: str, pattern: Any) -> tuple[str | None, str | None]:
    """Return (prefix, None) for a valid pattern, else (None, problem)."""
    if not isinstance(pattern, str):
        return None, f"{where}: expected a string, got {pattern!r}"
    if any(ord(character) < 32 or ord(character) == 127 for character in pattern):
        return None, f"{where}: {pattern!r} contains a control character; remove it"
    body = thread_prefix(pattern)
    inside = [body.index(character) for character in GLOB_CHARACTERS if character in body]
    if inside:
        index = min(inside)
        fix = f"use {body[:index]!r}" if index else "name the fixed start of the thread name"
        return None, (
            f"{where}: {pattern!r} has a {body[index]!r} inside; scx_layered matches thread "
            f"names by prefix only: {fix}"
        )
    if not body:
        return None, (
            f"{where}: {pattern!r} matches every thread, which the pod's tier layer already "
            "does: name a prefix or remove the group"
        )
    size = len(body.encode())
    if size > MAX_COMM_BYTES:
        return None, (
            f"{where}: {pattern!r} is {size} bytes, but the kernel keeps only the first "
            f"{MAX_COMM_BYTES} bytes of a thread name (comm), so it never matches: use "
            f"{_truncate_bytes(body, MAX_COMM_BYTES)!r}"
        )
    return body, None


def _check_name(where: str, value: Any, problems: list[str]) -> str:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: missing; set a lowercase name such as 'mysql-innodb'")
        return ""
    if len(value) > MAX_NAME_LENGTH or not NAME_PATTERN.match(value):
        problems.append(
            f"{where}: {value!r} is not a valid name; use at most {MAX_NAME_LENGTH} lowercase "
            "letters, digits and '-', starting and ending with a letter or digit"
        )
    return value


def _unknown_keys(where: str, data: Mapping[Any, Any], allowed: Sequence[str]) -> list[str]:
    return [
        f"{where}{key}: unknown key; expected one of {', '.join(allowed)}"
        for key in data
        if key not in allowed
    ]


def _parse_images(where: str, match: Any, problems: list[str]) -> tuple[str, ...]:
    if match is None:
        return ()
    if not isinstance(match, Mapping):
        problems.append(f"{where}: expected a mapping with 'images', got {match!r}")
        return ()
    problems.extend(_unknown_keys(f"{where}.", match, _MATCH_KEYS))
    images = match.get("images", [])
    if not isinstance(images, list):
        problems.append(f"{where}.images: expected a list of image globs, got {images!r}")
        return ()
    valid = []
    for index, image in enumerate(images):
        if not isinstance(image, str) or not image or any(c.isspace() for c in image):
            problems.append(
                f"{where}.images[{index}]: {image!r} is not an image glob; use a pattern "
                "such as 'mysql' or '*/mysql'"
            )
        else:
            valid.append(image)
    return tuple(valid)


def _parse_group(
    where: str, data: Any, problems: list[str]
) -> tuple[ThreadGroup | None, list[tuple[str, str]]]:
    """Return the group and its (where, prefix) pairs for the cross-group checks."""
    if not isinstance(data, Mapping):
        problems.append(f"{where}: expected a mapping with name, threads and treatment")
        return None, []
    problems.extend(_unknown_keys(f"{where}.", data, _GROUP_KEYS))
    name = _check_name(f"{where}.name", data.get("name"), problems)
    treatment_value = data.get("treatment")
    treatment: Treatment | None = None
    if treatment_value in {t.value for t in Treatment}:
        treatment = Treatment(treatment_value)
    else:
        choices = ", ".join(t.value for t in Treatment)
        problems.append(f"{where}.treatment: {treatment_value!r} is not one of {choices}")
    threads = data.get("threads")
    if not isinstance(threads, list) or not threads:
        problems.append(f"{where}.threads: expected a non-empty list of thread-name prefixes")
        return None, []
    located: list[tuple[str, str]] = []
    for index, pattern in enumerate(threads):
        prefix, problem = _check_thread_pattern(f"{where}.threads[{index}]", pattern)
        if problem:
            problems.append(problem)
        elif prefix is not None:
            located.append((f"{where}.threads[{index}]", prefix))
    if treatment is None or len(located) != len(threads):
        return None, located
    return ThreadGroup(name, tuple(p for _, p in located), treatment), located


def _check_overlaps(
    located: Sequence[tuple[int, str, str]], group_names: Sequence[str], problems: list[str]
) -> None:
    """Reject duplicate, redundant and shadowed prefixes; bound the exclusions per block."""
    for position, (group, where, prefix) in enumerate(located):
        exclusions = 0
        for earlier_group, earlier_where, earlier in located[:position]:
            if earlier == prefix:
                problems.append(
                    f"{where}: {prefix!r} is already listed at {earlier_where}: list each "
                    "prefix once"
                )
            elif earlier_group == group and (
                prefix.startswith(earlier) or earlier.startswith(prefix)
            ):
                shorter = min(earlier, prefix, key=len)
                problems.append(
                    f"{where}: {prefix!r} and {earlier_where} {earlier!r} overlap in one group; "
                    f"{shorter!r} covers both: remove the longer one"
                )
            elif prefix.startswith(earlier):
                problems.append(
                    f"{where}: {prefix!r} never takes effect: groups[{earlier_group}] "
                    f"({group_names[earlier_group]}) comes first and its prefix {earlier!r} "
                    f"covers every thread this one matches; move this group above "
                    f"groups[{earlier_group}]"
                )
            elif earlier.startswith(prefix):
                exclusions += 1
        if exclusions > MAX_EXCLUSIONS:
            problems.append(
                f"{where}: {prefix!r} has {exclusions} more specific prefixes in earlier "
                f"groups, but one match block holds at most {MAX_EXCLUSIONS} exclusions: "
                "merge those prefixes"
            )


def _check_layer_budget(groups: Sequence[ThreadGroup], problems: list[str]) -> None:
    for treatment in (Treatment.EXCLUSIVE, Treatment.LATENCY, Treatment.YIELD):
        count = sum(len(g.prefixes) for g in groups if g.treatment is treatment)
        if count > MAX_OR_BLOCKS:
            problems.append(
                f"groups: {count} thread prefixes have treatment {treatment.value!r}, but one "
                f"layer holds at most {MAX_OR_BLOCKS} OR blocks, so no pod could get them: "
                "merge prefixes"
            )


def parse_profile(data: Any, source: str) -> Profile:
    """Validate a parsed YAML document; raise ProfileError listing every problem."""
    if not isinstance(data, Mapping):
        raise ProfileError([f"{source}: expected a mapping with {', '.join(_TOP_LEVEL_KEYS)}"])
    problems: list[str] = _unknown_keys("", data, _TOP_LEVEL_KEYS)

    name = _check_name("name", data.get("name"), problems)
    if name == NO_PROFILE:
        problems.append(f"name: {NO_PROFILE!r} is reserved for turning profiles off; rename it")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append("description: missing; say in one sentence which program this is for")
        description = ""
    images = _parse_images("match", data.get("match"), problems)

    raw_groups = data.get("groups")
    groups: list[ThreadGroup] = []
    located: list[tuple[int, str, str]] = []
    group_names: list[str] = []
    if not isinstance(raw_groups, list) or not raw_groups:
        problems.append("groups: expected a non-empty list of thread groups")
    else:
        for index, raw in enumerate(raw_groups):
            group, prefixes = _parse_group(f"groups[{index}]", raw, problems)
            name_value = raw.get("name") if isinstance(raw, Mapping) else None
            group_names.append(str(name_value))
            if group_names.count(str(name_value)) > 1 and name_value:
                problems.append(f"groups[{index}].name: {name_value!r} is used twice; rename one")
            located.extend((index, where, prefix) for where, prefix in prefixes)
            if group is not None:
                groups.append(group)
        _check_overlaps(located, group_names, problems)
        _check_layer_budget(groups, problems)

    if problems:
        raise ProfileError([f"{source}: {problem}" for problem in problems])
    return Profile(name, description.strip(), images, tuple(groups), source)


def load_profile_text(text: str, source: str) -> Profile:
    """Parse and validate the YAML text of one profile."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProfileError([f"{source}: invalid YAML: {error}"]) from error
    if data is None:
        raise ProfileError([f"{source}: the file is empty; write a profile mapping"])
    return parse_profile(data, source)


def load_profile(path: Path) -> Profile:
    """Read, parse and validate one profile file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError([f"{path}: cannot read the file: {error}"]) from error
    return load_profile_text(text, str(path))
