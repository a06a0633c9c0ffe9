"""Offsets of kernel struct members, read from the running kernel's BTF.

The BPF programs read fields of kernel tasks (``pid``, ``se.sum_exec_runtime``,
``sched_info.run_delay``, ``nvcsw`` and ``nivcsw``). BCC
compiles against whatever kernel headers are installed, which may belong to another kernel
version (see :mod:`agent.observe.kheaders`), so the programs do not take these offsets from
the headers. They come from ``/sys/kernel/btf/vmlinux`` instead, the type information of the
kernel that is running (``CONFIG_DEBUG_INFO_BTF``), and are passed to the compiler as
constants.

The format is the kernel's ``Documentation/bpf/btf.rst``: a header, a type section of
variable-length records numbered from 1, and a string section.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_MEMBER = struct.Struct("<III")

KIND_PTR, KIND_STRUCT, KIND_UNION, KIND_TYPEDEF, KIND_FUNC_PROTO = 2, 4, 5, 8, 13
_TYPEDEF_LIKE = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type tag
# Bytes that follow the common 12-byte record, per kind: a fixed part and a part per vlen item.
_EXTRA_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_EXTRA_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
_KNOWN_KINDS = range(1, 20)  # int ... enum64


class BtfError(Exception):
    """The BTF data is missing or malformed, or lacks the requested struct member."""


@dataclass(frozen=True)
class _Type:
    name: str
    kind: int
    size_or_type: int
    vlen: int
    members: tuple[tuple[str, int, int], ...]  # (name, type id, bit offset) of a struct/union


class Btf:
    """The types of one BTF blob, parsed once."""

    def __init__(self, data: bytes, source: str = "BTF data") -> None:
        self.source = source
        if len(data) < _HEADER.size:
            raise BtfError(f"{source}: {len(data)} bytes is too short for a BTF header")
        magic, _, _, header_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if magic != BTF_MAGIC:
            raise BtfError(f"{source}: magic {magic:#x} is not {BTF_MAGIC:#x} (little-endian BTF)")
        types_start = header_len + type_off
        strings_start = header_len + str_off
        if types_start + type_len > len(data) or strings_start + str_len > len(data):
            raise BtfError(f"{source}: the header's sections run past the end of the data")
        self._strings = data[strings_start : strings_start + str_len]
        self._types: list[_Type | None] = [None]  # type id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self._parse(data, types_start, types_start + type_len)

    @classmethod
    def from_file(cls, path: Path = VMLINUX_BTF) -> "Btf":
        """Read and parse a BTF file, by default the running kernel's."""
        try:
            data = path.read_bytes()
        except OSError as error:
            raise BtfError(
                f"cannot read {path}: {error.strerror}; the kernel needs CONFIG_DEBUG_INFO_BTF"
            ) from error
        return cls(data, str(path))

    def _name(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        return self._strings[offset:end].decode(errors="replace")

    def _parse(self, data: bytes, position: int, end: int) -> None:
        while position < end:
            name_off, info, size_or_type = _TYPE.unpack_from(data, position)
            position += _TYPE.size
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kind_flag = bool(info >> 31)
            members: tuple[tuple[str, int, int], ...] = ()
            if kind in (KIND_STRUCT, KIND_UNION):
                items = []
                for index in range(vlen):
                    member_name, member_type, offset = _MEMBER.unpack_from(
                        data, position + index * _MEMBER.size
                    )
                    # With kind_flag set, the top 8 bits are the bit field's size.
                    bit_offset = offset & 0xFFFFFF if kind_flag else offset
                    items.append((self._name(member_name), member_type, bit_offset))
                members = tuple(items)
            elif kind not in _KNOWN_KINDS:
                raise BtfError(
                    f"{self.source}: unknown BTF kind {kind} at byte {position - _TYPE.size}"
                )
            position += _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ITEM.get(kind, 0) * vlen
            name = self._name(name_off) if name_off else ""
            type_id = len(self._types)
            self._types.append(_Type(name, kind, size_or_type, vlen, members))
            if name and kind in (KIND_STRUCT, KIND_UNION, KIND_TYPEDEF):
                self._by_name.setdefault(name, []).append(type_id)

    def _resolve(self, type_id: int) -> _Type | None:
        """Follow typedefs and qualifiers to the type they name."""
        for _ in range(32):
            if not 0 < type_id < len(self._types):
                return None
            found = self._types[type_id]
            if found is None or found.kind not in _TYPEDEF_LIKE:
                return found
            type_id = found.size_or_type
        return None

    def _find_member(self, struct_type: _Type, name: str) -> tuple[int, int] | None:
        """Find ``name`` in a struct or union, anonymous members included.

        Returns its type id and bit offset, or None.
        """
        for member_name, member_type, bit_offset in struct_type.members:
            if member_name == name:
                return member_type, bit_offset
            if not member_name:
                inner = self._resolve(member_type)
                if inner is not None and inner.kind in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(inner, name)
                    if found is not None:
                        return found[0], bit_offset + found[1]
        return None

    def member_offset(self, struct_name: str, path: str) -> int:
        """Return the byte offset of a dotted member path, such as ``se.vruntime`` in
        ``task_struct``."""
        candidates = [self._types[type_id] for type_id in self._by_name.get(struct_name, [])]
        current = next((found for found in candidates if found and found.members), None)
        if current is None:
            raise BtfError(f"{self.source}: no struct {struct_name} with members")
        bits = 0
        walked = struct_name
        for part in path.split("."):
            found = self._find_member(current, part)
            if found is None:
                raise BtfError(f"{self.source}: {walked} has no member {part!r}")
            member_type, bit_offset = found
            bits += bit_offset
            walked = f"{walked}.{part}"
            resolved = self._resolve(member_type)
            if resolved is None:
                raise BtfError(f"{self.source}: the type of {walked} does not resolve")
            current = resolved
        if bits % 8:
            raise BtfError(f"{self.source}: {walked} is a bit field at bit {bits}")
        return bits // 8

    def tracepoint_arguments(self, event: str) -> int | None:
        """Count the arguments a raw tracepoint program gets for ``event``, or return None.

        The kernel describes each tracepoint with a typedef ``btf_trace_<event>``: a pointer to
        a function whose first parameter is the probe's private data, the rest the arguments.
        """
        for type_id in self._by_name.get(f"btf_trace_{event}", []):
            typedef = self._types[type_id]
            if typedef is None or typedef.kind != KIND_TYPEDEF:
                continue
            pointer = self._types[typedef.size_or_type] if typedef.size_or_type else None
            if pointer is None or pointer.kind != KIND_PTR:
                continue
            proto = self._resolve(pointer.size_or_type)
            if proto is not None and proto.kind == KIND_FUNC_PROTO:
                return proto.vlen - 1
        return None


# trace_sched_switch(preempt, prev, next, ...): the program reads the third.
SCHED_SWITCH_ARGUMENTS = 3

# Fields of the task that sched_observe.bpf.c reads, by the constant that names
# their offset in the program.
TASK_FIELDS = {
    "TASK_PID_OFFSET": "pid",
    "TASK_SUM_EXEC_RUNTIME_OFFSET": "se.sum_exec_runtime",
    "TASK_RUN_DELAY_OFFSET": "sched_info.run_delay",
    "TASK_NVCSW_OFFSET": "nvcsw",
    "TASK_NIVCSW_OFFSET": "nivcsw",
}


def task_field_offsets(path: Path = VMLINUX_BTF) -> dict[str, int]:
    """Return the compile-time constants of :data:`TASK_FIELDS` for the running kernel.

    Also checks that raw ``sched_switch`` programs get the next task as their third argument,
    which the program reads.
    """
    btf = Btf.from_file(path)
    arguments = btf.tracepoint_arguments("sched_switch")
    if arguments is not None and arguments < SCHED_SWITCH_ARGUMENTS:
        raise BtfError(
            f"{path}: the sched_switch tracepoint has {arguments} arguments, fewer than the "
            f"{SCHED_SWITCH_ARGUMENTS} (preempt, prev, next) the BPF programs read"
        )
    return {name: btf.member_offset("task_struct", field) for name, field in TASK_FIELDS.items()}
