"""A unit's life: how many replicas it still wants, its derived state, when it fails."""

from __future__ import annotations

from dataclasses import dataclass, field

from tabgrid.protocol import Policy

FINAL = ("done", "failed", "cancelled")


@dataclass
class UnitRow:
    """The counters of one unit, changed in Python and written back in one UPDATE."""

    id: int
    job_id: int
    idx: int
    state: str
    want: int
    issued: int
    inflight: int
    results: int
    canonical_id: int | None = None
    outputs: str | None = None
    error: str | None = None
    loaded_state: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.loaded_state = self.state

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def derive_state(self) -> None:
        if self.final:
            return
        if self.inflight > 0:
            self.state = "running"
        elif self.results > 0:
            self.state = "validating"
        else:
            self.state = "pending"

    def replace_replica(self, policy: Policy) -> bool:
        """Asks for one more replica if the policy allows it; True when it did."""
        if self.issued + self.want < policy.max_replicas:
            self.want += 1
            return True
        return False

    def fail_if_stuck(self, reason: str) -> bool:
        """A unit with nothing in flight and nothing more to issue can never finish."""
        if not self.final and self.want == 0 and self.inflight == 0:
            self.state = "failed"
            self.error = reason
            return True
        return False

    def values(self, now: float) -> dict:
        return {
            "state": self.state,
            "want": self.want,
            "issued": self.issued,
            "inflight": self.inflight,
            "results": self.results,
            "canonical_id": self.canonical_id,
            "outputs": self.outputs,
            "error": self.error,
            "updated_at": now,
        }
