"""The commands people expect from Ray, Dask or Celery, through `main([...])` against a real
coordinator (uvicorn on a loopback port) with workers that speak the protocol by hand: units,
cancel, delete, retry, summary, `jobs JOB`, and results as one .npz or arrays that stack."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from protocol_worker import ProtocolWorker
from tabgrid.cli import commands as cli
from tabgrid.client.sdk import Client
from tabgrid.settings import Settings
from test_http_hardening import LiveServer


class Env:
    def __init__(self, server: LiveServer) -> None:
        self.server = server
        _, self.secret = server.store.create_token("submitter", "alice")
        self.client = Client(server.url, self.secret)
        self.a = ProtocolWorker(server.url, "a")
        self.b = ProtocolWorker(server.url, "b")

    def run(self, capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
        code = cli.main([*args, "--url", self.server.url, "--token", self.secret])
        out = capsys.readouterr()
        return code, out.out, out.err

    def submit(self, units: int, **policy: object) -> int:
        body = [{"params": {"i": i}} for i in range(units)]
        return self.client.submit("checksum", body, policy=policy).id

    def wait_for(self, job_id: int, state: str) -> None:
        deadline = time.monotonic() + 10
        while self.client.job(job_id).state != state:
            assert time.monotonic() < deadline, f"job {job_id} never became {state}"
            time.sleep(0.05)

    def compute(self, job_id: int, units: int, answer: Callable[[ProtocolWorker, dict], None]):  # type: ignore[no-untyped-def]
        """Each worker takes every unit and answers it with `answer(worker, lease)`."""
        for worker in (self.a, self.b):
            leases = worker.lease(units)
            assert len(leases) == units
            for lease in leases:
                answer(worker, lease)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings = Settings(
        db=f"sqlite:///{tmp_path / 't.db'}", data_dir=tmp_path, distinct_addresses=False
    )
    with LiveServer(settings) as live:
        e = Env(live)
        try:
            yield e
        finally:
            e.a.close()
            e.b.close()
            e.client.close()


def cells(table: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", row) for row in table.splitlines()]


def test_units_lists_state_replicas_and_which_workers_agreed(env: Env, capsys) -> None:  # type: ignore[no-untyped-def]
    job = env.submit(2)

    def answer(worker: ProtocolWorker, lease: dict) -> None:
        # Unit 1: the two workers disagree, so it waits for a third result.
        same = lease["index"] == 0 or worker is env.a
        worker.output(lease, b"\x07" if same else b"\x08")

    env.compute(job, 2, answer)
    deadline = time.monotonic() + 10
    while next(env.client.units(job, state="done"), None) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    code, out, err = env.run(capsys, "units", str(job))
    assert (code, err) == (0, "")
    a, b = env.a.id, env.b.id
    assert cells(out) == [
        ["INDEX", "STATE", "REPLICAS", "RESULTS", "WORKERS", "WAITING/ERROR"],
        ["0", "done", "2", "2", f"{a}:valid, {b}:valid", "-"],
        [
            "1",
            "validating",
            "2",
            "2",
            f"{a}:returned, {b}:returned",
            "2 result(s) in; waiting for 1 more from a different worker (quorum 2: results "
            "are accepted only when independent workers agree)",
        ],
    ]
    code, out, _ = env.run(capsys, "units", str(job), "--state", "done")
    assert [row[0] for row in cells(out)] == ["INDEX", "0"]
    assert env.run(capsys, "units", str(job), "--state", "failed") == (0, "no failed units\n", "")
    with pytest.raises(SystemExit):
        cli.main(["units", str(job), "--state", "finished"])
    assert "invalid choice: 'finished'" in capsys.readouterr().err


def test_cancel_then_delete(env: Env, capsys) -> None:  # type: ignore[no-untyped-def]
    job = env.submit(2)
    env.compute(job, 1, lambda worker, lease: worker.output(lease, b"\x01"))
    deadline = time.monotonic() + 10
    while env.client.job(job).counts.done < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert env.run(capsys, "cancel", str(job)) == (
        0,
        f"job {job} cancelled: 1 done, 0 failed, 1 cancelled of 2\n",
        "",
    )
    assert env.run(capsys, "delete", str(job)) == (
        0,
        f"job {job} deleted, with the blobs no other job uses\n",
        "",
    )
    assert env.run(capsys, "jobs", str(job)) == (
        1,
        "",
        f"error: Not Found (HTTP 404)\n  job {job} does not exist or belongs to someone else\n",
    )
    assert env.run(capsys, "cancel", str(job))[2] == (
        f"error: Not Found (HTTP 404)\n  job {job} does not exist or belongs to someone else\n"
    )


def test_retry_sends_failed_units_round_again(env: Env, capsys) -> None:  # type: ignore[no-untyped-def]
    job = env.submit(2, max_replicas=2)

    def answer(worker: ProtocolWorker, lease: dict) -> None:
        if lease["index"] == 1:
            worker.error(lease, "boom")
        else:
            worker.output(lease, b"\x00")

    env.compute(job, 2, answer)
    env.wait_for(job, "failed")
    code, out, _ = env.run(capsys, "units", str(job), "--state", "failed")
    assert cells(out)[1] == [
        "1",
        "failed",
        "2",
        "0",
        f"{env.a.id}:error, {env.b.id}:error",
        "every replica failed or was lost; last error: boom",
    ]
    assert env.run(capsys, "retry", str(job)) == (
        0,
        f"job {job} running again: 1 failed unit(s) back to pending, each with a new budget "
        "of 2 replicas\n",
        "",
    )
    env.compute(job, 1, lambda worker, lease: worker.output(lease, b"\x05"))
    env.wait_for(job, "done")
    code, out, err = env.run(capsys, "retry", str(job))
    assert (code, out) == (1, "")
    assert err == (
        f"error: Conflict (HTTP 409)\n  job {job} has no failed units to retry (it is done)\n"
    )


def test_jobs_job_and_summary_show_what_it_cost(env: Env, capsys) -> None:  # type: ignore[no-untyped-def]
    job = env.submit(2)
    env.compute(job, 2, lambda worker, lease: worker.output(lease, b"\x03", elapsed_ms=250))
    env.wait_for(job, "done")
    code, out, err = env.run(capsys, "jobs", str(job))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert cells(lines[0])[0] == ["ID", "NAME", "KERNEL", "STATE", "DONE/TOTAL", "RATE", "ETA"]
    assert cells(lines[1])[0][:1] == [str(job)]
    assert "checksum" in lines[1] and "done" in lines[1] and "2/2" in lines[1]
    summary = lines[2:]
    code, alone, _ = env.run(capsys, "summary", str(job))
    assert alone.splitlines() == summary
    assert summary[0] == f"job        {job} (done, 2 units)"
    assert re.fullmatch(r"wall time  \S+", summary[1]), summary[1]
    assert summary[2:] == [
        "GPU time   1.000 s reported by the workers",
        "work       0.000 GFLOP in validated units",
        "credit     0.000 GFLOP granted to the workers",
        "replicas   4 (2.00 per unit): 4 valid, 0 invalid, 0 errors, from 2 worker(s)",
    ]


def test_results_as_one_npz_or_arrays_that_stack(env: Env, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = env.submit(3)

    def answer(worker: ProtocolWorker, lease: dict) -> None:
        i = lease["index"]
        worker.output(lease, bytes([i, i + 10, i + 20, i + 30]), shape=[2, 2])

    env.compute(job, 3, answer)
    env.wait_for(job, "done")

    npz = tmp_path / "out" / "all.npz"
    assert env.run(capsys, "results", str(job), "-o", str(npz)) == (
        0,
        f"wrote 3 arrays for 3 validated units to {npz}\n",
        "",
    )
    with np.load(npz) as f:
        assert sorted(f.files) == ["0/y", "1/y", "2/y"]
        assert f["2/y"].tolist() == [[2, 12], [22, 32]]

    stacked = tmp_path / "stacked.npz"
    assert env.run(capsys, "results", str(job), "-o", str(stacked), "--concat") == (
        0,
        f"wrote 1 arrays (y uint8[6, 2]) of 3 units to {stacked}\n",
        "",
    )
    with np.load(stacked) as f:
        assert f.files == ["y"]
        assert f["y"].tolist() == [[0, 10], [20, 30], [1, 11], [21, 31], [2, 12], [22, 32]]

    folder = tmp_path / "joined"
    assert env.run(capsys, "results", str(job), "-o", str(folder), "--concat")[0] == 0
    assert np.load(folder / "y.npy").shape == (6, 2)

    per_unit = tmp_path / "units"
    assert env.run(capsys, "results", str(job), "-o", str(per_unit)) == (
        0,
        f"wrote 3 files for 3 validated units to {per_unit}\n",
        "",
    )
    assert sorted(p.name for p in per_unit.iterdir()) == ["0_y.npy", "1_y.npy", "2_y.npy"]


def test_concat_refuses_shapes_that_do_not_stack(env: Env, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = env.submit(2)

    def answer(worker: ProtocolWorker, lease: dict) -> None:
        shape = [2, 2] if lease["index"] == 0 else [1, 4]
        worker.output(lease, b"\x01\x02\x03\x04", shape=shape)

    env.compute(job, 2, answer)
    env.wait_for(job, "done")
    out = tmp_path / "x.npz"
    assert env.run(capsys, "results", str(job), "-o", str(out), "--concat") == (
        1,
        "",
        "error: --concat: output 'y' does not stack: unit 0 gives uint8[2, 2], unit 1 gives "
        "uint8[1, 4] (dtype and every axis but the first must match); write the units one by "
        "one without --concat\n",
    )
    assert not out.exists()


def test_concat_refuses_a_job_with_units_missing(env: Env, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = env.submit(3, max_replicas=2)

    def answer(worker: ProtocolWorker, lease: dict) -> None:
        if lease["index"] == 1:
            worker.error(lease, "boom")
        else:
            worker.output(lease, b"\x09")

    env.compute(job, 3, answer)
    env.wait_for(job, "failed")
    out = tmp_path / "x.npz"
    assert env.run(capsys, "results", str(job), "-o", str(out), "--concat") == (
        1,
        "",
        "error: --concat needs every unit's result, but 1 of 3 units are not validated "
        "(units 1); see them with: tabgrid units JOB --state failed. Without --concat the "
        "validated units are written one by one\n",
    )
    assert not out.exists()
    assert env.run(capsys, "results", str(job), "-o", str(out))[1] == (
        f"wrote 2 arrays for 2 validated units to {out}\n"
    )
