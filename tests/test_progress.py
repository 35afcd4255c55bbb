from __future__ import annotations

import io

from tabgrid.client.progress import ProgressBar, format_duration, format_rate, render, should_draw
from tabgrid.protocol import JobStatus, Policy, UnitCounts


def status(done: int = 450, total: int = 1000, **changes: object) -> JobStatus:
    fields: dict[str, object] = {
        "id": 7,
        "name": "tiles",
        "kernel": "matmul",
        "owner": "alice",
        "state": "running",
        "policy": Policy(),
        "units": total,
        "counts": UnitCounts(pending=total - done, done=done),
        "fraction_done": done / total if total else 0.0,
        "created_at": 0.0,
        "updated_at": 0.0,
        "rate": 12.34,
        "eta_s": 44.6,
    }
    fields.update(changes)
    return JobStatus(**fields)  # type: ignore[arg-type]


def test_durations_and_rates_read_like_clocks() -> None:
    assert format_duration(44.6) == "0:45"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(None) == "--:--"
    assert format_duration(float("inf")) == "--:--"
    assert format_rate(0.5) == "0.50/s"
    assert format_rate(12.34) == "12.3/s"
    assert format_rate(1234.5) == "1234/s"


def test_line_shows_percent_counts_rate_and_eta() -> None:
    line = render(status(), width=80)
    assert line.startswith("job 7 [")
    assert " 45.0% 450/1000 12.3/s ETA 0:45" in line
    assert len(line) == 80
    inside = line[line.index("[") + 1 : line.index("]")]
    # The bar is filled in proportion to the fraction done.
    assert abs(inside.count("#") / len(inside) - 0.45) < 0.05


def test_finished_job_shows_its_state_and_failures() -> None:
    done = status(done=10, total=10, state="failed", eta_s=None)
    done.counts.done, done.counts.failed = 8, 2
    line = render(done, width=80)
    assert "10/10 (2 failed)" in line
    assert line.endswith(" failed")
    assert "ETA" not in line


def test_paused_job_says_so_and_narrow_terminals_drop_the_bar() -> None:
    assert "ETA 0:45 paused" in render(status(state="paused"))
    narrow = render(status(), width=30)
    assert "[" not in narrow and len(narrow) <= 30


def test_empty_job_renders() -> None:
    line = render(status(done=0, total=0, eta_s=None, rate=0.0), width=60)
    assert "0/0" in line and "--:--" in line


def test_draws_on_terminals_or_when_forced() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert should_draw(True, Tty())
    assert not should_draw(True, io.StringIO())
    assert should_draw("always", io.StringIO())
    assert not should_draw(False, Tty())


def test_bar_redraws_in_place_and_ends_with_a_newline() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=60, min_interval=0.0)
    bar.update(status(done=100))
    bar.update(status(done=200, state="paused"))
    bar.close(status(done=1000, state="done", eta_s=None))
    text = out.getvalue()
    frames = text.split("\r")[1:]
    assert len(frames) == 3
    assert "100/1000" in frames[0] and "200/1000" in frames[1]
    assert frames[2].rstrip("\n").rstrip().endswith("done")
    assert text.endswith("\n") and text.count("\n") == 1
    # Each frame is padded to cover the longer frame before it.
    assert len(frames[2].rstrip("\n")) >= len(frames[1])


def test_bar_skips_redraws_that_come_too_fast() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=60, min_interval=60.0)
    bar.update(status(done=100))
    bar.update(status(done=200))
    assert out.getvalue().count("\r") == 1
    bar.close()
    assert out.getvalue().endswith("\n")
