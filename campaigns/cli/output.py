"""Printing: JSON for scripts, short lines for people, and the live progress bar of
`campaign watch` (redrawn in place on a terminal, plain lines otherwise)."""

from __future__ import annotations

import json
import shutil
import sys
from typing import IO, Any


def emit_json(data: Any, stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(data, indent=None, separators=(",", ":"), default=str) + "\n")
    out.flush()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate_text(rate: float) -> str:
    return f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s"


def progress_line(p: dict[str, Any], rate: float, eta: float | None) -> str:
    """One plain line: `campaign 7 running: 340/720 done (47.2%), 2 failed, 12.3/s, ETA 0:31`."""
    total = p["tasks_total"]
    finished = p["tasks_done"] + p["tasks_failed"]
    pct = 100.0 * finished / total if total else 0.0
    text = (
        f"campaign {p['id']} {p['state']}: {p['tasks_done']}/{total} done ({pct:.1f}%), "
        f"{p['tasks_failed']} failed"
    )
    if p["state"] == "running" and p.get("stalled"):
        # No ETA: the watch prints why it cannot progress (the `stalled` reason) instead.
        text += f", {rate_text(rate)}, stalled"
    elif p["state"] == "running":
        text += f", {rate_text(rate)}, ETA {duration(eta)}"
    if p.get("input_state") == "generating":
        text += " (generating tasks)"
    return text


def progress_bar(p: dict[str, Any], rate: float, eta: float | None, width: int) -> str:
    """`[#######-------] 47.2% 340/720 · 2 failed · 12.3/s · ETA 0:31` fitted to `width`."""
    total = p["tasks_total"]
    done, failed = p["tasks_done"], p["tasks_failed"]
    fraction = (done + failed) / total if total else 0.0
    tail = f" {100 * fraction:5.1f}% {done + failed}/{total}"
    if failed:
        tail += f" · {failed} failed"
    if p["state"] == "running" and p.get("stalled"):
        tail += f" · {rate_text(rate)} · stalled"
    elif p["state"] == "running":
        tail += f" · {rate_text(rate)} · ETA {duration(eta)}"
    else:
        tail += f" · {p['state']}"
    # The bar's width depends on the terminal only, so it does not jitter as the text changes.
    bar_width = max(10, min(40, width - 52))
    filled = int(bar_width * fraction)
    failed_cells = min(bar_width - filled, int(bar_width * failed / total)) if total else 0
    bar = "#" * (filled - failed_cells) + "x" * failed_cells + "-" * (bar_width - filled)
    return f"[{bar}]{tail}"[: max(width - 1, 20)]


class ProgressView:
    """Shows successive progress snapshots: a bar redrawn in place on a terminal, or a line
    whenever something changed on anything else (a log file, a CI job)."""

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.last_line = ""
        self.drawn = False

    def show(self, p: dict[str, Any], rate: float, eta: float | None) -> None:
        if self.tty:
            width = shutil.get_terminal_size((80, 20)).columns
            line = progress_bar(p, rate, eta, width)
            self.stream.write("\r\x1b[2K" + line)
            self.drawn = True
        else:
            line = progress_line(p, rate, eta)
            # Rate and ETA change on every poll; only print when the counts or state moved.
            key = line.split(", ", 2)[:2]
            if key == self.last_line.split(", ", 2)[:2]:
                return
            self.stream.write(line + "\n")
        self.last_line = line
        self.stream.flush()

    def finish(self, message: str) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
        self.stream.write(message + "\n")
        self.stream.flush()
