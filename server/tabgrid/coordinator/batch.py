"""A batch of results: what comes in (Incoming), what validating it reads and writes in bulk
(Batch), the bytes it carries (OutputBytes), and what it came to (Outcome)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Connection

from tabgrid.blobs import BlobStore
from tabgrid.coordinator.job_context import JobContext
from tabgrid.coordinator.reference_answers import as_array, read_array
from tabgrid.protocol import BlobRef, Output, ResultItem, Stats
from tabgrid.store import blob_rows
from tabgrid.store import results as results_q
from tabgrid.store.codec import loads, loads_inputs, loads_outputs, strip_data
from tabgrid.store.leases import Ended, add_ended
from tabgrid.store.results import Held


class Incoming(NamedTuple):  # a tuple: one is made for every result that comes in
    worker: str
    item: ResultItem
    tries: int = 0  # ticks that failed with it


@dataclass
class Outcome:
    stats: dict[str, Stats] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    new_work: bool = False
    units_done: int = 0
    # What the batch's results came to, for the console and /metrics.
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    # Seconds from each newly validated unit's first result to its verdict.
    latencies: list[float] = field(default_factory=list)
    # Workers whose results could not be recorded at all, and why: they are cut off.
    hostile: dict[str, str] = field(default_factory=dict)
    # Leases of units failed with their job (a confirmed shader error), to call back.
    cancelled: list[tuple[int, str]] = field(default_factory=list)
    # Workers a spot-check caught (banned, every result taken back), and why.
    caught: dict[str, str] = field(default_factory=dict)
    reopened: int = 0  # accepted units whose acceptance rested on a caught worker
    duplicates: int = 0  # results for replicas that had theirs already: ignored
    # Units that ended, by job, when the caller folds them into the jobs (record's defer_jobs).
    ended: Ended = field(default_factory=dict)
    # Workers found banned (through another coordinator) once their results' replicas were
    # locked: refused, and given no lease this tick.
    banned: set[str] = field(default_factory=set)

    def merge(self, other: Outcome) -> None:
        """Adds a later part of the same tick (each worker's stats are read after its part)."""
        self.stats |= other.stats
        self.rejected += other.rejected
        self.new_work |= other.new_work
        self.units_done += other.units_done
        self.valid += other.valid
        self.invalid += other.invalid
        self.errors += other.errors
        self.latencies += other.latencies
        self.hostile |= other.hostile
        self.cancelled += other.cancelled
        self.caught |= other.caught
        self.reopened += other.reopened
        self.duplicates += other.duplicates
        self.banned |= other.banned
        add_ended(self.ended, other.ended)


@dataclass
class Batch:
    """What validating a batch of units reads, in one query each, and the verdicts it writes."""

    replicas: dict[int, list]  # unit -> [replica, worker, state, outputs] in return order
    specs: dict[int, tuple[str, str]]
    first_result: dict[int, float] = field(default_factory=dict)
    addresses: dict[int, str] = field(default_factory=dict)  # replica -> client address
    spot_checks: set[int] = field(default_factory=set)
    valid: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        conn: Connection,
        unit_ids: list[int],
        specs: dict[int, tuple[str, str]],
        accepted: list[tuple[Incoming, Held]],
        updates: dict[int, dict],
        parsed: dict[int, dict[str, Output]],
        now: float,
    ) -> Batch:
        """Each unit's results in return order: those stored before, then this batch's (not
        written yet), ordered as `ORDER BY returned_at, id` would order them once written.
        Stored results carry their outputs as JSON text; this batch's come decoded, in
        ``parsed`` by replica, as their rows' JSON was just encoded from them (Batch.outputs
        reads either)."""
        keyed: dict[int, list] = {}
        addresses: dict[int, str] = {}
        spot: set[int] = set()
        if unit_ids:
            for r in results_q.deciding(conn, unit_ids):
                at = -math.inf if r.returned_at is None else r.returned_at
                keyed.setdefault(r.unit_id, []).append(
                    (at, r.id, [r.id, r.worker_id, r.state, r.outputs])
                )
                addresses[r.id] = r.client_addr
                if r.spot_check:
                    spot.add(r.id)
            wanted = set(unit_ids)
            for inc, rep in accepted:
                row = updates[rep.id]
                if row["state"] == "returned" and rep.unit_id in wanted:
                    at = row["returned_at"]
                    item = (at, rep.id, [rep.id, inc.worker, "returned", parsed[rep.id]])
                    keyed.setdefault(rep.unit_id, []).append(item)
                    addresses[rep.id] = rep.client_addr
                    if rep.spot_check:
                        spot.add(rep.id)
        replicas: dict[int, list] = {}
        first: dict[int, float] = {}
        for uid, rows in keyed.items():
            rows.sort()  # (returned_at, id, row): ids are unique, a row is never compared
            replicas[uid] = [r for _, _, r in rows]
            first[uid] = rows[0][0]
        return cls(replicas, specs, first, addresses, spot)

    @staticmethod
    def outputs(stored: str | dict[str, Output]) -> dict[str, Output]:
        """A result's outputs from a replicas entry: JSON text when stored before."""
        return loads_outputs(stored) if isinstance(stored, str) else stored

    def spec(self, unit_id: int, ctx: JobContext) -> tuple[dict, dict[str, BlobRef]]:
        """The unit's merged params and inputs: the job's, overridden by the unit's own."""
        params, inputs = self.specs[unit_id]
        return ctx.params | loads(params), ctx.inputs | loads_inputs(inputs)

    def flush(self, conn: Connection, updates: dict[int, dict]) -> None:
        """Verdicts on this batch's replicas go into their pending rows; the rest are stored."""
        for state, ids in (("valid", self.valid), ("invalid", self.invalid)):
            stored = []
            for rid in ids:
                row = updates.get(rid)
                if row is None:
                    stored.append(rid)
                else:
                    row["state"] = state
            results_q.judge(conn, stored, state)


