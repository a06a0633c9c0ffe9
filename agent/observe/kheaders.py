"""Kernel headers for BCC when the running kernel has none of its own.

BCC compiles its programs against ``/lib/modules/<release>/build``. Our programs take the
layout of tracepoint arguments from tracefs (BCC reads it at compile time) and the offsets of
the task fields they read from BTF (:mod:`agent.observe.btf`), never from the headers, so
headers of another kernel version (for example Debian's 6.1 headers on a 6.18 kernel) compile
them correctly. With
``BCC_KERNEL_SOURCE`` set, BCC looks for every header below that single directory, while Debian
splits headers into an architecture directory (``linux-headers-<v>-amd64``: generated files)
and a common one (``linux-headers-<v>-common``). :func:`prepare_bcc_kernel_source` merges the
two with symbolic links under the agent's state directory and points ``BCC_KERNEL_SOURCE`` at it.
"""

import logging
import os
import platform
import re
from pathlib import Path

log = logging.getLogger(__name__)

KCONFIG = "include/linux/kconfig.h"
_ARCH_DIRS = {"x86_64": "x86", "aarch64": "arm64", "ppc64le": "powerpc", "s390x": "s390"}


class KernelHeadersError(Exception):
    """No usable kernel headers were found for BCC."""


def kernel_arch() -> str:
    """Return the kernel's name for this machine's architecture (``x86``, ``arm64``)."""
    machine = platform.machine()
    return _ARCH_DIRS.get(machine, machine)


def _common_directory(arch_dir: Path) -> Path | None:
    """Find the common half of a Debian split header package through its one-line Makefile."""
    try:
        makefile = (arch_dir / "Makefile").read_text()
    except OSError:
        return None
    match = re.search(r"^include\s+(\S+)/Makefile\s*$", makefile, re.MULTILINE)
    if match and (Path(match.group(1)) / KCONFIG).is_file():
        return Path(match.group(1))
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def find_headers(source_root: Path = Path("/usr/src")) -> Path | None:
    """Find the newest architecture header directory under ``source_root`` (Debian layout)."""
    arch = kernel_arch()
    candidates = [
        path
        for path in source_root.glob("linux-headers-*")
        if (path / "include/generated/autoconf.h").is_file()
        and (path / "arch" / arch).is_dir()
        and not path.name.endswith(("-rt-amd64", "-rt-arm64"))
    ]
    return max(candidates, key=_version_key, default=None)


def _link_entries(target: Path, sources: list[Path]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if not source.is_dir():
            continue
        for entry in source.iterdir():
            link = target / entry.name
            if not link.is_symlink() and not link.exists():
                link.symlink_to(entry)


def merge_split_headers(arch_dir: Path, common_dir: Path, destination: Path) -> Path:
    """Build one header tree from the architecture and common halves; return its path."""
    arch = kernel_arch()
    tree = destination / arch_dir.name
    _link_entries(tree / "include", [common_dir / "include", arch_dir / "include"])
    arch_include = f"arch/{arch}/include"
    _link_entries(tree / arch_include, [common_dir / arch_include, arch_dir / arch_include])
    return tree


def prepare_bcc_kernel_source(
    state_dir: Path, headers: Path | None, release: str | None = None
) -> str | None:
    """Set ``BCC_KERNEL_SOURCE`` when BCC would not find headers on its own; return its value.

    Returns None when nothing had to be done (the variable is already set, or the running
    kernel's own headers are installed). Raises KernelHeadersError when no headers are found.
    """
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return None
    release = release or os.uname().release
    modules = Path("/lib/modules") / release
    if (modules / "build" / KCONFIG).is_file() or (modules / "source" / KCONFIG).is_file():
        return None
    chosen = headers or find_headers()
    if chosen is None:
        raise KernelHeadersError(
            f"no kernel headers for BCC: /lib/modules/{release}/build is missing and no "
            "/usr/src/linux-headers-* directory was found; install linux-headers-"
            f"{release} (or Debian's linux-headers-amd64) or set --bpf-kernel-headers-path"
        )
    if (chosen / KCONFIG).is_file():
        tree = chosen
    else:
        common = _common_directory(chosen)
        if common is None:
            raise KernelHeadersError(
                f"kernel headers at {chosen} lack {KCONFIG} and name no common header "
                "directory in their Makefile; point --bpf-kernel-headers-path at a complete tree"
            )
        tree = merge_split_headers(chosen, common, state_dir / "bcc-kernel-headers")
    os.environ["BCC_KERNEL_SOURCE"] = str(tree)
    log.info(
        "BCC compiles against kernel headers of another release",
        extra={"running": release, "headers": str(chosen), "bcc_kernel_source": str(tree)},
    )
    return str(tree)
