"""Trust's statements that the console reads: addresses holding many worker ids."""

from __future__ import annotations

from pathlib import Path

from tabgrid.protocol import Hello
from tabgrid.store import bans, open_store, trust, workers


def test_an_address_with_many_ids_is_listed_with_how_many_were_banned(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    try:
        _check(store)
    finally:
        store.close()  # an unclosed connection fails a later test when it is collected


def _check(store) -> None:  # type: ignore[no-untyped-def]
    ids = [store.tx(workers.register, Hello(kind="native"), "10.0.0.9", 100.0)[0] for _ in range(3)]
    for _ in range(2):
        store.tx(workers.register, Hello(kind="native"), "10.0.0.7", 100.0)
    store.tx(workers.register, Hello(kind="native"), "10.0.0.5", 10.0)  # seen before the window
    store.tx(bans.ban, ids[0], "failed a spot-check", 100.0)
    assert store.tx(trust.addresses_with_many_ids, 50.0) == [
        {"addr": "10.0.0.9", "ids": 3, "banned": 1}
    ]
    assert store.tx(trust.addresses_with_many_ids, 50.0, 2)[1] == {
        "addr": "10.0.0.7",
        "ids": 2,
        "banned": 0,
    }