# Canonical outputs this small, all inline, are stored in their unit's row. A blob row is a
# random insert into two indexes (blobs, blob_refs) per unit, a fifth of a tick's cost on
# SQLite, while the unit's row is written anyway; the researcher then reads them with the
# results, not one request per unit.
IN_ROW_BYTES = 2048


class OutputBytes:
    """The batch's inline outputs, read from memory before they are stored, and the ones of
    them kept: stored as blob rows that belong to their jobs, or in their unit's row."""

    def __init__(self, conn: Connection, blobs: BlobStore, now: float) -> None:
        self._conn = conn
        self._blobs = blobs
        self._now = now
        self.inline: dict[str, bytes] = {}  # inline outputs of the batch
        self.kept: dict[str, bytes] = {}  # of those, the ones to store
        self._kept_refs: set[tuple[str, int]] = set()  # (digest, job) of the kept ones

    def keep(self, outputs: dict[str, Output], job_id: int) -> None:
        for o in outputs.values():
            data = self.inline.get(o.digest)
            if data is not None:
                self.kept[o.digest] = data
                self._kept_refs.add((o.digest, job_id))

    def canonical(self, outputs: dict[str, Output], job_id: int) -> dict[str, Output]:
        """A unit's accepted outputs as its row stores them: with their bytes when small and
        inline (IN_ROW_BYTES), else references to blobs kept here or uploaded."""
        data = {k: self.inline.get(o.digest, o.data) for k, o in outputs.items()}
        small = [d for d in data.values() if d is not None]
        if len(small) == len(data) and sum(map(len, small)) <= IN_ROW_BYTES:
            return {k: msgspec.structs.replace(o, data=data[k]) for k, o in outputs.items()}
        self.keep(outputs, job_id)
        return strip_data(outputs)

    def at_hand(self, outputs: dict[str, Output]) -> bool:
        """Whether every output's bytes can be read: under exact comparison only canonical
        bytes are kept, so an answer that was not canonical before backtracking may have
        none anywhere (its results carried them, and they were judged invalid)."""
        return all(
            o.data is not None
            or o.digest in self.inline
            or self._blobs.has(o.digest)
            or blob_rows.read(self._conn, o.digest) is not None
            for o in outputs.values()
        )

    def store(self, conn: Connection, uploaded: set[tuple[str, int]]) -> None:
        """The inline outputs kept, as blob rows that belong to their jobs (so that retiring a
        job frees them), and the uploaded outputs' belonging too."""
        blob_rows.keep(conn, self.kept, self._now)
        results_q.reference_outputs(conn, uploaded | self._kept_refs)

    def array(self, o: Output) -> Any:
        if o.data is not None:  # a canonical output kept in its unit's row
            return as_array(o.data, o.dtype, o.shape)
        return self._load(o.digest, o.dtype, o.shape)

    def array_ref(self, ref: BlobRef) -> Any:
        return self._load(ref.digest, ref.dtype, ref.shape)

    def _load(self, digest: str, dtype: str, shape: list[int]) -> Any:
        data = self.inline.get(digest)
        if data is None:
            return read_array(self._conn, self._blobs, digest, dtype, shape)
        return as_array(data, dtype, shape)
