"""Misbehaving workers for tests: the real worker code with one step replaced.

python -m integration.rogue saboteur URL   # returns wrong outputs (all saboteurs agree)
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
    cls = {"saboteur": Saboteur, "stalled": Stalled}[kind]
    asyncio.run(cls(url, concurrency=2, name=kind).run())


if __name__ == "__main__":
    main()
