"""Misbehaving workers for tests: the real worker code with one step replaced.

python -m integration.rogue saboteur URL   # returns wrong outputs (all saboteurs agree)
python -m integration.rogue colluder URL   # after 40 results, wrong on every 5th unit index
python -m integration.rogue sleeper URL    # right for its first 60 results, then always wrong
python -m integration.rogue stalled URL    # takes leases and never answers
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

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
    }[kind]
    asyncio.run(cls(url, concurrency=2, name=kind).run())


if __name__ == "__main__":
    main()
