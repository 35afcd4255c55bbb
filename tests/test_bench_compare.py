"""bench/compare.py: two versions of the code in turns, ABBA, one figure read from each run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import compare  # noqa: E402


def test_each_side_runs_first_as_often_as_second() -> None:
    runs = compare.order(4)
    assert runs == ["base", "head", "head", "base"] * 2
    pairs = [tuple(runs[i : i + 2]) for i in range(0, len(runs), 2)]
    assert pairs.count(("base", "head")) == pairs.count(("head", "base"))


def test_the_default_figures_read_the_benches_own_lines() -> None:
    tick = "tick CPU per validated unit (10000 units, quorum 2): 1,185 us"
    assert compare.figure(tick, compare.FIGURES["tick"]) == 1185.0
    dispatch = "coordinator CPU per validated unit (rusage): 165 us (141 user, 24 system; ...)"
    assert compare.figure(dispatch, compare.FIGURES["dispatch"]) == 165.0
    with pytest.raises(SystemExit, match="no figure"):
        compare.figure("nothing here", compare.FIGURES["tick"])


def test_the_instruction_count_is_valgrinds_total_not_a_figure_of_the_bench() -> None:
    out = (
        "tick CPU per validated unit (2000 units, quorum 2): 9,575 us\n"
        "==7233== Events    : Ir\n"
        "==7233== Collected : 6259082188\n"
        "==7233== I   refs:      6,259,082,188\n"
    )
    assert compare.figure(out, compare.INSTRUCTIONS) == 6259082188.0
    with pytest.raises(SystemExit, match="no figure"):  # not run under valgrind
        compare.figure(out.splitlines()[0], compare.INSTRUCTIONS)


def test_an_instruction_change_is_given_per_unit_when_the_bench_says_how_many() -> None:
    assert compare.units_of(["--units", "2000", "--slots", "64"]) == 2000
    assert compare.units_of(["--units=500"]) == 500
    assert compare.units_of(["--slots", "64"]) is None
    assert compare.units_of(["--units", "10", "--units", "20"]) == 20, "argparse takes the last"
    line = compare.instructions_change(6_000_000_000, 5_940_000_000, 2000)
    assert line == "instructions: -60,000,000 (-1.00% of the whole run), -30,000 a unit"
    assert compare.instructions_change(100, 101, None).endswith("(+1.00% of the whole run)")


def test_instructions_are_counted_only_for_benches_that_work_in_their_own_process() -> None:
    # dispatch's work is in its coordinator and worker processes, which callgrind would not see
    before = _worktrees()
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "HEAD", "--instructions", "--"]
        + ["dispatch", "--units", "100"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "counts the bench's own process" in done.stderr, done.stderr
    assert "tick" in done.stderr
    assert _worktrees() == before, "refused before any worktree was made"


def test_a_comparison_runs_both_sides_and_leaves_no_worktree() -> None:
    before = _worktrees()
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compare.py"),
            "HEAD",
            "--runs",
            "1",
            "--pause",
            "0",
            "--",
            "tick",
            "--units",
            "200",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    ).stdout
    assert out.count("base (HEAD): ") == 1 and out.count("head (this checkout): ") == 1, out
    assert "change: " in out
    assert _worktrees() == before


def _worktrees() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
