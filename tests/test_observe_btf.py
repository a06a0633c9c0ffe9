"""The BTF reader that gives the BPF programs their task field offsets."""

import struct
from pathlib import Path

import pytest

from agent.observe.btf import TASK_FIELDS, VMLINUX_BTF, Btf, BtfError, task_field_offsets


class BtfBuilder:
    """Writes a small BTF blob: a fake of the kernel's, for the parser's edge cases."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def name(self, text: str) -> int:
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str, vlen: int, size_or_type: int, extra: bytes = b"") -> int:
        info = (kind << 24) | vlen
        self.types += struct.pack("<III", self.name(name) if name else 0, info, size_or_type)
        self.types += extra
        self.count += 1
        return self.count

    def integer(self, name: str, size: int) -> int:
        return self.add(1, name, 0, size, struct.pack("<I", size * 8))

    def composite(
        self, kind: int, name: str, size: int, members: list[tuple[str, int, int]]
    ) -> int:
        extra = b"".join(
            struct.pack("<III", self.name(member) if member else 0, type_id, bits)
            for member, type_id, bits in members
        )
        return self.add(kind, name, len(members), size, extra)

    def blob(self, magic: int = 0xEB9F) -> bytes:
        header = struct.pack(
            "<HBBIIIII", magic, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return header + self.types + self.strings


def task_like() -> BtfBuilder:
    """struct task_struct { int pid; union { u64 a; }; struct sched_info info; } with typedefs."""
    btf = BtfBuilder()
    u64 = btf.integer("unsigned long long", 8)
    s32 = btf.integer("int", 4)
    u64_typedef = btf.add(8, "u64", 0, u64)
    info = btf.composite(4, "sched_info", 16, [("pcount", u64, 0), ("run_delay", u64_typedef, 64)])
    const_info = btf.add(10, "", 0, info)
    anonymous = btf.composite(5, "", 8, [("first", u64, 0), ("second", s32, 0)])
    btf.add(7, "task_struct", 0, 0)  # a forward declaration comes first, as in vmlinux
    members = [("pid", s32, 0), ("", anonymous, 64), ("sched_info", const_info, 128)]
    btf.composite(4, "task_struct", 40, members)
    return btf


def test_offsets_follow_nested_members_typedefs_and_anonymous_unions() -> None:
    btf = Btf(task_like().blob())
    assert btf.member_offset("task_struct", "pid") == 0
    assert btf.member_offset("task_struct", "second") == 8
    assert btf.member_offset("task_struct", "sched_info.run_delay") == 24


def test_missing_member_names_the_path() -> None:
    btf = Btf(task_like().blob(), "fake")
    with pytest.raises(BtfError, match=r"fake: task_struct.sched_info has no member 'last_queued'"):
        btf.member_offset("task_struct", "sched_info.last_queued")
    with pytest.raises(BtfError, match="no struct mm_struct"):
        btf.member_offset("mm_struct", "pgd")


def test_bad_data_is_rejected_with_the_reason() -> None:
    with pytest.raises(BtfError, match="magic 0x9feb is not 0xeb9f"):
        Btf(task_like().blob(magic=0x9FEB))
    with pytest.raises(BtfError, match="too short"):
        Btf(b"\x9f\xeb")
    with pytest.raises(BtfError, match="run past the end"):
        Btf(task_like().blob()[:-4])
    unknown = BtfBuilder()
    unknown.add(25, "future", 0, 0)
    with pytest.raises(BtfError, match="unknown BTF kind 25"):
        Btf(unknown.blob())


def with_sched_switch(btf: BtfBuilder, arguments: int) -> BtfBuilder:
    """Add the typedef the kernel declares for a tracepoint with ``arguments`` arguments."""
    parameters = arguments + 1  # the probe's private data comes first
    proto = btf.add(13, "", parameters, 0, bytes(8 * parameters))
    pointer = btf.add(2, "", 0, proto)
    btf.add(8, "btf_trace_sched_switch", 0, pointer)
    return btf


def test_sched_switch_without_the_next_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(with_sched_switch(task_like(), 2).blob())
    assert Btf(path.read_bytes()).tracepoint_arguments("sched_switch") == 2
    with pytest.raises(
        BtfError, match=r"has 2 arguments, fewer than the 3 \(preempt, prev, next\)"
    ):
        task_field_offsets(path)


def test_missing_file_names_the_kernel_option(tmp_path: Path) -> None:
    with pytest.raises(BtfError, match=r"cannot read .*vmlinux: .*CONFIG_DEBUG_INFO_BTF"):
        task_field_offsets(tmp_path / "vmlinux")


@pytest.mark.skipif(not VMLINUX_BTF.is_file(), reason="the kernel has no BTF")
def test_running_kernel_offsets_are_distinct_and_aligned() -> None:
    # The BPF tests check the values read at these offsets against /proc/<tid>/schedstat.
    offsets = task_field_offsets()
    assert set(offsets) == set(TASK_FIELDS)
    assert len(set(offsets.values())) == len(offsets)
    assert all(offset > 0 and offset % 4 == 0 for offset in offsets.values())
    assert Btf.from_file().tracepoint_arguments("sched_switch") == 4  # prev_state since 5.18
