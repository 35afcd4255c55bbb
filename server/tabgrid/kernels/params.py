"""Checks of scalar params shared by the built-in kernels; each appends a message naming it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Described = Mapping[str, tuple[str, tuple[int, ...]]]


def check_int(
    params: Mapping[str, Any], name: str, lo: int, hi: int, errors: list[str], *, required: bool
) -> None:
    value = params.get(name)
    if value is None:
        if required:
            errors.append(f"param {name!r} is required")
    elif type(value) is not int or not lo <= value <= hi:
        errors.append(f"param {name!r} must be an integer from {lo} to {hi}, not {value!r}")


def check_real(
    params: Mapping[str, Any], name: str, bound: float, errors: list[str], *, required: bool
) -> None:
    value = params.get(name)
    if value is None:
        if required:
            errors.append(f"param {name!r} is required")
    elif (type(value) is not int and type(value) is not float) or not abs(value) <= bound:
        errors.append(f"param {name!r} must be a number within ±{bound:g}, not {value!r}")


def check_unknown(
    names: Iterable[str], allowed: frozenset[str], what: str, errors: list[str]
) -> None:
    unknown = [n for n in names if n not in allowed]
    if unknown:
        shown = ", ".join(repr(n) for n in sorted(unknown))
        expected = ", ".join(repr(n) for n in sorted(allowed)) or "none"
        errors.append(f"unknown {what} {shown}; expected {expected}")
