"""The Python SDK: submit jobs, follow their progress, fetch results as numpy arrays.

with Client("http://127.0.0.1:8000", token) as tg:
    job = tg.submit("matmul", [{"inputs": {"a": a, "b": b}}])
    tg.wait(job.id)
    c = tg.results(job.id)[0]["c"]
    vectors = tg.embed(["a sentence", "another one"], model="all-MiniLM-L6-v2")
"""

from __future__ import annotations

import hashlib
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from tabgrid.client.embeddings import TruncatedTexts, assemble, truncation_note
from tabgrid.client.model_files import read_model
from tabgrid.client.progress import TERMINAL_STATES, ProgressMode, Shown, open_display
from tabgrid.protocol import (
    BlobRef,
    EmbedJob,
    EmbedLayout,
    EmbedRequest,
    JobList,
    JobStatus,
    JobSubmit,
    JobSummary,
    ModelImport,
    ModelImported,
    ModelInfo,
    ModelList,
    Output,
    Policy,
    Problem,
    ServerLimits,
    UnitInfo,
    UnitPage,
    UnitResultLine,
    UnitSpec,
    encoder,
)

DTYPES = ("float32", "int32", "uint32", "uint8", "float64", "int64")
# Below this size one PUT costs less than asking first whether the server has the blob.
HEAD_THRESHOLD = 64 * 1024
MAX_KNOWN = 100_000
MAX_SHOWN_ERRORS = 20
POLL_INTERVAL_S = 1.0
POLL_RETRIES = 30
DEFAULT_WAIT_S = 3600.0  # Client.wait gives up after this long unless told otherwise
SHOWN_FAILURES = 5  # failed units whose errors a JobFailed names


class TabgridError(Exception):
    """An error answer from the coordinator, built from its problem document (RFC 9457)."""

    def __init__(self, status: int, title: str, detail: str = "", errors: list[str] | None = None):
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        super().__init__(status, title, detail, self.errors)

    def __str__(self) -> str:
        text = f"{self.title} (HTTP {self.status})"
        if self.detail:
            text += f": {self.detail}"
        shown = self.errors[:MAX_SHOWN_ERRORS]
        text += "".join(f"\n  - {error}" for error in shown)
        if len(self.errors) > len(shown):
            text += f"\n  ... and {len(self.errors) - len(shown)} more"
        return text


class JobStalled(Exception):
    """The job cannot progress as things stand (JobStatus.stalled says why); it still exists
    and resumes by itself when a worker that can take its units connects."""

    def __init__(self, status: JobStatus) -> None:
        self.status = status
        super().__init__(f"job {status.id} is stalled: {status.stalled}")


class JobFailed(Exception):
    """``wait(check=True)`` on a job that ended failed: the first failed units' errors."""

    def __init__(self, status: JobStatus, errors: list[tuple[int, str]]) -> None:
        self.status = status
        self.errors = errors
        counts = status.counts
        text = f"job {status.id} failed: {counts.failed} of {status.units} units failed"
        text += "".join(f"\n  unit {index}: {error}" for index, error in errors)
        if counts.failed > len(errors):
            text += f"\n  ... see every one with: tabgrid units {status.id} --state failed"
        super().__init__(text)


class TooLarge(ValueError):
    """A submission over the coordinator's limits, refused before anything was uploaded."""


def _problem(response: httpx.Response) -> TabgridError:
    try:
        problem = msgspec.json.decode(response.content, type=Problem)
    except (msgspec.DecodeError, msgspec.ValidationError):
        detail = response.text.strip()[:500] if response.content else ""
        return TabgridError(response.status_code, response.reason_phrase or "HTTP error", detail)
    return TabgridError(
        problem.status or response.status_code, problem.title, problem.detail, problem.errors
    )


