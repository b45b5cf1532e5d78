"""The few parts of a WebAssembly binary the upload checks need, read and rewritten by hand.

wasmtime tells a module's memory type but cannot change it, and browsers enforce no memory
limit but the module's own maximum. So where a module declares no maximum (Rust's default
wasm32-wasi output, most existing WASI programs), the platform writes its cap into the memory
section (set_memory_max) and stores the rewritten bytes. Only that one section changes: every
other byte is copied as it was, in order, so code, data, names and debug information (whose
offsets are relative to their own sections) stay valid.

The reader also finds what makes a module a threads program (find_threads): a shared memory,
the wasi-threads `wasi.thread-spawn` import or its `wasi_thread_start` export. wasmtime,
configured without threads, would refuse such a module with an opaque validation error; the
upload says plainly that threads are not supported instead.

Binary format reference: https://webassembly.github.io/spec/core/binary/ (sections 5.5, and
limits in 5.3.7). LEB128 values are read strictly: at most ceil(bits / 7) bytes, no bits above
the value's width, as the spec requires.
"""

from __future__ import annotations

from dataclasses import dataclass

WASM_HEADER = b"\0asm\x01\0\0\0"

# Section ids (binary format 5.5.2).
CUSTOM_SECTION = 0
IMPORT_SECTION = 2
MEMORY_SECTION = 5
EXPORT_SECTION = 7

# Import/export description kinds.
KIND_FUNC = 0
KIND_TABLE = 1
KIND_MEMORY = 2
KIND_GLOBAL = 3
KIND_TAG = 4  # exception handling proposal

# Limits flags of a memory type: bit 0 a maximum follows, bit 1 shared (threads), bit 2 memory64.
LIMITS_HAS_MAX = 0x01
LIMITS_SHARED = 0x02
LIMITS_MEMORY64 = 0x04
LIMITS_KNOWN_FLAGS = LIMITS_HAS_MAX | LIMITS_SHARED | LIMITS_MEMORY64

#: The wasi-threads proposal's entry points (https://github.com/WebAssembly/wasi-threads).
THREAD_SPAWN_IMPORT = ("wasi", "thread-spawn")
THREAD_START_EXPORT = "wasi_thread_start"


class WasmFormatError(ValueError):
    """The bytes are not a well-formed module (as far as this reader looks)."""


@dataclass(frozen=True)
class Section:
    """One section: `id`, and offsets of its first byte (the id), its body, and its end."""

    id: int
    start: int
    body: int
    end: int


