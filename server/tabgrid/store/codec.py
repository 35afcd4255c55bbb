"""JSON text columns, encoded and decoded with msgspec (decoders built once)."""

from __future__ import annotations

from typing import Any

import msgspec

from tabgrid.protocol import BlobRef, Output

_enc = msgspec.json.Encoder()
_inputs = msgspec.json.Decoder(dict[str, BlobRef])
_outputs = msgspec.json.Decoder(dict[str, Output])
_any = msgspec.json.Decoder()


def dumps(value: Any) -> str:
    return _enc.encode(value).decode()


def loads(text: str) -> Any:
    return _any.decode(text)


def loads_inputs(text: str) -> dict[str, BlobRef]:
    return _inputs.decode(text)


def loads_outputs(text: str) -> dict[str, Output]:
    return _outputs.decode(text)


def strip_data(outputs: dict[str, Output]) -> dict[str, Output]:
    """Outputs as stored: references only, the bytes live in the blob store."""
    return {k: msgspec.structs.replace(v, data=None) for k, v in outputs.items()}
