"""The disagreement feed: units whose results differ, each with a line an operator can read
on how they differ (stored by store.disagreements, shown by the console)."""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

from tabgrid.coordinator.differences import describe as describe_difference
from tabgrid.coordinator.rules import Candidate
from tabgrid.protocol import Output

MAX_DESCRIBED = 1 << 22  # elements compared one by one for the feed; larger: by digest


class Feed:
    """One batch's disagreements, gathered for store.disagreements.record."""

    def __init__(self, now: float, array: Callable[[Output], Any]) -> None:
        self._now = now
        self._array = array  # an output's bytes as a numpy array
        self.entries: list[dict] = []

    def note(self, u, ctx, canon, fresh, valid, owner, agree=None) -> None:  # type: ignore[no-untyped-def]
        """Adds a disagreement to the feed when some of ``fresh`` disagree with ``canon`` (or,
        with no canonical result yet, with the first of them, judged by ``agree``)."""
        odd = [c for c in fresh if c.replica_id not in valid and c is not canon]
        if canon is None:
            canon = fresh[0]
            odd = [c for c in fresh[1:] if not agree(canon.outputs, c.outputs)]
        if not odd:
            return
        lines = [f"worker {owner[c.replica_id][:8]}: {self._how(canon, c)}" for c in odd]
        against = "the canonical result" if u.state == "done" else "the first result"
        state = {c.replica_id: "valid" if c.replica_id in valid else "invalid" for c in fresh}
        if u.state != "done":
            state = dict.fromkeys(state, "undecided")
        replicas = [
            {
                "replica": c.replica_id,
                "worker": owner.get(c.replica_id, ""),
                "state": state.get(c.replica_id, "canonical"),
                "digest": next(iter(c.outputs.values())).digest if c.outputs else "",
            }
            for c in ([canon] if canon.replica_id not in state else []) + fresh
            if c.replica_id >= 0
        ]
        self.entries.append(
            {
                "at": self._now,
                "job_id": u.job_id,
                "unit_id": u.id,
                "idx": u.idx,
                "kernel": ctx.kernel.NAME,
                "summary": f"{len(odd)} of {len(fresh)} results differ from {against}: "
                + "; ".join(lines),
                "replicas": replicas,
            }
        )

    def _how(self, reference: Candidate, other: Candidate) -> str:
        """How ``other``'s outputs differ from ``reference``'s, element by element when both
        are at hand; by digest when not (under exact comparison only canonical bytes stay)."""
        try:
            if _elements(reference.outputs) + _elements(other.outputs) > MAX_DESCRIBED:
                raise ValueError("too large to compare element by element here")
            return describe_difference(self._arrays(reference.outputs), self._arrays(other.outputs))
        except Exception:  # noqa: BLE001 - the feed must not fail a batch
            a, b = reference.outputs, other.outputs
            differ = [n for n in sorted(set(a) | set(b)) if n not in a or n not in b
                      or a[n].digest != b[n].digest]  # fmt: skip
            return (
                "; ".join(
                    f"{n}: different bytes (sha256 {a[n].digest[:8] if n in a else '-'} "
                    f"vs {b[n].digest[:8] if n in b else '-'})"
                    for n in differ
                )
                or "same bytes, judged different by the comparator"
            )

    def _arrays(self, outputs: dict[str, Output]) -> dict[str, Any]:
        return {k: self._array(o) for k, o in outputs.items()}


def _elements(outputs: dict[str, Output]) -> int:
    return sum(prod(o.shape) for o in outputs.values())
