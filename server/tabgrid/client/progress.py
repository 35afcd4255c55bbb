"""Progress of jobs, shared by the SDK's ``wait``, the CLI and the demo: rich's bars on a
terminal, tqdm's widget in a Jupyter notebook, a plain line per interval into a file or a
pipe, and the one-line bar (``render``) they all can fall back to."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, Literal, TextIO

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


# ---- where people wait: a terminal, a notebook, a file or a pipe ------------------------------

Display = Literal["notebook", "terminal", "lines"]
LINE_INTERVAL_S = 10.0  # a line per interval into a file or a pipe (logs, CI, nohup)


def in_notebook(shell: object | None = None) -> bool:
    """True inside a Jupyter kernel: IPython's shell (``get_ipython()``, or ``shell``) has an
    ``IPKernelApp`` section in its config, the check tqdm.autonotebook makes. A terminal
    IPython has none, and without IPython imported there is no shell at all."""
    if shell is None:
        ipython = sys.modules.get("IPython")
        get = getattr(ipython, "get_ipython", None)
        shell = get() if get is not None else None
    if shell is None:
        return False
    try:
        return "IPKernelApp" in shell.config  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - anything odd is not a notebook
        return False


def choose_display(
    progress: ProgressMode, stream: TextIO, shell: object | None = None
) -> Display | None:
    """How to show progress: None when not asked; a widget under a Jupyter kernel; rich's bars
    on a terminal; otherwise (a file, a pipe) a plain line per interval."""
    if not progress:
        return None
    if in_notebook(shell):
        return "notebook"
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return "terminal"
    return "lines"


class LineProgress:
    """A line per job every ``interval`` seconds, and whenever its state changes; nothing is
    redrawn, so a log file reads top to bottom."""

    def __init__(self, stream: TextIO | None = None, interval: float = LINE_INTERVAL_S) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last: dict[int, tuple[float, str, str]] = {}  # job -> (when, state, text)

    def update(self, status: JobStatus, *, force: bool = False) -> None:
        """``force``: now, unless the line would repeat the last one word for word."""
        now = time.monotonic()
        line = render(status, 100)
        if status.stalled:
            line += f"\n  stalled: {status.stalled}"
        last = self._last.get(status.id)
        if last is not None:
            soon = last[1] == status.state and now - last[0] < self.interval
            if last[2] == line or (soon and not force):
                return
        self.stream.write(line + "\n")
        self.stream.flush()
        self._last[status.id] = (now, status.state, line)

    def close(self, status: JobStatus | None = None) -> None:
        if status is not None:
            self.update(status, force=True)


class RichProgress:
    """rich's progress bars on a terminal, one row per job (several jobs at once)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console(file=stream if stream is not None else sys.stderr)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self._tasks: dict[int, Any] = {}
        self._started = False

    def update(self, status: JobStatus, *, force: bool = False) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        counts = status.counts
        finished = counts.done + counts.failed + counts.cancelled
        note = f"{format_rate(status.rate)} {status.state}"
        if counts.failed:
            note += f" ({counts.failed} failed)"
        if status.stalled:
            note += " stalled"
        task = self._tasks.get(status.id)
        if task is None:
            name = f"job {status.id}" + (f" {status.name}" if status.name else "")
            task = self._tasks[status.id] = self._progress.add_task(
                name, total=status.units or 1, note=note
            )
        self._progress.update(task, completed=finished, total=status.units or 1, note=note)
        if force:
            self._progress.refresh()

    def close(self, status: JobStatus | None = None) -> None:
        if status is not None:
            self.update(status, force=True)
        if self._started:
            self._progress.stop()
            self._started = False


class NotebookProgress:
    """tqdm.auto's widget in a Jupyter notebook (its text bar where ipywidgets is missing)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._tqdm = _notebook_tqdm()
        self._bars: dict[int, Any] = {}

    def update(self, status: JobStatus, *, force: bool = False) -> None:
        counts = status.counts
        finished = counts.done + counts.failed + counts.cancelled
        bar = self._bars.get(status.id)
        if bar is None:
            name = f"job {status.id}" + (f" {status.name}" if status.name else "")
            bar = self._bars[status.id] = self._tqdm(
                total=status.units, desc=name, unit="unit", file=self.stream
            )
        bar.n = finished
        bar.set_postfix_str(status.state + (" stalled" if status.stalled else ""), refresh=False)
        bar.refresh()

    def close(self, status: JobStatus | None = None) -> None:
        if status is not None:
            self.update(status, force=True)
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def _notebook_tqdm() -> Any:
    """tqdm's notebook widget; its text bar when ipywidgets (the widget's half) is missing."""
    try:
        from tqdm.notebook import IProgress  # None without ipywidgets
        from tqdm.notebook import tqdm as widget
    except ImportError:
        IProgress = None  # noqa: N806 - tqdm's name
    if IProgress is not None:
        return widget
    from tqdm.std import tqdm as text

    return text


Shown = ProgressBar | LineProgress | RichProgress | NotebookProgress


def open_display(
    progress: ProgressMode, stream: TextIO | None = None, shell: object | None = None
) -> Shown | None:
    """The progress display that fits where the caller waits (``choose_display``);
    ``progress="always"`` keeps the one-line bar redrawn in place, whatever the stream."""
    stream = stream if stream is not None else sys.stderr
    if progress == "always":
        return ProgressBar(stream)
    kind = choose_display(progress, stream, shell)
    if kind == "notebook":
        return NotebookProgress(stream)
    if kind == "terminal":
        return RichProgress(stream)
    if kind == "lines":
        return LineProgress(stream)
    return None
