"""A worker that speaks the websocket protocol by hand, for tests that need units computed,
failed or agreed on exactly as they say: hello, ready, results (inline outputs or errors)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from websockets.sync.client import connect


class ProtocolWorker:
    def __init__(self, url: str, name: str = "t") -> None:
        self.ws = connect(url.replace("http", "ws", 1) + "/api/v1/worker").__enter__()
        self.ws.send(json.dumps({"type": "hello", "kind": "native", "name": name}))
        welcome = self.receive()
        assert welcome["type"] == "welcome", welcome
        self.id: str = welcome["worker_id"]
        self.idle_reason = ""

    def receive(self) -> dict[str, Any]:
        return json.loads(self.ws.recv(timeout=10))

    def lease(self, n: int = 1) -> list[dict[str, Any]]:
        """Asks for up to n units; returns the leases that come (the job messages skipped),
        or [] when the coordinator answers idle (its reason kept in idle_reason)."""
        self.ws.send(json.dumps({"type": "ready", "n": n}))
        while True:
            message = self.receive()
            if message["type"] == "lease":
                return message["leases"]
            if message["type"] == "idle":
                self.idle_reason = message["reason"]
                return []
            assert message["type"] in ("job", "stats"), message

    def output(
        self,
        lease: dict[str, Any],
        data: bytes,
        elapsed_ms: float = 5.0,
        shape: list[int] | None = None,
    ) -> None:
        """One uint8 output named y (its shape [len(data)] unless given)."""
        out = {
            "digest": hashlib.sha256(data).hexdigest(),
            "dtype": "uint8",
            "shape": [len(data)] if shape is None else shape,
            "data": base64.b64encode(data).decode(),
        }
        item = {"lease": lease["lease"], "outputs": {"y": out}, "elapsed_ms": elapsed_ms}
        self._send(item)

    def error(self, lease: dict[str, Any], message: str) -> None:
        self._send({"lease": lease["lease"], "error": message, "elapsed_ms": 1.0})

    def _send(self, item: dict[str, Any]) -> None:
        self.ws.send(json.dumps({"type": "result", "results": [item]}))
        while (answer := self.receive())["type"] != "stats":
            assert answer["type"] in ("job", "lease", "idle"), answer

    def close(self) -> None:
        self.ws.close()
