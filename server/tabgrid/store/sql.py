"""The statements SQLModel's expression language does not state plainly, named in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, text


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, in the dialect at hand."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).on_conflict_do_nothing(), list(rows))


# Units of one job that still want a replica and that this worker may take: never a unit it
# already holds a live replica of, and (when asked) never one whose replica went to its address.
# A released replica (lost with its connection, or past its deadline) does not count: its worker
# may compute the unit again, else a small pool of workers could be shut out of a unit forever.
# PostgreSQL skips rows another coordinator is claiming right now instead of waiting on them.
_CLAIM = """
SELECT u.id FROM units u
WHERE u.job_id = :job AND u.want > 0
  AND NOT EXISTS (
    SELECT 1 FROM replicas r
    WHERE r.unit_id = u.id AND r.state <> 'released'
      AND (r.worker_id = :worker OR (:distinct AND r.client_addr = :addr))
  )
ORDER BY u.id
LIMIT :n
"""


def claim_unit_ids(
    conn: Connection, job: int, worker: str, addr: str, distinct: bool, n: int
) -> list[int]:
    sql = _CLAIM + (" FOR UPDATE OF u SKIP LOCKED" if conn.dialect.name == "postgresql" else "")
    params = {"job": job, "worker": worker, "addr": addr, "distinct": distinct, "n": n}
    return [row[0] for row in conn.execute(text(sql), params)]
