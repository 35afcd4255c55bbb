"""What validating a job's units needs, loaded once per job, and the key workers cache the
job's description under."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from sqlalchemy import Connection

from tabgrid import kernels
from tabgrid.blobs import digest_of
from tabgrid.protocol import BlobRef, JobSpec, Policy, encoder
from tabgrid.store import jobs as jobs_q


@dataclass
class JobContext:
    """What validating a job's units needs, loaded once per job."""

    kernel: ModuleType
    policy: Policy
    params: dict
    inputs: dict[str, BlobRef]
    key: str = ""  # what workers cache the job's description under (protocol.JobSpec)


ContextLoader = Callable[[Connection, int], JobContext]


def load_context(conn: Connection, job_id: int) -> JobContext:
    row = jobs_q.get_job(conn, job_id)
    if row is None:
        raise LookupError(f"job {job_id} does not exist")
    key = job_key(job_id, row.kernel, row.params, row.inputs)
    return JobContext(kernels.get(row.kernel), row.policy, row.params, row.inputs, key)


def job_key(job_id: int, kernel: str, params: dict, inputs: dict[str, BlobRef]) -> str:
    """A digest of everything a job's units run under: a job that reuses an id, or a worker
    cache that outlives a job, can never match another job's description."""
    spec = JobSpec(job=job_id, kernel=kernel, params=params, inputs=inputs)
    return digest_of(encoder.encode(spec))[:32]
