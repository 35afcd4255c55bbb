"""Blob security against a real coordinator process, real native workers and real sockets."""

from __future__ import annotations

import hashlib
import json

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from tabgrid.client.tiling import matmul_units

pytestmark = pytest.mark.integration


def worker_credentials(url: str) -> dict[str, str]:
    """What anyone gets by saying hello on the worker websocket."""
    with connect(url.replace("http", "ws", 1) + "/api/v1/worker") as ws:
        ws.send(json.dumps({"type": "hello", "kind": "native", "name": "outsider"}))
        welcome = json.loads(ws.recv(timeout=10))
    return {"authorization": f"Worker {welcome['worker_id']}:{welcome['secret']}"}


def test_workers_fetch_inputs_and_upload_outputs_that_only_owners_read(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.worker()
    cluster.worker()
    rng = np.random.default_rng(11)
    a = rng.standard_normal((288, 48), dtype=np.float32)
    b = rng.standard_normal((48, 144), dtype=np.float32)
    # Each unit's c is 144 x 144 float32 = 81 KiB, over the 64 KiB that may travel inline: the
    # workers read their inputs and store their outputs with their own credentials.
    units, assemble = matmul_units(a, b, 144)
    policy = {"quorum": 2, "compare": "allclose", "rtol": 1e-4, "atol": 1e-4}
    with cluster.client() as client:
        job = client.submit("matmul", units, policy=policy)
        assert client.wait(job.id, progress=False, timeout=300).state == "done"
        np.testing.assert_allclose(assemble(client.results(job.id)), a @ b, rtol=1e-4, atol=1e-4)
        done = list(client.units(job.id))
    outputs = [u.outputs["c"] for u in done if u.outputs]
    assert len(outputs) == 2 and all(o.data is None for o in outputs)
    first_input = np.ascontiguousarray(units[0]["inputs"]["a"], dtype="<f4").tobytes()

    outsider = worker_credentials(cluster.url)
    with httpx.Client(base_url=cluster.url + "/api/v1/blobs/", timeout=30) as http:
        for digest in [o.digest for o in outputs] + [hashlib.sha256(first_input).hexdigest()]:
            assert http.get(digest).status_code == 401
            r = http.get(digest, headers=outsider)
            assert r.status_code == 403 and "holds no lease" in r.json()["detail"]
        junk = b"\0" * (1 << 20)
        r = http.put(hashlib.sha256(junk).hexdigest(), content=junk, headers=outsider)
        assert r.status_code == 403


def test_a_large_blob_damaged_on_disk_breaks_off_and_is_removed(cluster) -> None:  # type: ignore[no-untyped-def]
    data = np.random.default_rng(5).standard_normal(6 << 18, dtype=np.float32)  # 6 MiB
    with cluster.client() as client:
        ref = client.upload(data)
    path = cluster.data / "blobs" / ref.digest[:2] / ref.digest
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 3] ^= 0x10
    path.write_bytes(damaged)
    bearer = {"authorization": f"Bearer {cluster.token}"}
    with httpx.Client(base_url=cluster.url + "/api/v1/blobs/", timeout=30) as http:
        # The whole body never arrives: the connection ends short of its Content-Length.
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(ref.digest, headers=bearer)
        r = http.get(ref.digest, headers=bearer)
        assert r.status_code == 404 and "damaged on disk" in r.json()["detail"]
    assert not path.exists()
