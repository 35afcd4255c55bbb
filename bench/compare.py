"""One bench, two versions of the code, in turns: what a change did, measured so that the
machine's drift and the order of the runs do not decide it.

Runs ``bench/NAME.py ARGS`` from a checkout of REV (a git worktree made for it, removed
after) and from this checkout, in ABBA order (REV, this, this, REV, REV, this, ...), each run
after ``sync`` and a pause: back to back, the second of two runs is slower whatever it runs.
Reads one figure from each run's output and prints each run, then each side's mean and range
and the change in percent.

    ./dev bench compare REV [--runs 4] [--pause 5] [--figure REGEX] -- NAME [ARGS...]

The figure defaults to the bench's CPU per validated unit (tick, dispatch); for another bench
give ``--figure`` a regular expression whose first group is the number.

With ``--instructions`` each side runs once under valgrind's callgrind, and the figure is the
instructions the whole run executed: a count that does not drift with the machine's load,
repeatable within about 0.1% (the hash seed is fixed), so that a change of a few percent to
the tick shows where CPU times bury it. Both sides start and set up alike (both checkouts'
code compiled first, so that neither pays for compiling it), so the difference is the
change's; with the bench's ``--units N`` it is also given per unit. Only the bench's own
process is counted: the benches that do their work in it (IN_PROCESS) are accepted. They run
side by side unless they name a ``--db`` (one database shared by both would mix their work).
Callgrind runs a program some fifty times slower: ``tick --units 2000`` takes about a minute.

    ./dev bench compare REV --instructions -- tick --units 2000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {
    "tick": r"tick CPU per validated unit .*?: ([\d,.]+) us",
    "dispatch": r"coordinator CPU per validated unit \(rusage\): ([\d,.]+) us",
}


def order(runs: int) -> list[str]:
    """ABBA...: each side runs first as often as second, so an order effect cancels."""
    pattern = ["base", "head", "head", "base"]
    return [pattern[i % 4] for i in range(2 * runs)]


def figure(output: str, pattern: str) -> float:
    found = re.search(pattern, output)
    if found is None:
        raise SystemExit(f"no figure matching {pattern!r} in the bench's output:\n{output}")
    return float(found.group(1).replace(",", ""))


# valgrind's last word on a run: "==PID== Collected : N".
INSTRUCTIONS = r"(?m)^==\d+== Collected : (\d+)"
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
# Benches whose work runs in their own process, which is all that callgrind counts here.
IN_PROCESS = frozenset({"tick", "trust"})


def compile_code(checkout: Path) -> None:
    """Byte-compiles a checkout's code, so that neither side's count includes compiling it."""
    dirs = [str(checkout / d) for d in ("server", "bench", "tests")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True)


def run_once(
    checkout: Path, name: str, args: list[str], pause: float, counting: bool = False
) -> str:
    """The bench's output; counting, valgrind's summary of the run too (stderr)."""
    os.sync()
    time.sleep(pause)
    cmd = [sys.executable, str(checkout / "bench" / f"{name}.py"), *args]
    env = None
    if counting:
        cmd = [*CALLGRIND, *cmd]
        env = os.environ | {"PYTHONHASHSEED": "0"}  # the same dict layouts on both sides
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout + (done.stderr if counting else "")


def summary(label: str, values: list[float]) -> str:
    return f"{label}: mean {mean(values):,.1f} (range {min(values):,.1f}-{max(values):,.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the code to compare against (a commit, branch or tag)")
    ap.add_argument("--runs", type=int, default=4, help="runs of each side (default 4)")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds before each run")
    ap.add_argument("--figure", help="regular expression; its first group is the figure")
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="count each side's instructions under callgrind, once each, instead",
    )
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        ap.error("say which bench to run: -- NAME [ARGS...]")
    cut = argv.index("--")
    a, bench = ap.parse_args(argv[:cut]), argv[cut + 1 :]
    name, args = bench[0], bench[1:]
    if not (ROOT / "bench" / f"{name}.py").exists():
        ap.error(f"no bench/{name}.py")
    pattern = INSTRUCTIONS if a.instructions else a.figure or FIGURES.get(name)
    if pattern is None:
        ap.error(f"bench {name!r} has no default figure: give --figure")
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    if a.instructions and name not in IN_PROCESS:
        ap.error(
            f"--instructions counts the bench's own process; bench {name!r} does its work in "
            f"others (benches it counts: {', '.join(sorted(IN_PROCESS))})"
        )
    if a.instructions and shutil.which("valgrind") is None:
        ap.error("--instructions wants valgrind: ./dev bench installs it")
    tmp = Path(tempfile.mkdtemp(prefix="compare-"))
    base = tmp / "base"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "-q", str(base), a.rev], check=True)
    got: dict[str, list[float]] = {"base": [], "head": []}
    checkouts = {"base": base, "head": ROOT}
    try:
        if a.instructions:  # a count does not depend on the load: once a side
            for checkout in checkouts.values():
                compile_code(checkout)
            alone = any(arg == "--db" or arg.startswith("--db=") for arg in args)
            with ThreadPoolExecutor(1 if alone else 2) as pool:
                outs = pool.map(lambda c: run_once(c, name, args, 0.0, True), checkouts.values())
                runs = list(zip(checkouts, outs, strict=True))
        else:
            sides = order(a.runs)
            runs = ((side, run_once(checkouts[side], name, args, a.pause)) for side in sides)
        for side, out in runs:
            got[side].append(figure(out, pattern))
            print(f"{side} ({a.rev if side == 'base' else 'this checkout'}): {got[side][-1]:,.1f}")
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    if a.instructions:
        print(instructions_change(got["base"][0], got["head"][0], units_of(args)))
        return
    print(summary(f"{a.rev}", got["base"]))
    print(summary("this checkout", got["head"]))
    change = (mean(got["head"]) - mean(got["base"])) / mean(got["base"])
    overlap = min(got["head"]) <= max(got["base"]) and min(got["base"]) <= max(got["head"])
    print(
        f"change: {change:+.1%}"
        + (
            "; the ranges overlap: within the noise of these runs"
            if overlap
            else "; the ranges do not overlap (more runs make that surer)"
        )
    )


def units_of(args: list[str]) -> int | None:
    """The bench's ``--units N`` (spelled out), the last one given as argparse takes it."""
    units = None
    for i, arg in enumerate(args):
        if arg == "--units" and i + 1 < len(args):
            units = int(args[i + 1])
        elif arg.startswith("--units="):
            units = int(arg.split("=", 1)[1])
    return units


def instructions_change(base: float, head: float, units: int | None) -> str:
    line = f"instructions: {head - base:+,.0f} ({(head - base) / base:+.2%} of the whole run)"
    if units:
        line += f", {(head - base) / units:+,.0f} a unit"
    return line


if __name__ == "__main__":
    main()
