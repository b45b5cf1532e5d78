"""The host's own directory: compiled-module cache, static data store and per-run directories.

Layout under the root (created 0700, must belong to this user and not be group/world-writable):

    modules/<wasmtime version>-<engine fingerprint>/<sha256>.cwasm   compiled modules
    static/<sha256>/static                                          static data, read-only
    empty/                                                          /ccgsc when nothing is given
    runs/<random>/{static,checkpoint}                               only for runs with a checkpoint
    spool/                                                          large stdout (stdout_file=True)

With a size cap (max_bytes), the least recently used compiled modules and static data are
removed when the store grows past it, never those this process is using; compiled modules of
other wasmtime builds or engine settings (which can never be loaded again) always go.

Compiled modules are native code: wasmtime trusts what it deserializes. So only files this
class wrote are ever deserialized: they live in the private directory, are written atomically
(temporary file + rename), and are checked to be regular files owned by us before loading.
Bytes that came from anybody else are always compiled, never deserialized.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

import wasmtime

from .contract import CHECKPOINT_NAME, STATIC_NAME

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: How often static data in use is marked as used again (its mtime orders pruning).
TOUCH_EVERY_S = 3600.0
#: Compiled modules of another engine are removed once nothing was added to them for this long
#: (another installed version may still share the directory).
OTHER_ENGINE_AFTER_S = 86400.0


def ensure_private_dir(path: Path) -> None:
    """Create `path` (mode 0700) if needed and check that only we can write to it.

    Raises PermissionError when it is not a directory, belongs to another user, or is writable
    by group or others: a cache others can write to could hand us native code to run.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a directory")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to another user")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is writable by other users")


