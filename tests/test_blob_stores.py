"""The two blob stores behind one interface: files on this host, parts in the database."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from tabgrid.app import create_app
from tabgrid.blobs import BlobError, BlobStore, Corrupt, FileBlobStore, Large
from tabgrid.settings import MiB, Settings
from tabgrid.store import Store
from tabgrid.store.blob_parts import PART, PARTS, ROWS, DatabaseBlobStore

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BIG = os.urandom(2 * PART + 12345)  # three parts, the last a short one


@pytest.fixture(params=["files", "db"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "files":
        yield FileBlobStore(tmp_path / "blobs")
        return
    url = request.getfixturevalue("pg_url")
    Store(url).close()  # the schema
    store = DatabaseBlobStore(url, tmp_path / "tmp")
    yield store
    store.close()


def damage(blobs: BlobStore, digest: str) -> None:
    """One byte flipped where the store keeps the blob."""
    if isinstance(blobs, FileBlobStore):
        path = blobs.path(digest)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(data)
        return
    assert isinstance(blobs, DatabaseBlobStore)
    with blobs.engine.begin() as conn:
        where = (PARTS.c.digest == digest) & (PARTS.c.seq == 1)
        data = bytearray(conn.execute(select(PARTS.c.data).where(where)).scalar_one())
        data[7] ^= 1
        conn.execute(update(PARTS).where(where).values(data=bytes(data)))


async def chunks_of(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def receive(blobs: BlobStore, data: bytes, digest: str | None = None) -> bool:
    async with blobs.receive(chunks_of(data), digest or sha(data)) as incoming:
        return await asyncio.to_thread(blobs.land, incoming)


async def stream(blobs: BlobStore, large: Large) -> list[bytes]:
    return [piece async for piece in blobs.stream_checked(large)]


def test_put_has_size_read_and_one_readers_view(blobs: BlobStore) -> None:
    small = b"seven bytes"
    digest = blobs.put(small)
    assert digest == sha(small) and blobs.put(small, digest) == digest, "again: no change"
    assert blobs.has(digest) and blobs.size(digest) == len(small) and blobs.read(digest) == small
    assert blobs.open_checked(digest, 1024) == small
    empty = blobs.put(b"")
    assert blobs.read(empty) == b"" and blobs.check(empty) == 0
    view = blobs.only([empty])
    assert not view.has(digest) and view.has(empty)
    with pytest.raises(FileNotFoundError):
        view.size(digest)
    with pytest.raises(BlobError, match="hash to"):
        blobs.put(small, sha(b"other"))
    missing = sha(b"never stored")
    assert not blobs.has(missing) and blobs.open_checked(missing, 1024) is None
    assert blobs.check(missing) is None
    with pytest.raises(BlobError, match="not stored"):
        blobs.read(missing)


def test_a_large_blob_streams_in_bounded_pieces_and_is_checked(blobs: BlobStore) -> None:
    digest = sha(BIG)
    assert asyncio.run(receive(blobs, BIG)) is True
    assert asyncio.run(receive(blobs, BIG)) is False, "already there"
    found = blobs.open_checked(digest, 4 * MiB)
    assert found == Large(digest, len(BIG))
    pieces = asyncio.run(stream(blobs, found))
    assert b"".join(pieces) == BIG
    assert max(map(len, pieces)) <= PART, "no piece is more than a part"
    assert blobs.check(digest) == len(BIG)


def test_bytes_that_do_not_hash_to_the_url_never_land(blobs: BlobStore) -> None:
    with pytest.raises(BlobError, match="hash to"):
        asyncio.run(receive(blobs, BIG, sha(b"something else")))
    assert not blobs.has(sha(BIG)) and not blobs.has(sha(b"something else"))


def test_a_damaged_blob_is_never_sent_whole_and_the_next_upload_restores_it(
    blobs: BlobStore,
) -> None:
    digest = sha(BIG)
    asyncio.run(receive(blobs, BIG))
    damage(blobs, digest)
    pieces: list[bytes] = []

    async def read_all() -> None:
        async for piece in blobs.stream_checked(Large(digest, len(BIG))):
            pieces.append(piece)

    with pytest.raises(Corrupt):
        asyncio.run(read_all())
    assert sum(map(len, pieces)) < len(BIG), "the last piece was held back"
    assert not blobs.has(digest) and blobs.found_corrupt(digest) is not None
    asyncio.run(receive(blobs, BIG))
    damage(blobs, digest)
    with pytest.raises(Corrupt):
        blobs.check(digest)
    assert asyncio.run(receive(blobs, BIG)) is True
    assert blobs.read(digest) == BIG and blobs.found_corrupt(digest) is None


def test_a_freed_blob_goes_unless_an_upload_is_landing_it(blobs: BlobStore) -> None:
    digest = blobs.put(b"freed")
    with blobs.landing(digest):
        asyncio.run(blobs.delete_freed(digest))
        assert blobs.has(digest)
    asyncio.run(blobs.delete_freed(digest))
    assert not blobs.has(digest)


def test_in_the_database_a_blob_registered_again_elsewhere_is_not_freed(
    pg_url: str, tmp_path: Path
) -> None:
    """Coordinator B frees a blob while an upload of it through coordinator A registers its row
    and lands: B's removal, under the digest's lock, sees the row and keeps the bytes."""
    Store(pg_url).close()
    a = DatabaseBlobStore(pg_url, tmp_path / "a")
    b = DatabaseBlobStore(pg_url, tmp_path / "b")
    try:
        digest = a.put(b"wanted again")
        with a.engine.begin() as conn:
            conn.execute(insert(ROWS).values(digest=digest, size=12, created_at=0.0))
        asyncio.run(b.delete_freed(digest))
        assert b.read(digest) == b"wanted again"
        with a.engine.begin() as conn:
            conn.execute(ROWS.delete())
        asyncio.run(b.delete_freed(digest))
        assert not a.has(digest)
        with a.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(PARTS)).scalar() == 0
    finally:
        a.close()
        b.close()


def test_blobs_in_the_database_need_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        Settings(db=f"sqlite:///{tmp_path}/t.db", blobs="db")
    with pytest.raises(ValueError, match="PostgreSQL"):
        DatabaseBlobStore(f"sqlite:///{tmp_path}/t.db", tmp_path)
    with pytest.raises(ValueError, match="files .* or db"):
        Settings(blobs="s3")


# ---- two coordinators, one database ----------------------------------------------------------


def _app(url: str, data: Path, **settings: Any) -> TestClient:
    config = Settings(db=url, data_dir=data, blobs="db", distinct_addresses=False, **settings)
    client = TestClient(create_app(config), raise_server_exceptions=False)
    client.__enter__()
    return client


def test_a_blob_uploaded_through_one_app_is_read_through_another(
    pg_url: str, tmp_path: Path
) -> None:
    a, b = _app(pg_url, tmp_path / "a"), _app(pg_url, tmp_path / "b")
    try:
        store: Any = a.app.state.services.store  # type: ignore[attr-defined]
        _, token = store.create_token("submitter", "alice")
        alice = {"authorization": f"Bearer {token}"}
        digest = sha(BIG)
        put = a.put(f"/api/v1/blobs/{digest}", content=BIG, headers=alice)
        assert put.status_code == 201, put.text
        got = b.get(f"/api/v1/blobs/{digest}", headers=alice)
        assert got.status_code == 200 and got.content == BIG
        assert int(got.headers["content-length"]) == len(BIG)
        head = b.head(f"/api/v1/blobs/{digest}", headers=alice)
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(BIG)
        assert not list((tmp_path / "a").rglob("*" + digest)), "no file of it on either host"
        assert not list((tmp_path / "a" / "tmp").iterdir())
        small = b"\x00" * 1000
        assert b.put(f"/api/v1/blobs/{sha(small)}", content=small, headers=alice).status_code == 201
        assert a.get(f"/api/v1/blobs/{sha(small)}", headers=alice).content == small
    finally:
        b.__exit__(None, None, None)
        a.__exit__(None, None, None)


def test_an_upload_no_job_used_leaves_the_database_when_it_expires(
    pg_url: str, tmp_path: Path
) -> None:
    app = _app(pg_url, tmp_path, upload_ttl_s=0.3, blob_sweep_interval_s=0.1)
    try:
        store: Any = app.app.state.services.store  # type: ignore[attr-defined]
        _, token = store.create_token("submitter", "alice")
        alice = {"authorization": f"Bearer {token}"}
        digest = sha(BIG)
        assert app.put(f"/api/v1/blobs/{digest}", content=BIG, headers=alice).status_code == 201
        blobs: Any = app.app.state.services.blobs  # type: ignore[attr-defined]
        assert blobs.has(digest)
        deadline = time.monotonic() + 10
        while blobs.has(digest):
            assert time.monotonic() < deadline, "the blob sweeper left it"
            time.sleep(0.05)
        with blobs.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(PARTS)).scalar() == 0
        assert app.get(f"/api/v1/blobs/{digest}", headers=alice).status_code == 404
    finally:
        app.__exit__(None, None, None)
