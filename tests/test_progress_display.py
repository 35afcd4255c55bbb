"""Progress where people wait: a line per interval into a file or a pipe, rich's bars on a
terminal (several jobs at once), tqdm's notebook path under a Jupyter kernel's IPython."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tabgrid.client.progress import (
    LineProgress,
    NotebookProgress,
    RichProgress,
    choose_display,
    in_notebook,
    open_display,
    render,
)
from tabgrid.protocol import UnitCounts
from tabgrid.settings import Settings
from test_http_hardening import LiveServer
from test_progress import status


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_or_pipe_gets_a_line_per_interval() -> None:
    out = io.StringIO()
    lines = LineProgress(out, interval=0.2)
    first = status(done=100)
    lines.update(first)
    lines.update(status(done=150))  # too soon, same state: nothing
    assert out.getvalue() == render(first, 100) + "\n"
    time.sleep(0.25)
    later = status(done=200)
    lines.update(later)
    paused = status(done=200, state="paused")
    lines.update(paused)  # a new state is shown at once
    end = status(done=1000, state="done", counts=UnitCounts(done=1000), fraction_done=1.0)
    lines.close(end)
    assert out.getvalue().splitlines() == [
        render(first, 100),
        render(later, 100),
        render(paused, 100),
        render(end, 100),
    ]
    assert "\r" not in out.getvalue(), "nothing is redrawn in place in a log"
    assert out.getvalue().splitlines()[1] == (
        "job 7 [" + "#" * 12 + "." * 48 + "]  20.0% 200/1000 12.3/s ETA 0:45"
    )


def test_a_stalled_job_says_why_in_its_line() -> None:
    out = io.StringIO()
    LineProgress(out).update(status(stalled="no unit of this job was leased for 61 s"))
    assert out.getvalue().splitlines()[1] == "  stalled: no unit of this job was leased for 61 s"


def test_the_display_fits_the_stream() -> None:
    assert choose_display(True, io.StringIO()) == "lines"
    assert choose_display(True, Tty()) == "terminal"
    assert choose_display(False, Tty()) is None
    assert isinstance(open_display(True, io.StringIO()), LineProgress)
    assert isinstance(open_display(True, Tty()), RichProgress)
    assert open_display(False, io.StringIO()) is None


def test_rich_draws_a_row_per_job_on_a_terminal() -> None:
    out = Tty()
    bars = RichProgress(out)
    bars.update(status(done=450))
    bars.update(status(done=10, total=20, id=8, name="other"))
    bars.close(status(done=1000, state="done", counts=UnitCounts(done=1000)))
    text = out.getvalue()
    assert "job 7 tiles" in text and "1000/1000" in text and "done" in text
    assert "job 8 other" in text and "10/20" in text


@pytest.fixture
def ipython() -> Iterator[object]:
    """A real IPython shell, as `ipython` or a notebook kernel creates one."""
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    shell = interactiveshell.InteractiveShell.instance()
    try:
        yield shell
    finally:
        interactiveshell.InteractiveShell.clear_instance()


def test_the_notebook_path_is_chosen_under_a_jupyter_kernel(ipython) -> None:  # type: ignore[no-untyped-def]
    # A terminal IPython is not a notebook: its config names no kernel app.
    assert not in_notebook()
    assert choose_display(True, io.StringIO()) == "lines"
    # A Jupyter kernel's shell is configured by IPKernelApp (what ipykernel sets up).
    ipython.config.IPKernelApp.connection_file = "kernel-1.json"  # type: ignore[attr-defined]
    assert in_notebook()
    assert choose_display(True, io.StringIO()) == "notebook"
    assert choose_display(True, Tty()) == "notebook", "a kernel's stderr may look like a tty"
    out = io.StringIO()
    shown = open_display(True, out)
    assert isinstance(shown, NotebookProgress)
    shown.update(status(done=450))
    shown.close(status(done=1000, state="done", counts=UnitCounts(done=1000)))
    # Without ipywidgets, tqdm's text bar; with them, the widget (nothing on the stream).
    if shown._tqdm.__module__ == "tqdm.std":
        assert "job 7 tiles: 100%" in out.getvalue() and "1000/1000" in out.getvalue()
    else:
        assert shown._tqdm.__module__ == "tqdm.notebook"


def test_without_ipython_there_is_no_notebook() -> None:
    class Shell:
        config: dict = {}

    assert not in_notebook(Shell())
    Shell.config = {"IPKernelApp": {}}
    assert in_notebook(Shell())


def test_wait_writes_lines_when_stderr_is_a_pipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tabgrid.client.sdk import Client

    settings = Settings(db=f"sqlite:///{tmp_path}/t.db", data_dir=tmp_path)
    with LiveServer(settings) as live:
        _, token = live.store.create_token("submitter", "alice")
        with Client(live.url, token) as client:
            job = client.submit("checksum", [{"params": {"i": 0}}, {"params": {"i": 1}}])
            client.cancel(job.id)
            capsys.readouterr()
            final = client.wait(job.id, timeout=30)
    assert final.state == "cancelled"
    err = capsys.readouterr().err
    assert err.endswith("   0.0% 2/2 0.00/s cancelled\n") and err.startswith(f"job {job.id} [")
    assert err.count("\n") == 1, "one line: the job ended before the first interval"
    assert "\r" not in err
