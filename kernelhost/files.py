"""The host's own directory: compiled-module cache, static data store and per-run directories.

Layout under the root (created 0700, must belong to this user and not be group/world-writable):

    modules/<wasmtime version>-<engine fingerprint>/<sha256>.cwasm   compiled modules
    static/<sha256>/static                                          static data, read-only
    empty/                                                          /ccgsc when nothing is given
    runs/<random>/{static,checkpoint}                               only for runs with a checkpoint
    spool/                                                          large stdout (stdout_file=True)

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
from pathlib import Path

import wasmtime

from .contract import CHECKPOINT_NAME, STATIC_NAME

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


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

    def __init__(self, root: str | os.PathLike[str] | None, engine_fingerprint: str) -> None:
        self.persistent = root is not None
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="ccgsc-kernelhost-"))
            self._finalizer: weakref.finalize | None = weakref.finalize(
                self, shutil.rmtree, self.root, ignore_errors=True
            )
        else:
            self.root = Path(root).absolute()
            self._finalizer = None
        ensure_private_dir(self.root)
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
        self._known_static: set[str] = set()
        self._sweep()

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

    # --- the /ccgsc directory -----------------------------------------------------------------

    def static_dir_for(self, data: bytes, sha256: str | None) -> Path:
        """A read-only directory holding `data` as the file `static`, shared by all runs.

        `sha256` (hex) saves hashing large data on every run; it is verified when the data is
        first stored, so a wrong one raises ValueError instead of poisoning the store.
        """
        if sha256 is not None:
            sha256 = sha256.lower()
            if not SHA256_RE.match(sha256):
                raise ValueError("static_sha256 must be 64 hex digits")
            if sha256 in self._known_static:
                return self.static_dir / sha256
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256 != digest:
            raise ValueError("static_sha256 does not match the static data")
        final = self.static_dir / digest
        with self._lock:
            if digest not in self._known_static:
                if not _owned_regular_file(final / STATIC_NAME) or (
                    os.path.getsize(final / STATIC_NAME) != len(data)
                ):
                    self._write_static(final, data)
                self._known_static.add(digest)
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

    def run_dir(self, static_dir: Path | None, checkpoint: bytes) -> Path:
        """A private directory with `checkpoint` (and the static file, hard-linked when the
        filesystem allows). The caller removes it with remove_run_dir()."""
        d = Path(tempfile.mkdtemp(dir=self.runs_dir, prefix=f"{os.getpid()}-"))
        (d / CHECKPOINT_NAME).write_bytes(checkpoint)
        os.chmod(d / CHECKPOINT_NAME, 0o400)
        if static_dir is not None:
            src = static_dir / STATIC_NAME
            try:
                os.link(src, d / STATIC_NAME)
            except OSError:
                shutil.copyfile(src, d / STATIC_NAME)
                os.chmod(d / STATIC_NAME, 0o400)
        return d

    @staticmethod
    def remove_run_dir(d: Path) -> None:
        shutil.rmtree(d, ignore_errors=True)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # it may have been held by a thread the child lacks

    def close(self) -> None:
        """Remove the directory now if it is a private temporary one."""
        if self._finalizer is not None:
            self._finalizer()
