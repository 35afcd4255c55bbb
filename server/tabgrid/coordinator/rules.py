"""Deciding which results count: comparators, BOINC's check_set rule, verifiers, credit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

from tabgrid.protocol import Output, Policy

Outputs = dict[str, Output]
Loader = Callable[[Output], Any]  # Output -> numpy array


class Candidate(NamedTuple):  # a tuple: made for every result of every unit judged
    replica_id: int
    outputs: Outputs


class Verdict(NamedTuple):
    canonical: int | None = None
    valid: Sequence[int] = ()
    invalid: Sequence[int] = ()


UNDECIDED = Verdict()


def check_set(
    results: Sequence[Candidate],
    quorum: int,
    agree: Callable[[Outputs, Outputs], bool],
    witness: Callable[[int], str] = str,
) -> Verdict:
    """BOINC's rule: the first result (in return order) that agrees with results of at least
    `quorum` witnesses, itself included, is canonical; those agreeing with it are valid, the
    rest invalid. A witness (``witness`` of a replica id: its worker, or its address) counts
    once however many of its results agree: two leases of one unit that reached one worker
    (a race, a lease lost and given back) are one word. No verdict until `quorum` witnesses
    answered, and none while no result reaches the quorum."""
    if len(results) < quorum or len({witness(r.replica_id) for r in results}) < quorum:
        return UNDECIDED
    for cand in results:
        agreeing = [o.replica_id for o in results if o is cand or agree(cand.outputs, o.outputs)]
        if len({witness(rid) for rid in agreeing}) >= quorum:
            rest = [o.replica_id for o in results if o.replica_id not in agreeing]
            return Verdict(cand.replica_id, agreeing, rest)
    return UNDECIDED


def same_shape(a: Outputs, b: Outputs) -> bool:
    if a.keys() != b.keys():
        return False
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape for k in a)


def exact(a: Outputs, b: Outputs) -> bool:
    # same_shape and equal digests, in one loop: every result of every quorum comes here.
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if x.digest != y.digest or x.dtype != y.dtype or x.shape != y.shape:
            return False
    return True


def make_comparator(
    policy: Policy, kernel: ModuleType, load: Loader
) -> Callable[[Outputs, Outputs], bool]:
    """Exact comparison is on digests and never reads bytes; the others load arrays."""
    if policy.compare == "exact":
        return exact
    return _never_raises(_loading_comparator(policy, kernel, load))


def _never_raises(agree: Callable[[Outputs, Outputs], bool]) -> Callable[[Outputs, Outputs], bool]:
    """Outputs come from untrusted workers: a comparison that fails is a disagreement, never an
    exception in the coordinator."""

    def safe(a: Outputs, b: Outputs) -> bool:
        try:
            return agree(a, b)
        except Exception:
            return False

    return safe


def _loading_comparator(
    policy: Policy, kernel: ModuleType, load: Loader
) -> Callable[[Outputs, Outputs], bool]:

    def arrays(o: Outputs) -> dict[str, Any]:
        return {k: load(v) for k, v in o.items()}

    if policy.compare == "kernel" and hasattr(kernel, "compare"):

        def by_kernel(a: Outputs, b: Outputs) -> bool:
            if not same_shape(a, b):
                return False
            return exact(a, b) or bool(
                kernel.compare(arrays(a), arrays(b), policy.rtol, policy.atol)
            )

        return by_kernel

    def allclose(a: Outputs, b: Outputs) -> bool:
        import numpy as np

        if not same_shape(a, b):
            return False
        if exact(a, b):
            return True
        x, y = arrays(a), arrays(b)
        return all(
            np.allclose(x[k], y[k], rtol=policy.rtol, atol=policy.atol, equal_nan=True) for k in x
        )

    return allclose


def verify_single(
    kernel: ModuleType, params: dict, inputs: dict[str, Any], outputs: dict[str, Any]
) -> bool:
    """A cheap exact check that lets one replica stand alone (e.g. Freivalds for matmul)."""
    try:
        return bool(kernel.verify(params, inputs, outputs))
    except Exception:
        return False


def can_verify(kernel: ModuleType) -> bool:
    return callable(getattr(kernel, "verify", None))


def credit(
    kernel: ModuleType, params: dict, shapes: dict[str, tuple[str, tuple[int, ...]]]
) -> float:
    """Credit in GFLOP of useful work, BOINC-style: granted only to valid results."""
    try:
        return max(0.0, float(kernel.flops(params, shapes))) / 1e9
    except Exception:
        return 0.0
