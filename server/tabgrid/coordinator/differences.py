"""How two results of one unit differ, in a line an operator can read."""

from __future__ import annotations

from typing import Any

MAX_NAMES = 3


def describe(reference: dict[str, Any], other: dict[str, Any]) -> str:
    """Compares named numpy arrays output by output, e.g. "c: 12 of 4096 elements differ
    (max |diff| 0.31)"; "same bytes" when nothing differs (then only the comparator's
    tolerance, or the reference itself, can explain the verdict)."""
    import numpy as np

    parts = []
    for name in sorted(set(reference) | set(other)):
        if name not in other or name not in reference:
            parts.append(f"{name}: only in {'the reference' if name in reference else 'one'}")
            continue
        a, b = np.asarray(reference[name]), np.asarray(other[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            parts.append(f"{name}: {b.dtype}{list(b.shape)} instead of {a.dtype}{list(a.shape)}")
            continue
        x, y = a.astype(np.float64), b.astype(np.float64)
        both_nan = np.isnan(x) & np.isnan(y)
        differ = (x != y) & ~both_nan
        n = int(differ.sum())
        if n:
            gap = np.abs(x[differ] - y[differ])
            worst = float(np.nanmax(gap)) if np.isfinite(gap).any() else float("inf")
            parts.append(f"{name}: {n} of {a.size} elements differ (max |diff| {worst:.3g})")
    if not parts:
        return "same values"
    shown = parts[:MAX_NAMES]
    if len(parts) > MAX_NAMES:
        shown.append(f"and {len(parts) - MAX_NAMES} more outputs")
    return "; ".join(shown)
