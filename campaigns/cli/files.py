"""Writing a user's output path whole: a new file appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def is_special(target: Path) -> bool:
    """An existing path that is not a regular file (/dev/null, /dev/stdout, a FIFO): written
    into, never replaced. Replacing /dev/null with a file, as root, breaks the machine."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def install(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` to `target` in one step (a crash leaves no half file), or copy
    it into `target` when that is a device or a pipe."""
    if is_special(target):
        with tmp.open("rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.unlink()
        return
    os.replace(tmp, target)
