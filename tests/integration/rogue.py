"""Misbehaving workers for tests: the real worker code with one step replaced.

python -m integration.rogue saboteur URL   # returns wrong outputs (all saboteurs agree)
python -m integration.rogue colluder URL   # after 40 results, wrong on every 5th unit index
python -m integration.rogue sleeper URL    # right for its first 60 results, then always wrong
python -m integration.rogue stalled URL    # takes leases and never answers
python -m integration.rogue gated URL FILE # computes once FILE exists; logs every unit and
                                           # every result waiting for acknowledgement
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from tabgrid.runtime.array import Array
from tabgrid.worker.session import Worker


class Saboteur(Worker):
    async def _compute(self, item):  # type: ignore[no-untyped-def]
        outputs, ms = await super()._compute(item)
        return {name: corrupt(a) for name, a in outputs.items()}, ms


class Colluder(Worker):
    """Right for its first TRUSTED results, so that it earns trust and helps accept units; then
    wrong, as every other colluder, on the same units (by index)."""

    TRUSTED = 40
    done = 0

    async def _compute(self, item):  # type: ignore[no-untyped-def]
        outputs, ms = await super()._compute(item)
        self.done += 1
        if self.done > self.TRUSTED and item.index % 5 == 2:
            outputs = {name: corrupt(a) for name, a in outputs.items()}
        return outputs, ms


class Sleeper(Worker):
    """Behaves for its first SLEEP results, then defects."""

    SLEEP = 60
    done = 0

    async def _compute(self, item):  # type: ignore[no-untyped-def]
        outputs, ms = await super()._compute(item)
        self.done += 1
        if self.done > self.SLEEP:
            outputs = {name: corrupt(a) for name, a in outputs.items()}
        return outputs, ms


class Stalled(Worker):
    async def _compute(self, item):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()


class Gated(Worker):
    """The honest worker, holding each unit until the gate file exists, and saying what it
    computed and how many of its results wait for an acknowledgement."""

    gate = Path("gate")

    async def _compute(self, item):  # type: ignore[no-untyped-def]
        while not self.gate.exists():
            await asyncio.sleep(0.05)
        self.log(f"computed unit {item.unit} (lease {item.lease})")
        return await super()._compute(item)

    def _keep(self, items):  # type: ignore[no-untyped-def]
        super()._keep(items)
        self.log(f"{len(self.unacked)} results wait for acknowledgement")


def corrupt(a: Array) -> Array:
    """The same wrong answer every time, so that two saboteurs agree with each other."""
    data = bytearray(a.data)
    if data:
        data[0] ^= 0x40
    return replace(a, data=bytes(data))


def main() -> None:
    kind, url = sys.argv[1], sys.argv[2]
    cls = {
        "saboteur": Saboteur,
        "colluder": Colluder,
        "sleeper": Sleeper,
        "stalled": Stalled,
        "gated": Gated,
    }[kind]
    if cls is Gated:
        Gated.gate = Path(sys.argv[3])
    asyncio.run(cls(url, concurrency=2, name=kind).run())


if __name__ == "__main__":
    main()
