"""Just enough of the BTF format to find struct member offsets and enum values.

The running kernel describes its own types in /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF):
that is how the tracer learns where `protocol`, `dev`, `sk`, `head`... sit inside
`struct sk_buff` on *this* kernel, with no headers and no compiler, and the names of
`enum skb_drop_reason`. Layout (include/uapi/linux/btf.h):

    header {u16 magic=0xeB9F; u8 version; u8 flags; u32 hdr_len;
            u32 type_off, type_len, str_off, str_len}      offsets after hdr_len
    type   {u32 name_off; u32 info (vlen:16, kind:5 @24, kind_flag @31); u32 size|type}
           followed by kind-specific words (members, enum values, array info ...)

Types are numbered from 1 in order of appearance, so every record must be walked to find
the ids; the walk only notes where each record starts (a 5.5 MB vmlinux BTF holds ~150k
types). `parse` raises only ParseError, on any input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import ParseError

MAGIC = 0xEB9F
(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
 FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(1, 20)
KIND_NAMES = {INT: "int", PTR: "ptr", ARRAY: "array", STRUCT: "struct", UNION: "union",
              ENUM: "enum", FWD: "fwd", TYPEDEF: "typedef", VOLATILE: "volatile",
              CONST: "const", RESTRICT: "restrict", FUNC: "func", FUNC_PROTO: "func_proto",
              VAR: "var", DATASEC: "datasec", FLOAT: "float", DECL_TAG: "decl_tag",
              TYPE_TAG: "type_tag", ENUM64: "enum64"}
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)
POINTER_SIZE = 8


def _extra_words(kind: int, vlen: int) -> int:
    if kind in (PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG):
        return 0
    if kind in (INT, VAR, DECL_TAG):
        return 1
    if kind == ARRAY:
        return 3
    if kind in (STRUCT, UNION, DATASEC, ENUM64):
        return 3 * vlen
    if kind in (ENUM, FUNC_PROTO):
        return 2 * vlen
    raise ParseError(f"BTF: unknown type kind {kind}")


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0: not a bitfield


@dataclass
class Btf:
    words: memoryview  # the type section as u32 words
    strings: bytes
    starts: list[int] = field(default_factory=list)  # word index of type id i+1
    named: dict[str, list[int]] = field(default_factory=dict)  # name -> type ids (prefetched)

    # -- raw access --------------------------------------------------------------------------
    def _check_id(self, type_id: int) -> None:
        if not 1 <= type_id <= len(self.starts):
            raise ParseError(f"BTF: type id {type_id} out of range")

    def kind(self, type_id: int) -> int:
        if type_id == 0:
            return 0  # void
        self._check_id(type_id)
        return (self.words[self.starts[type_id - 1] + 1] >> 24) & 0x1F

    def name(self, type_id: int) -> str:
        if type_id == 0:
            return "void"
        self._check_id(type_id)
        return self.string(self.words[self.starts[type_id - 1]])

    def string(self, offset: int) -> str:
        if not 0 <= offset < len(self.strings):
            raise ParseError(f"BTF: string offset {offset} outside the string section")
        end = self.strings.find(b"\0", offset)
        if end < 0:
            raise ParseError("BTF: unterminated string")
        return self.strings[offset:end].decode("utf-8", errors="replace")

    def _head(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(start word, kind, vlen, kind_flag, size_or_type)"""
        self._check_id(type_id)
        start = self.starts[type_id - 1]
        info = self.words[start + 1]
        return start, (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, self.words[start + 2]

    # -- lookups ---------------------------------------------------------------------------
    def find(self, name: str, kinds: tuple[int, ...]) -> int:
        """Id of the first type called `name` of one of `kinds`; ParseError if none."""
        found = self.find_all(name, kinds)
        if not found:
            wanted = "/".join(KIND_NAMES[k] for k in kinds)
            raise ParseError(f"BTF: no {wanted} named {name}")
        return found[0]

    def find_all(self, name: str, kinds: tuple[int, ...]) -> list[int]:
        if name not in self.named:
            self.prefetch((name,))
        return [type_id for type_id in self.named[name] if self.kind(type_id) in kinds]

    def prefetch(self, names: tuple[str, ...] | list[str]) -> None:
        """Index the types called any of `names` in one walk (later finds are free)."""
        by_offset: dict[int, str] = {}
        for name in names:
            self.named.setdefault(name, [])
            needle = b"\0" + name.encode() + b"\0"
            pos = self.strings.find(needle)
            while pos >= 0:
                by_offset[pos + 1] = name
                pos = self.strings.find(needle, pos + 1)
        if not by_offset:
            return
        words, named = self.words, self.named
        for index, start in enumerate(self.starts):
            hit = by_offset.get(words[start])
            if hit is not None:
                named[hit].append(index + 1)

    def resolve(self, type_id: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type."""
        for _ in range(64):
            if type_id == 0 or self.kind(type_id) not in _MODIFIERS:
                return type_id
            type_id = self._head(type_id)[4]
        raise ParseError("BTF: modifier chain too long (loop?)")

    def size(self, type_id: int, depth: int = 0) -> int:
        if depth > 32:
            raise ParseError("BTF: array nesting too deep (loop?)")
        type_id = self.resolve(type_id)
        if type_id == 0:
            raise ParseError("BTF: void has no size")
        start, kind, _vlen, _kf, size = self._head(type_id)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return size
        if kind == PTR:
            return POINTER_SIZE
        if kind == ARRAY:
            elem, _index, nelems = (self.words[start + 3 + i] for i in range(3))
            return self.size(elem, depth + 1) * nelems
        raise ParseError(f"BTF: type {type_id} ({KIND_NAMES.get(kind, kind)}) has no size")

    def members(self, type_id: int) -> list[Member]:
        start, kind, vlen, kind_flag, _size = self._head(type_id)
        if kind not in (STRUCT, UNION):
            raise ParseError(f"BTF: type {type_id} is not a struct or union")
        out = []
        for i in range(vlen):
            base = start + 3 + 3 * i
            name_off, member_type, offset = (self.words[base + j] for j in range(3))
            if kind_flag:
                out.append(Member(self.string(name_off), member_type, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append(Member(self.string(name_off), member_type, offset, 0))
        return out

    def _find_member(self, type_id: int, name: str, depth: int = 0) -> tuple[int, Member] | None:
        """(bit offset from the start of type_id, member) - looking inside anonymous members."""
        if depth > 16:
            raise ParseError("BTF: anonymous members nested too deep")
        for member in self.members(type_id):
            if member.name == name:
                return member.bit_offset, member
        for member in self.members(type_id):
            if member.name:
                continue
            inner = self.resolve(member.type_id)
            if self.kind(inner) in (STRUCT, UNION):
                hit = self._find_member(inner, name, depth + 1)
                if hit is not None:
                    return member.bit_offset + hit[0], hit[1]
        return None

    def member_offset(self, struct_name: str, path: str) -> tuple[int, int]:
        """(byte offset, byte size) of `a.b.c` inside struct `struct_name`, following
        embedded structs (never pointers) and anonymous unions/structs."""
        type_id = self.find(struct_name, (STRUCT, UNION))
        bits, size = 0, 0
        parts = path.split(".")
        for i, part in enumerate(parts):
            hit = self._find_member(type_id, part)
            if hit is None:
                raise ParseError(f"BTF: struct {self.name(type_id) or '(anonymous)'} has no member {part}"
                                 f" (looking for {struct_name}.{path})")
            offset, member = hit
            if member.bitfield_size:
                raise ParseError(f"BTF: {struct_name}.{path} is a bitfield")
            bits += offset
            size = self.size(member.type_id)
            if i < len(parts) - 1:
                type_id = self.resolve(member.type_id)
                if self.kind(type_id) not in (STRUCT, UNION):
                    raise ParseError(f"BTF: {struct_name}.{'.'.join(parts[:i + 1])} is not an embedded struct")
        if bits % 8:
            raise ParseError(f"BTF: {struct_name}.{path} is not byte aligned")
        return bits // 8, size

    def enum(self, name: str) -> dict[int, str]:
        """Values of enum `name` (ENUM or ENUM64) -> enumerator names."""
        type_id = self.find(name, (ENUM, ENUM64))
        start, kind, vlen, kind_flag, _size = self._head(type_id)
        out: dict[int, str] = {}
        for i in range(vlen):
            if kind == ENUM:
                name_off, raw = self.words[start + 3 + 2 * i], self.words[start + 4 + 2 * i]
                value = raw - (1 << 32) if (kind_flag and raw >= 1 << 31) else raw
            else:
                base = start + 3 + 3 * i
                name_off = self.words[base]
                value = self.words[base + 1] | (self.words[base + 2] << 32)
            out.setdefault(value, self.string(name_off))
        return out


def parse(data: bytes) -> Btf:
    """Validate the header and index every type record; ParseError on anything malformed."""
    if len(data) < 24:
        raise ParseError("BTF: shorter than its header")
    magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != MAGIC:
        if magic == 0x9FEB:
            raise ParseError("BTF: other-endian BTF is not supported")
        raise ParseError(f"BTF: bad magic {magic:#x}")
    if version != 1:
        raise ParseError(f"BTF: unsupported version {version}")
    if hdr_len < 24 or hdr_len > len(data):
        raise ParseError(f"BTF: bad header length {hdr_len}")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    type_start, str_start = hdr_len + type_off, hdr_len + str_off
    if type_start + type_len > len(data) or str_start + str_len > len(data):
        raise ParseError("BTF: sections extend past the end of the data")
    if type_len % 4:
        raise ParseError("BTF: type section length is not a multiple of 4")
    strings = bytes(data[str_start:str_start + str_len])
    if str_len and strings[-1:] != b"\0":
        raise ParseError("BTF: string section is not NUL-terminated")
    words = memoryview(bytes(data[type_start:type_start + type_len])).cast("I")
    starts: list[int] = []
    append = starts.append
    i, n = 0, len(words)
    while i < n:
        if i + 3 > n:
            raise ParseError("BTF: truncated type record")
        info = words[i + 1]
        if words[i] >= str_len and words[i]:
            raise ParseError("BTF: type name outside the string section")
        append(i)
        i += 3 + _extra_words((info >> 24) & 0x1F, info & 0xFFFF)
    if i != n:
        raise ParseError("BTF: truncated type record")
    return Btf(words, strings, starts)


def read_vmlinux(path: str = "/sys/kernel/btf/vmlinux") -> Btf:
    from ..errors import translated

    with translated(path), open(path, "rb") as handle:
        data = handle.read()
    return parse(data)
