"""Finished units of the native worker, and their packing into Result messages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from tabgrid.protocol import Output, ResultItem, encoder
from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import error_kind

MAX_ERROR_CHARS = 4000
# Room for the message's own JSON around the items.
ENVELOPE = 64


@dataclass(slots=True)
class Finished:
    """A unit's outcome, kept until a Result carrying it was handed to the connection.

    Outputs larger than the coordinator's ``max_inline`` must be stored as blobs first;
    ``stored`` names those that are.
    """

    lease: int
    worker_id: str
    outputs: dict[str, Array] | None = None
    error: str | None = None
    elapsed_ms: float = 0.0
    digests: dict[str, str] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)
    # Set when the item alone does not fit in a message: then every output goes as a blob.
    blobs_only: bool = False
    error_kind: str = ""  # runtime.errors.DETERMINISTIC for a shader's compile error

    @classmethod
    def ok(cls, lease: int, worker_id: str, outputs: dict[str, Array], ms: float) -> Finished:
        digests = {name: hashlib.sha256(a.data).hexdigest() for name, a in outputs.items()}
        return cls(lease, worker_id, outputs, None, ms, digests)

    @classmethod
    def failed(cls, lease: int, worker_id: str, error: BaseException, ms: float) -> Finished:
        text = f"{type(error).__name__}: {error}"
        if len(text) > MAX_ERROR_CHARS:
            text = text[: MAX_ERROR_CHARS - 3] + "..."
        return cls(lease, worker_id, None, text, ms, error_kind=error_kind(error))

    def unstored(self, max_inline: int) -> list[str]:
        """Names of outputs that must be uploaded before this result can be sent."""
        limit = -1 if self.blobs_only else max_inline
        return [
            name
            for name, a in (self.outputs or {}).items()
            if len(a.data) > limit and name not in self.stored
        ]

    def item(self, max_inline: int) -> ResultItem:
        limit = -1 if self.blobs_only else max_inline
        outputs = None
        if self.outputs is not None:
            outputs = {
                name: Output(
                    digest=self.digests[name],
                    dtype=a.dtype,  # type: ignore[arg-type]
                    shape=list(a.shape),
                    data=a.data if len(a.data) <= limit and name not in self.stored else None,
                )
                for name, a in self.outputs.items()
            }
        return ResultItem(
            self.lease,
            outputs,
            self.error,
            round(self.elapsed_ms, 3),
            error_kind=self.error_kind,  # type: ignore[arg-type]
        )


@dataclass(slots=True)
class Packed:
    message: bytes
    positions: list[int]


def pack(
    items: list[ResultItem], max_message: int, max_items: int
) -> tuple[list[Packed], list[int]]:
    """Result messages of at most ``max_message`` bytes and ``max_items`` items carrying
    ``items`` in order.

    Returns each message with the positions of the items it carries, and the positions of
    items too large for any message.
    """
    packed: list[Packed] = []
    too_big: list[int] = []
    batch: list[bytes] = []
    positions: list[int] = []
    size = ENVELOPE
    for position, item in enumerate(items):
        encoded = encoder.encode(item)
        if len(encoded) + ENVELOPE > max_message:
            too_big.append(position)
            continue
        if batch and (size + len(encoded) + 1 > max_message or len(batch) >= max_items):
            packed.append(Packed(_message(batch), positions))
            batch, positions, size = [], [], ENVELOPE
        batch.append(encoded)
        positions.append(position)
        size += len(encoded) + 1
    if batch:
        packed.append(Packed(_message(batch), positions))
    return packed, too_big


def _message(encoded_items: list[bytes]) -> bytes:
    # Same JSON as encoding protocol.Result, without encoding each item twice.
    return b'{"type":"result","results":[' + b",".join(encoded_items) + b"]}"
