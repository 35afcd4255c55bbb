"""A hostile worker for tests: for a while, it says hello and sends results no honest worker
would send, reconnecting whenever the coordinator cuts it off.

python -m integration.attacker URL SECONDS   # prints one JSON line: what it sent, why it was cut
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

import websockets

DIGEST = "0" * 64


def _output(shape: list[int], dtype: str = "uint8") -> dict:
    return {"digest": DIGEST, "dtype": dtype, "shape": shape}


def hostile_results(lease: int) -> list[dict]:
    """One of each kind: out of range, wrongly typed, oversized, and well-formed lies."""
    return [
        {"lease": 2**63},  # past a 64-bit id
        {"lease": 2**70, "error": "x"},
        {"lease": -1, "error": "x"},
        {"lease": lease, "outputs": {"o": _output([1] * 65)}},  # more dims than numpy takes
        {"lease": lease, "outputs": {"o": _output([2**62, 2**62])}},
        {"lease": "seven", "error": 3},  # wrongly typed
        {"lease": lease, "outputs": {"o": {"digest": 5}}},
        {"lease": lease, "elapsed_ms": -5},
        {"lease": lease, "elapsed_ms": 1e300},
        {"lease": lease, "error": "e" * 100_000},  # oversized text
        {"lease": lease, "outputs": {f"o{i}": _output([32]) for i in range(100)}},
        {"lease": lease, "outputs": {"o": _output([32]) | {"data": "AAAA"}}},  # a lie: digest
        {"lease": lease},  # no outputs, no error: a well-formed empty answer
    ]


async def attack(url: str, seconds: float) -> dict:
    ws_url = url.replace("http", "ws", 1) + "/api/v1/worker"
    sent, closes = 0, []
    end = time.monotonic() + seconds
    kinds = itertools.cycle(range(len(hostile_results(1))))
    lease = 1
    while time.monotonic() < end:
        try:
            async with websockets.connect(ws_url, max_size=None) as ws:
                await ws.send(json.dumps({"type": "hello", "kind": "native", "name": "attacker"}))
                await ws.recv()
                await ws.send(json.dumps({"type": "ready", "n": 4}))
                while time.monotonic() < end:
                    item = hostile_results(lease)[next(kinds)]
                    lease = lease % 200 + 1  # in range: some name leases others hold
                    frame = {"type": "result", "results": [item]}
                    await ws.send(json.dumps(frame, allow_nan=True))
                    sent += 1
                    await asyncio.sleep(0.002)
        except websockets.ConnectionClosed as e:
            closes.append(e.rcvd.reason if e.rcvd else "")
        except OSError as e:
            closes.append(f"connect failed: {e}")
            await asyncio.sleep(0.05)
    return {"sent": sent, "closes": closes}


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    print(json.dumps(asyncio.run(attack(url, seconds))), flush=True)


if __name__ == "__main__":
    main()