def encode_array(array: np.ndarray) -> tuple[np.ndarray, str]:
    """The array as C-contiguous little-endian data, and its dtype name."""
    array = np.asarray(array)
    name = array.dtype.name
    if name not in DTYPES:
        raise TypeError(f"arrays must have one of the dtypes {', '.join(DTYPES)}; got {name}")
    little = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
    return little, name


def decode_array(data: bytes, dtype: str, shape: Iterable[int]) -> np.ndarray:
    """A read-only array over little-endian bytes; raises ValueError when the size is wrong."""
    shape = tuple(shape)
    kind = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(shape, dtype=np.int64)) * kind.itemsize
    if len(data) != expected:
        raise ValueError(f"{dtype}{list(shape)} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=kind).reshape(shape)


def iter_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream."""
    event, data = "", []
    for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


class _Refs:
    """Blob references for one submission: each array object is hashed and uploaded once."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.by_id: dict[int, tuple[np.ndarray, BlobRef]] = {}

    def ref(self, value: Any, where: str) -> BlobRef:
        if isinstance(value, BlobRef):
            return value
        if isinstance(value, np.ndarray):
            known = self.by_id.get(id(value))
            if known is None:
                # Holding the array keeps its id from being reused during this submission.
                known = (value, self.client.upload(value))
                self.by_id[id(value)] = known
            return known[1]
        if isinstance(value, Mapping):
            try:
                return msgspec.convert(value, BlobRef)
            except msgspec.ValidationError as e:
                raise ValueError(f"{where}: not a blob reference: {e}") from e
        raise TypeError(f"{where}: expected a numpy array or BlobRef, got {type(value).__name__}")

    def inputs(self, inputs: Mapping[str, Any] | None, where: str) -> dict[str, BlobRef]:
        return {name: self.ref(v, f"{where} input {name!r}") for name, v in (inputs or {}).items()}

    def unit(self, unit: UnitSpec | Mapping[str, Any], index: int) -> UnitSpec:
        if isinstance(unit, UnitSpec):
            return unit
        extra = set(unit) - {"params", "inputs"}
        if extra:
            raise ValueError(f"unit {index}: unknown keys {sorted(extra)}; use params and inputs")
        params = dict(unit.get("params") or {})
        return UnitSpec(params=params, inputs=self.inputs(unit.get("inputs"), f"unit {index}"))


class Client:
    """A synchronous client of one coordinator. Use it as a context manager or call close()."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (for tests or an in-process coordinator)."""
        headers = {"user-agent": "tabgrid-client"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._known: set[str] = set()
        self._limits: ServerLimits | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- plumbing ----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, "/api/v1" + path, **kwargs)
        if response.status_code >= 400:
            raise _problem(response)
        return response

    def _json(self, method: str, path: str, type_: type, body: Any = None, **kw: Any) -> Any:
        if body is not None:
            kw["content"] = encoder.encode(body)
            kw["headers"] = {"content-type": "application/json"}
        return msgspec.json.decode(self._request(method, path, **kw).content, type=type_)

    # ---- blobs -------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> BlobRef:
        """Store an array as a blob (skipped when the coordinator already has it)."""
        little, dtype = encode_array(array)
        digest = hashlib.sha256(little.data).hexdigest()
        if digest not in self._known:
            if little.nbytes <= HEAD_THRESHOLD or not self._has_blob(digest):
                headers = {"content-type": "application/octet-stream"}
                self._request("PUT", f"/blobs/{digest}", content=little.tobytes(), headers=headers)
            if len(self._known) >= MAX_KNOWN:
                self._known.clear()
            self._known.add(digest)
        return BlobRef(digest=digest, dtype=dtype, shape=list(little.shape))  # type: ignore[arg-type]

    def _has_blob(self, digest: str) -> bool:
        response = self._http.head(f"/api/v1/blobs/{digest}")
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise _problem(response)
        return True

    def blob(self, digest: str) -> bytes:
        """The bytes of a blob, checked against its digest."""
        data = self._request("GET", f"/blobs/{digest}").content
        _check_digest(data, digest)
        return data

    def array(self, ref: BlobRef | Output) -> np.ndarray:
        """A blob reference or a unit output as a (read-only) numpy array."""
        data = getattr(ref, "data", None)
        if data is None:
            data = self.blob(ref.digest)
        else:
            _check_digest(data, ref.digest)
        return decode_array(data, ref.dtype, ref.shape)

    # ---- jobs --------------------------------------------------------------------------

    def submit(
        self,
        kernel: str,
        units: Iterable[UnitSpec | Mapping[str, Any]],
        *,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        name: str = "",
        idempotency_key: str | None = None,
        split: bool = False,
    ) -> Any:
        """Submit a job. numpy arrays among the inputs are uploaded first, each once.

        A job over the coordinator's limits (``limits()``: units per job, bytes per request
        body) raises TooLarge naming the limit: for too many units before anything is uploaded,
        for too many bytes before the job is sent. With ``split=True`` such a job goes as
        several jobs instead and a ``Batch`` of them is returned (one job: its JobStatus), whose
        ``wait`` and ``results`` follow every part, results indexed as the units were given.
        """
        units = list(units)
        limits = self.limits()
        if len(units) > limits.max_units and not split:
            parts = -(-len(units) // limits.max_units)
            raise TooLarge(
                f"this job has {len(units)} units, but the coordinator at {self.url} takes at "
                f"most {limits.max_units} units per job (max_units, GET /api/v1/limits); "
                f"nothing was uploaded. Pass split=True to submit it as {parts} jobs of one "
                f"Batch, or submit at most {limits.max_units} units per job"
            )
        refs = _Refs(self)
        specs = [refs.unit(unit, index) for index, unit in enumerate(units)]
        body = JobSubmit(
            kernel=kernel,
            units=specs,
            params=dict(params or {}),
            inputs=refs.inputs(inputs, "job"),
            policy=_policy(policy),
            name=name,
            idempotency_key=idempotency_key,
        )
        encoded = encoder.encode(body)
        if len(units) <= limits.max_units and len(encoded) <= limits.max_body:
            return self._post_job(encoded)
        if not split:
            raise TooLarge(
                f"this job's submission is {len(encoded)} bytes, but the coordinator at "
                f"{self.url} takes at most {limits.max_body} bytes per request (max_body, "
                f"GET /api/v1/limits); the job was not sent. Pass split=True to submit it as "
                f"several jobs of one Batch, or move large values from params into inputs "
                f"(numpy arrays travel as blobs, up to max_blob={limits.max_blob} bytes each)"
            )
        return self._submit_parts(body, limits)

    def limits(self) -> ServerLimits:
        """What one submission may be, as the coordinator publishes it (asked once). A
        coordinator too old to publish them is taken as unlimited: it refuses by itself."""
        if self._limits is None:
            try:
                self._limits = self._json("GET", "/limits", ServerLimits)
            except TabgridError as e:
                if e.status != 404:
                    raise
                self._limits = ServerLimits(max_units=1 << 62, max_body=1 << 62, max_blob=1 << 62)
        return self._limits

    def _post_job(self, encoded: bytes) -> JobStatus:
        headers = {"content-type": "application/json"}
        response = self._request("POST", "/jobs", content=encoded, headers=headers)
        return msgspec.json.decode(response.content, type=JobStatus)

    def _submit_parts(self, body: JobSubmit, limits: ServerLimits) -> Batch:
        """The units in consecutive parts, each within max_units and max_body."""
        frame = len(encoder.encode(msgspec.structs.replace(body, units=[]))) + 64
        room = limits.max_body - frame
        parts: list[list[UnitSpec]] = [[]]
        size = 0
        for index, unit in enumerate(body.units):
            n = len(encoder.encode(unit)) + 1
            if n > room:
                raise TooLarge(
                    f"unit {index} alone is {n} bytes, more than a submission may hold "
                    f"(max_body={limits.max_body} bytes, GET /api/v1/limits); move its large "
                    f"values from params into inputs (numpy arrays travel as blobs)"
                )
            if len(parts[-1]) >= limits.max_units or size + n > room:
                parts.append([])
                size = 0
            parts[-1].append(unit)
            size += n
        jobs: list[JobStatus] = []
        offsets: list[int] = []
        first = 0
        for i, part in enumerate(parts):
            label = f"{body.name} [{i + 1}/{len(parts)}]".strip()[:200]
            key = None if body.idempotency_key is None else f"{body.idempotency_key}/{i}"[:200]
            piece = msgspec.structs.replace(body, units=part, name=label, idempotency_key=key)
            jobs.append(self._post_job(encoder.encode(piece)))
            offsets.append(first)
            first += len(part)
        return Batch(self, jobs, offsets)

    def job(self, job_id: int) -> JobStatus:
        return self._json("GET", f"/jobs/{job_id}", JobStatus)

    def jobs(self, state: str | None = None, limit: int = 100) -> list[JobStatus]:
        query: dict[str, Any] = {"limit": limit}
        if state:
            query["state"] = state
        return self._json("GET", "/jobs", JobList, params=query).jobs

    def units(self, job_id: int, state: str | None = None, page: int = 500) -> Iterator[UnitInfo]:
        """Every unit of a job (optionally only those in one state), fetched page by page."""
        query: dict[str, Any] = {"limit": page}
        if state:
            query["state"] = state
        while True:
            got: UnitPage = self._json("GET", f"/jobs/{job_id}/units", UnitPage, params=query)
            yield from got.units
            if got.next_after is None or not got.units:
                return
            query["after"] = got.next_after

    def cancel(self, job_id: int) -> JobStatus:
        return self._json("POST", f"/jobs/{job_id}/cancel", JobStatus)

    def retry(self, job_id: int) -> JobStatus:
        """Put an ended job's failed units back to pending, each with a new replica budget."""
        return self._json("POST", f"/jobs/{job_id}/retry", JobStatus)

    def summary(self, job_id: int) -> JobSummary:
        """Wall time, reported GPU time, GFLOP, credit granted, replicas per unit."""
        return self._json("GET", f"/jobs/{job_id}/summary", JobSummary)

    def delete(self, job_id: int) -> None:
        """Retire a job; the coordinator frees blobs nothing else references."""
        self._request("DELETE", f"/jobs/{job_id}")
        # Blobs this client uploaded may be gone now: check again before relying on them.
        self._known.clear()

    # ---- waiting -----------------------------------------------------------------------

    def wait(
        self,
        job_id: int,
        *,
        progress: ProgressMode = True,
        timeout: float | None = DEFAULT_WAIT_S,
        check: bool = False,
        display: Shown | None = None,
    ) -> JobStatus:
        """Block until the job is done, failed or cancelled; return its last status.

        Follows the job's event stream, showing progress on stderr where the caller waits
        (client/progress.py: rich's bars on a terminal, a widget in a Jupyter notebook, a line
        per interval into a file or a pipe; ``progress="always"``: the one-line bar; False:
        nothing; ``display``: one shared by several waits). Falls back to polling when the
        stream drops. Raises JobStalled when the coordinator reports the job cannot progress,
        TimeoutError after ``timeout`` seconds (None: no limit), and with ``check`` JobFailed
        naming the failed units' errors when the job failed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = display if display is not None else open_display(progress, sys.stderr)
        status: JobStatus | None = None
        try:
            try:
                status = self._follow(job_id, bar, deadline)
                if status is None:
                    status = self._poll(job_id, bar, deadline)
            except JobStalled as e:
                status = e.status
                raise
            except TimeoutError:
                if timeout is None:
                    raise
                raise TimeoutError(
                    f"job {job_id} did not finish within {timeout:g} s; it keeps running: wait "
                    f"again, or pass a larger timeout (None: no limit)"
                ) from None
        finally:
            if bar is not None and display is None:
                bar.close(status)
            elif bar is not None and status is not None:
                bar.update(status, force=True)
        if check and status.state == "failed":
            errors = [
                (u.index, u.error or "no error recorded")
                for u, _ in zip(self.units(job_id, "failed"), range(SHOWN_FAILURES), strict=False)
            ]
            raise JobFailed(status, errors)
        return status

    def _follow(self, job_id: int, bar: Shown | None, deadline: float | None) -> JobStatus | None:
        """The final status from the event stream, or None when the stream ended early."""
        read = self.timeout if deadline is None else max(min(self.timeout, _left(deadline)), 0.1)
        timeout = httpx.Timeout(self.timeout, read=read)
        path = f"/api/v1/jobs/{job_id}/events"
        try:
            with self._http.stream("GET", path, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _problem(response)
                return self._events(job_id, response.iter_lines(), bar, deadline)
        except httpx.ConnectError:
            raise
        except httpx.TransportError:
            return None

    def _events(
        self,
        job_id: int,
        lines: Iterable[str],
        bar: Shown | None,
        deadline: float | None,
    ) -> JobStatus | None:
        for event, data in iter_sse(lines):
            status = _status_or_none(data)
            if event == "end":
                return status if status is not None else self.job(job_id)
            if event == "progress" and status is not None and _ended(status, bar):
                return status
            if deadline is not None and _left(deadline) <= 0:
                raise TimeoutError(f"job {job_id} did not finish in time")
        return None

    def _poll(self, job_id: int, bar: Shown | None, deadline: float | None) -> JobStatus:
        failures = 0
        while True:
            try:
                status = self.job(job_id)
                failures = 0
            except httpx.TransportError:
                failures += 1
                if failures > POLL_RETRIES:
                    raise
            else:
                if _ended(status, bar):
                    return status
            if deadline is not None and _left(deadline) <= 0:
                raise TimeoutError(f"job {job_id} did not finish in time")
            pause = POLL_INTERVAL_S if deadline is None else min(POLL_INTERVAL_S, _left(deadline))
            time.sleep(max(pause, 0.0))

    # ---- results -----------------------------------------------------------------------

    def iter_results(self, job_id: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(unit index, outputs) for each validated unit, in index order, as they stream."""
        after: int | None = None
        for attempt in range(3):
            query = {} if after is None else {"after": after}
            try:
                with self._http.stream(
                    "GET", f"/api/v1/jobs/{job_id}/results", params=query
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _problem(response)
                    for line in response.iter_lines():
                        if not line.strip():
                            continue
                        item = msgspec.json.decode(line, type=UnitResultLine)
                        yield item.index, {n: self.array(o) for n, o in item.outputs.items()}
                        after = item.index
                return
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # The stream broke: resume after the last unit received.
                if attempt == 2:
                    raise

    def results(self, job_id: int) -> dict[int, dict[str, np.ndarray]]:
        """Every validated unit's outputs: ``{unit index: {output name: array}}``."""
        return dict(self.iter_results(job_id))

    # ---- models and embeddings ---------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return self._json("GET", "/models", ModelList).models

    def import_model(self, path: str | Path, *, name: str | None = None) -> ModelImported:
        """Register a model directory, zip or wheel (operators): its tokenizer.json and float32
        weights are uploaded as blobs (skipped when the coordinator has them), then checked."""
        files = read_model(path)
        tokenizer = self.upload(np.frombuffer(files.tokenizer, dtype=np.uint8))
        tensors = {key: self.upload(array) for key, array in files.tensors.items()}
        body = ModelImport(
            name=name or files.name,
            config=files.config,
            modules=files.modules,
            pooling=files.pooling,
            tokenizer=tokenizer,
            tensors=tensors,
            sentence_bert=files.sentence_bert,
        )
        return self._json("POST", "/models", ModelImported, body)

    def submit_embeddings(
        self,
        texts: Iterable[str],
        *,
        model: str,
        name: str = "",
        policy: Mapping[str, Any] | None = None,
    ) -> EmbedJob:
        """An embedding job (see ``embed``); ``EmbedJob.truncated`` counts the texts cut."""
        body = EmbedRequest(model=model, texts=list(texts), name=name, policy=dict(policy or {}))
        return self._json("POST", "/embeddings", EmbedJob, body)

    def embeddings(self, job_id: int) -> np.ndarray:
        """An embedding job's (texts, dims) float32 array, in the order the texts were given."""
        layout = self._json("GET", f"/embeddings/{job_id}", EmbedLayout)
        return assemble(layout, self.results(job_id))

    def embed(
        self,
        texts: Iterable[str],
        *,
        model: str,
        name: str = "",
        policy: Mapping[str, Any] | None = None,
        progress: ProgressMode = True,
        timeout: float | None = DEFAULT_WAIT_S,
    ) -> np.ndarray:
        """Embed texts with a registered model on the network's GPUs: an (n, dims) float32
        array, row i for texts[i], each row L2-normalised. Waits with the progress display of
        ``wait``; raises JobFailed, JobStalled or TimeoutError as it does. Texts over the
        model's max tokens are truncated as sentence-transformers does, with a TruncatedTexts
        warning that says how many."""
        job = self.submit_embeddings(texts, model=model, name=name, policy=policy)
        note = truncation_note(job)
        if note:
            warnings.warn(note, TruncatedTexts, stacklevel=2)
        self.wait(job.job.id, progress=progress, timeout=timeout, check=True)
        return self.embeddings(job.job.id)


class Batch:
    """A job submitted as several (``Client.submit(split=True)``): its parts in input order,
    each part's first unit index among all of them, and waits and results over all."""

    def __init__(self, client: Client, jobs: list[JobStatus], offsets: list[int]) -> None:
        self.client = client
        self.jobs = jobs
        self.offsets = offsets

    @property
    def ids(self) -> list[int]:
        return [job.id for job in self.jobs]

    @property
    def units(self) -> int:
        return sum(job.units for job in self.jobs)

    def wait(
        self,
        *,
        progress: ProgressMode = True,
        timeout: float | None = DEFAULT_WAIT_S,
        check: bool = False,
    ) -> list[JobStatus]:
        """Waits for every part (one progress display, a row per part); their last statuses."""
        deadline = None if timeout is None else time.monotonic() + timeout
        display = open_display(progress, sys.stderr)
        done: list[JobStatus] = []
        try:
            for job in self.jobs:
                left = None if deadline is None else max(_left(deadline), 0.001)
                done.append(self.client.wait(job.id, timeout=left, check=check, display=display))
        finally:
            if display is not None:
                display.close()
        self.jobs = done
        return done

    def iter_results(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(unit index among all the parts, outputs), in that order."""
        for job, first in zip(self.jobs, self.offsets, strict=True):
            for index, outputs in self.client.iter_results(job.id):
                yield first + index, outputs

    def results(self) -> dict[int, dict[str, np.ndarray]]:
        return dict(self.iter_results())


def _policy(policy: Policy | Mapping[str, Any] | None) -> Policy:
    if policy is None:
        return Policy()
    if isinstance(policy, Policy):
        return policy
    return msgspec.convert(dict(policy), Policy)


def _status_or_none(data: str) -> JobStatus | None:
    try:
        return msgspec.json.decode(data, type=JobStatus)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _check_digest(data: bytes, digest: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise TabgridError(502, "Blob digest mismatch", f"expected {digest}, got {actual}")


def _ended(status: JobStatus, bar: Shown | None) -> bool:
    """Shows a status seen while waiting; True once the job ended. A stalled job raises."""
    if bar is not None:
        bar.update(status)
    if status.state in TERMINAL_STATES:
        return True
    if status.stalled:
        raise JobStalled(status)
    return False


def _left(deadline: float) -> float:
    return deadline - time.monotonic()
