"""stdin/stdout/stderr of a run as files wasmtime can open by path, and ways to bound them.

wasmtime-py only takes *paths* for WASI stdio (its callback-based stdout is slow and can panic
at interpreter exit). On Linux an anonymous memfd reopened through /proc/self/fd/N gives a path
without touching the filesystem; wasmtime opens its own file description of the same inode, so
the host keeps reading with pread() at any offset while the kernel writes.

Bounding a flood while the kernel still runs:

- stdout: the host's ticker seals the memfd (F_SEAL_WRITE | F_SEAL_GROW) once it passes the
  cap. Every later write by the kernel fails with an errno (checked: wasmtime reports EPERM to
  the guest) instead of eating RAM, and the run is stopped as output_too_large.
- stderr: never an error. Once it holds more than its cap in RAM, everything but the last page
  is punched out (fallocate PUNCH_HOLE: the file keeps its size, the memory is freed), so the
  real *last* 4 KiB survive however much the kernel writes.

Elsewhere (no memfd: macOS, Windows) temporary files in the host's spool directory are used and
sizes are checked by the same ticker; a file cannot be sealed, so the run is just stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

HAVE_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
_PROC_FD = "/proc/self/fd/"

# fallocate(2) modes; Python's os module has no way to punch holes.
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_PAGE = 4096


def _load_fallocate() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pread_all(fd: int, size: int, offset: int = 0) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 30), offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


class Stream:
    """One stdio file of a run. `path` is what wasmtime opens; `fd` is the host's own handle.

    Call opened() once wasmtime has opened `path` (WasiConfig setters open immediately): a named
    temporary file can then be unlinked on POSIX so nothing is left behind even after a crash.
    """

    def __init__(self, fd: int, path: str, *, memfd: bool, unlink_path: str | None) -> None:
        self.fd = fd
        self.path = path
        self.memfd = memfd
        self._unlink_path = unlink_path
        self.sealed = False
        self.punch_failed = False

    @classmethod
    def output(cls, name: str, spool_dir: Path, *, on_disk: bool = False) -> Stream:
        """An empty writable stream. on_disk=True keeps it out of RAM (huge generator output)."""
        if HAVE_MEMFD and not on_disk:
            fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            return cls(fd, f"{_PROC_FD}{fd}", memfd=True, unlink_path=None)
        return cls._temp_file(name, spool_dir)

    @classmethod
    def input(cls, data: bytes, spool_dir: Path) -> Stream | None:
        """A stream holding `data`, or None for empty input (then use os.devnull)."""
        if not data:
            return None
        if HAVE_MEMFD:
            fd = os.memfd_create("stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            stream = cls(fd, f"{_PROC_FD}{fd}", memfd=True, unlink_path=None)
        else:
            stream = cls._temp_file("stdin", spool_dir)
        try:
            _write_all(stream.fd, data)
        except BaseException:
            stream.close()
            raise
        return stream

    @classmethod
    def _temp_file(cls, name: str, spool_dir: Path) -> Stream:
        if HAVE_MEMFD:
            # An unlinked file reopened through /proc: nothing to clean up, ever.
            with tempfile.TemporaryFile(dir=spool_dir, prefix=f"{name}-") as f:
                fd = os.dup(f.fileno())
            return cls(fd, f"{_PROC_FD}{fd}", memfd=False, unlink_path=None)
        fd, path = tempfile.mkstemp(dir=spool_dir, prefix=f"{name}-")
        return cls(fd, path, memfd=False, unlink_path=path)

    def opened(self) -> None:
        if self._unlink_path is not None and os.name == "posix":
            with contextlib.suppress(OSError):
                os.unlink(self._unlink_path)
            self._unlink_path = None

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def resident(self) -> int:
        """Bytes actually stored (holes excluded where the platform tells)."""
        st = os.fstat(self.fd)
        blocks = getattr(st, "st_blocks", None)
        return st.st_size if blocks is None else blocks * 512

    def seal(self) -> bool:
        """Make every further write fail. Only memfds can be sealed; returns whether it was."""
        if not self.memfd or self.sealed:
            return self.sealed
        import fcntl  # POSIX only, like memfds

        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW)
        self.sealed = True
        return True

    def discard_before_tail(self, keep: int) -> bool:
        """Free the storage of everything but the last `keep` bytes (rounded to a page).

        The file keeps its size and offsets, so the writer is not disturbed. Returns False when
        the platform or filesystem cannot punch holes.
        """
        if _fallocate is None or self.punch_failed:
            return False
        end = (self.size() - keep) // _PAGE * _PAGE
        if end <= 0:
            return True
        if _fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, end) != 0:
            self.punch_failed = True
            return False
        return True

    def read(self, limit: int | None = None) -> bytes:
        size = self.size()
        return _pread_all(self.fd, size if limit is None else min(size, limit))

    def tail(self, n: int) -> bytes:
        size = self.size()
        start = max(0, size - n)
        return _pread_all(self.fd, size - start, start)

    def detach(self) -> BinaryIO:
        """Hand the host's handle over as a file object positioned at 0 (caller closes it)."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        f = os.fdopen(self.fd, "rb")
        self.fd = -1
        return f

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._unlink_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unlink_path)
            self._unlink_path = None