@dataclass(frozen=True)
class Memory:
    """A memory the module imports or defines. Sizes are in pages; max None when undeclared."""

    imported: bool
    flags: int
    min_pages: int
    max_pages: int | None

    @property
    def shared(self) -> bool:
        return bool(self.flags & LIMITS_SHARED)

    @property
    def is64(self) -> bool:
        return bool(self.flags & LIMITS_MEMORY64)


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: int


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmFormatError(f"unexpected end of data at offset {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self, bits: int = 32) -> int:
        """An unsigned LEB128 integer of at most `bits` bits."""
        result = 0
        shift = 0
        start = self.pos
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift >= bits:
                raise WasmFormatError(f"integer too long at offset {start}")
        if result >> bits:
            raise WasmFormatError(f"integer too large at offset {start}")
        return result

    def name(self) -> str:
        length = self.uleb()
        raw = self.bytes(length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WasmFormatError(f"a name is not UTF-8 at offset {self.pos - length}") from None

    def bytes(self, length: int) -> bytes:
        if self.pos + length > self.end:
            raise WasmFormatError(f"unexpected end of data at offset {self.pos}")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value

    def limits(self) -> tuple[int, int, int | None]:
        """(flags, min, max) of a memory or table type; memory64 limits are 64-bit numbers."""
        flags = self.byte()
        if flags & ~LIMITS_KNOWN_FLAGS:
            raise WasmFormatError(f"unknown limits flags {flags:#x} at offset {self.pos - 1}")
        bits = 64 if flags & LIMITS_MEMORY64 else 32
        minimum = self.uleb(bits)
        maximum = self.uleb(bits) if flags & LIMITS_HAS_MAX else None
        return flags, minimum, maximum


def encode_uleb(value: int) -> bytes:
    """The shortest unsigned LEB128 encoding of `value` (>= 0)."""
    if value < 0:
        raise ValueError("LEB128 here is unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(data: bytes) -> list[Section]:
    """The module's sections in order. Raises WasmFormatError for a bad header or framing."""
    if not data.startswith(WASM_HEADER):
        raise WasmFormatError("not a WebAssembly 1.0 binary module (bad header)")
    found: list[Section] = []
    reader = _Reader(data, len(WASM_HEADER), len(data))
    while reader.pos < len(data):
        start = reader.pos
        section_id = reader.byte()
        size = reader.uleb()
        body = reader.pos
        end = body + size
        if end > len(data):
            raise WasmFormatError(f"section {section_id} at offset {start} runs past the end")
        found.append(Section(section_id, start, body, end))
        reader.pos = end
    return found


def _section(data: bytes, found: list[Section], section_id: int) -> Section | None:
    matches = [s for s in found if s.id == section_id]
    if len(matches) > 1:
        raise WasmFormatError(f"section {section_id} appears more than once")
    return matches[0] if matches else None


def _skip_import_desc(reader: _Reader, kind: int) -> Memory | None:
    """Read an import's description; returns the memory when it is one."""
    if kind == KIND_FUNC:
        reader.uleb()  # type index
    elif kind == KIND_TABLE:
        reader.byte()  # reference type
        reader.limits()
    elif kind == KIND_MEMORY:
        flags, minimum, maximum = reader.limits()
        return Memory(True, flags, minimum, maximum)
    elif kind == KIND_GLOBAL:
        reader.byte()  # value type
        reader.byte()  # mutability
    elif kind == KIND_TAG:
        reader.byte()  # attribute
        reader.uleb()  # type index
    else:
        raise WasmFormatError(f"unknown import kind {kind} at offset {reader.pos - 1}")
    return None


def _imports_and_memories(data: bytes, found: list[Section]) -> tuple[list[Import], list[Memory]]:
    imports: list[Import] = []
    memories: list[Memory] = []
    section = _section(data, found, IMPORT_SECTION)
    if section is not None:
        reader = _Reader(data, section.body, section.end)
        for _ in range(reader.uleb()):
            module, name = reader.name(), reader.name()
            kind = reader.byte()
            imports.append(Import(module, name, kind))
            memory = _skip_import_desc(reader, kind)
            if memory is not None:
                memories.append(memory)
    section = _section(data, found, MEMORY_SECTION)
    if section is not None:
        reader = _Reader(data, section.body, section.end)
        for _ in range(reader.uleb()):
            flags, minimum, maximum = reader.limits()
            memories.append(Memory(False, flags, minimum, maximum))
        if reader.pos != section.end:
            raise WasmFormatError("the memory section has trailing bytes")
    return imports, memories


def imports(data: bytes) -> list[Import]:
    return _imports_and_memories(data, sections(data))[0]


def memories(data: bytes) -> list[Memory]:
    """Imported memories first, then defined ones: the module's memory index order."""
    return _imports_and_memories(data, sections(data))[1]


def exports(data: bytes) -> list[tuple[str, int]]:
    """(name, kind) of every export."""
    found = sections(data)
    section = _section(data, found, EXPORT_SECTION)
    if section is None:
        return []
    reader = _Reader(data, section.body, section.end)
    out: list[tuple[str, int]] = []
    for _ in range(reader.uleb()):
        name = reader.name()
        kind = reader.byte()
        reader.uleb()  # index
        out.append((name, kind))
    return out


def find_threads(data: bytes) -> str | None:
    """What makes `data` a threads program, in words, or None. Raises WasmFormatError."""
    found = sections(data)
    imported, mems = _imports_and_memories(data, found)
    if any(m.shared for m in mems):
        return "a shared memory"
    if any((i.module, i.name) == THREAD_SPAWN_IMPORT for i in imported):
        return "the `wasi.thread-spawn` import"
    if any(name == THREAD_START_EXPORT for name, _ in exports(data)):
        return f"the `{THREAD_START_EXPORT}` export"
    return None


def set_memory_max(data: bytes, max_pages: int) -> bytes:
    """`data` with every memory it defines that declares no maximum given `max_pages`.

    Returns `data` itself when nothing needed a maximum. Only the memory section is
    re-encoded; imported memories are left alone (a kernel's memory is its own, and an import
    of one is refused by the contract anyway). Raises WasmFormatError for malformed input and
    ValueError when a memory's minimum is above `max_pages`, or for a 64-bit memory.
    """
    found = sections(data)
    section = _section(data, found, MEMORY_SECTION)
    if section is None:
        return data
    reader = _Reader(data, section.body, section.end)
    count = reader.uleb()
    body = bytearray(encode_uleb(count))
    changed = False
    for _ in range(count):
        entry_start = reader.pos
        flags, minimum, maximum = reader.limits()
        if maximum is not None:
            body += data[entry_start : reader.pos]
            continue
        if flags & LIMITS_MEMORY64:
            raise ValueError("a 64-bit memory cannot be given a 32-bit maximum")
        if minimum > max_pages:
            raise ValueError(f"the memory's minimum of {minimum} pages is above {max_pages}")
        body.append(flags | LIMITS_HAS_MAX)
        body += encode_uleb(minimum) + encode_uleb(max_pages)
        changed = True
    if reader.pos != section.end:
        raise WasmFormatError("the memory section has trailing bytes")
    if not changed:
        return data
    head = bytes([MEMORY_SECTION]) + encode_uleb(len(body))
    return data[: section.start] + head + bytes(body) + data[section.end :]
