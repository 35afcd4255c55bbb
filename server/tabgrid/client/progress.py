"""A one-line text progress bar for a job, shared by the SDK's ``wait`` and the CLI."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Literal, TextIO

from tabgrid.protocol import JobStatus

ProgressMode = bool | Literal["always"]

TERMINAL_STATES = frozenset({"done", "failed", "cancelled"})


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``, or ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:.0f}/s"
    if rate >= 10:
        return f"{rate:.1f}/s"
    return f"{rate:.2f}/s"


def render(status: JobStatus, width: int = 80) -> str:
    """One line describing a job's progress, at most ``width`` characters.

    The bar shrinks to fit the text; below a useful size it is left out.
    """
    counts = status.counts
    finished = counts.done + counts.failed + counts.cancelled
    fraction = min(max(status.fraction_done, 0.0), 1.0)
    head = f"job {status.id}"
    tail = f" {fraction * 100:5.1f}% {finished}/{status.units}"
    if counts.failed:
        tail += f" ({counts.failed} failed)"
    tail += f" {format_rate(status.rate)}"
    if status.state in TERMINAL_STATES:
        tail += f" {status.state}"
    else:
        tail += f" ETA {format_duration(status.eta_s)}"
        if status.state != "running":
            tail += f" {status.state}"
    room = width - len(head) - len(tail) - 3
    if room < 10:
        return (head + tail)[:width]
    filled = round(fraction * room)
    return f"{head} [{'#' * filled}{'.' * (room - filled)}]{tail}"


def should_draw(progress: ProgressMode, stream: TextIO) -> bool:
    """Draw when asked to always, or when asked and the stream is a terminal."""
    if progress == "always":
        return True
    if not progress:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ProgressBar:
    """Redraws one line in place; ``close`` ends it with a newline."""

    def __init__(
        self, stream: TextIO | None = None, width: int | None = None, min_interval: float = 0.1
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self._last_len = 0
        self._last_draw = 0.0
        self._drawn = False

    def update(self, status: JobStatus, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._drawn and now - self._last_draw < self.min_interval:
            return
        width = self.width or shutil.get_terminal_size((80, 24)).columns - 1
        line = render(status, max(width, 20))
        # Pad with spaces so a shorter line fully covers the previous one.
        pad = " " * max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)
        self._last_draw = now
        self._drawn = True

    def close(self, status: JobStatus | None = None) -> None:
        if status is not None:
            self.update(status, force=True)
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
            self._last_len = 0