def _owned_regular_file(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return False
    return not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # (on Windows os.kill(pid, 0) would *terminate* the process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: leave it alone
    return True


def _touch(path: Path) -> None:
    """Mark `path` as just used (its mtime orders pruning)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def write_atomically(path: Path, data: bytes | bytearray, mode: int = 0o600) -> None:
    """Write `data` to `path` so that readers see either no file or the whole file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class HostFiles:
    """Owns the directory layout above. Thread-safe; cheap to call per run.

    With root=None a private temporary directory is used and removed when this object is
    garbage collected or the interpreter exits; compiled modules are then not written to disk
    (they would not outlive the process anyway).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        engine_fingerprint: str,
        *,
        max_bytes: int | None = None,
    ) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.persistent = root is not None
        self.max_bytes = max_bytes
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="ccgsc-kernelhost-"))
            self._finalizer: weakref.finalize | None = weakref.finalize(
                self, shutil.rmtree, self.root, ignore_errors=True
            )
        else:
            self.root = Path(root).absolute()
            self._finalizer = None
        ensure_private_dir(self.root)
        self.fingerprint = engine_fingerprint
        self.modules_dir = self.root / "modules" / engine_fingerprint
        self.static_dir = self.root / "static"
        self.empty_dir = self.root / "empty"
        self.runs_dir = self.root / "runs"
        self.spool_dir = self.root / "spool"
        for d in (self.static_dir, self.empty_dir, self.runs_dir, self.spool_dir):
            ensure_private_dir(d)
        if self.persistent:
            ensure_private_dir(self.modules_dir)
        self._lock = threading.Lock()
        self._prune_lock = threading.Lock()
        # Static data this process has stored or found, with when it last marked it as used.
        self._known_static: dict[str, float] = {}
        self._sweep()
        self.prune()

    def _sweep(self) -> None:
        """Remove what crashed processes left behind: run directories of processes that no
        longer exist (their names start with the pid) and stale partial static entries."""
        for entry in self.runs_dir.iterdir():
            pid = entry.name.partition("-")[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
        cutoff = time.time() - 3600
        for entry in self.static_dir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)

    # --- compiled modules ---------------------------------------------------------------------

    def _module_path(self, sha256: str) -> Path:
        assert SHA256_RE.match(sha256)  # computed by us, never a caller's string
        return self.modules_dir / f"{sha256}.cwasm"

    def load_module(self, engine: wasmtime.Engine, sha256: str) -> wasmtime.Module | None:
        """The module this host compiled earlier for `sha256`, or None (absent or unusable)."""
        if not self.persistent:
            return None
        path = self._module_path(sha256)
        if not _owned_regular_file(path):
            return None
        _touch(path)  # recently used: the last to be pruned
        try:
            return wasmtime.Module.deserialize_file(engine, str(path))
        except wasmtime.WasmtimeError as exc:
            # Written by another wasmtime build or damaged: recompile and overwrite it.
            log.warning("discarding cached module %s: %s", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def store_module(self, sha256: str, module: wasmtime.Module) -> None:
        """Save a module this host compiled. Failures only cost a recompile later."""
        if not self.persistent:
            return
        try:
            write_atomically(self._module_path(sha256), module.serialize())
        except (OSError, wasmtime.WasmtimeError) as exc:
            log.warning("could not cache compiled module %s: %s", sha256, exc)
            return
        self.prune(keep=(sha256,))

    # --- the /ccgsc directory -----------------------------------------------------------------

    def static_dir_for(self, data: bytes, sha256: str | None) -> Path:
        """A read-only directory holding `data` as the file `static`, shared by all runs.

        `sha256` (hex) saves hashing large data on every run; it is verified when the data is
        first stored, so a wrong one raises ValueError instead of poisoning the store.
        """
        digest = None
        if sha256 is not None:
            sha256 = sha256.lower()
            if not SHA256_RE.match(sha256):
                raise ValueError("static_sha256 must be 64 hex digits")
            marked = self._known_static.get(sha256)
            if marked is not None:
                digest = sha256  # verified when this process first stored or found it
                final = self.static_dir / digest
                # Another process sharing the store may have pruned it: one stat per run.
                if (final / STATIC_NAME).is_file():
                    if time.monotonic() - marked > TOUCH_EVERY_S:
                        _touch(final)
                        self._known_static[digest] = time.monotonic()
                    return final
        if digest is None:
            digest = hashlib.sha256(data).hexdigest()
            if sha256 is not None and sha256 != digest:
                raise ValueError("static_sha256 does not match the static data")
        final = self.static_dir / digest
        written = False
        with self._lock:
            if not _owned_regular_file(final / STATIC_NAME) or (
                os.path.getsize(final / STATIC_NAME) != len(data)
            ):
                self._write_static(final, data)
                written = True
            else:
                _touch(final)  # recently used: the last to be pruned
            self._known_static[digest] = time.monotonic()
        if written:
            self.prune(keep=(digest,))
        return final

    def _write_static(self, final: Path, data: bytes) -> None:
        if final.exists():
            shutil.rmtree(final)  # a partial or foreign entry: replace it
        tmp = Path(tempfile.mkdtemp(dir=self.static_dir, prefix=".tmp-"))
        try:
            (tmp / STATIC_NAME).write_bytes(data)
            os.chmod(tmp / STATIC_NAME, 0o400)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / STATIC_NAME).is_file():  # another process won the race: fine
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # --- the size cap -------------------------------------------------------------------------

    def usage(self) -> int:
        """Bytes of compiled modules and static data on disk (this engine's modules only)."""
        return sum(size for _, _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, str, int, Path]]:
        """(last used, sha256, bytes, path) of every compiled module and static entry."""
        found: list[tuple[float, str, int, Path]] = []
        if self.persistent:
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.modules_dir):
                    name = entry.name.removesuffix(".cwasm")
                    if SHA256_RE.match(name) and entry.name.endswith(".cwasm"):
                        with contextlib.suppress(OSError):
                            st = entry.stat(follow_symlinks=False)
                            found.append((st.st_mtime, name, st.st_size, Path(entry.path)))
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.static_dir):
                if SHA256_RE.match(entry.name):
                    with contextlib.suppress(OSError):
                        used = entry.stat(follow_symlinks=False).st_mtime
                        size = os.lstat(Path(entry.path) / STATIC_NAME).st_size
                        found.append((used, entry.name, size, Path(entry.path)))
        return found

    def prune(self, keep: Iterable[str] = ()) -> int:
        """Bring the store under max_bytes, least recently used first, sparing `keep` and the
        static data this process uses; and drop compiled modules of other engines unused for a
        day. Returns the bytes freed. Never raises: a store it cannot prune is only larger.
        One thread at a time (another thread's call returns 0 at once)."""
        if not self._prune_lock.acquire(blocking=False):
            return 0
        try:
            return self._prune(set(keep))
        finally:
            self._prune_lock.release()

    def _prune(self, keep: set[str]) -> int:
        freed = 0
        if self.persistent:
            with contextlib.suppress(OSError):
                cutoff = time.time() - OTHER_ENGINE_AFTER_S
                for entry in os.scandir(self.modules_dir.parent):
                    if (
                        entry.name != self.fingerprint
                        and entry.is_dir(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff
                    ):
                        shutil.rmtree(entry.path, ignore_errors=True)
                        log.info("removed compiled modules of another engine: %s", entry.name)
        if self.max_bytes is None:
            return freed
        entries = self._entries()
        total = sum(size for _, _, size, _ in entries)
        if total <= self.max_bytes:
            return freed
        spared = keep | set(self._known_static)
        for _, name, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if name in spared:
                continue
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                pass  # another process pruned it first
            except OSError as exc:
                log.warning("could not prune %s: %s", path, exc)
                continue
            total -= size
            freed += size
        if freed:
            log.info("pruned %d bytes from %s (cap %d)", freed, self.root, self.max_bytes)
        return freed

    def run_dir(self, static_dir: Path | None, checkpoint: bytes) -> Path:
        """A private directory with `checkpoint` and a copy of the static file. The caller
        removes it with remove_run_dir().

        A copy, not a hard link: the kernel sees a file's link count (filestat nlink), and a
        link would make it 2, or more while other resumed runs share the file, where the
        contract says 1 in every host. Only resumed runs pay for the copy (in the kernel:
        copyfile uses sendfile), and they are rare."""
        d = Path(tempfile.mkdtemp(dir=self.runs_dir, prefix=f"{os.getpid()}-"))
        (d / CHECKPOINT_NAME).write_bytes(checkpoint)
        os.chmod(d / CHECKPOINT_NAME, 0o400)
        if static_dir is not None:
            shutil.copyfile(static_dir / STATIC_NAME, d / STATIC_NAME)
            os.chmod(d / STATIC_NAME, 0o400)
        return d

    @staticmethod
    def remove_run_dir(d: Path) -> None:
        shutil.rmtree(d, ignore_errors=True)

    def after_fork_in_child(self) -> None:
        # They may have been held by a thread the child lacks.
        self._lock = threading.Lock()
        self._prune_lock = threading.Lock()

    def close(self) -> None:
        """Remove the directory now if it is a private temporary one."""
        if self._finalizer is not None:
            self._finalizer()
