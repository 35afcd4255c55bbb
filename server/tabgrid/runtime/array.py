"""A typed n-dimensional array as plain bytes: what kernels receive and return."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

ITEMSIZE: dict[str, int] = {
    "float32": 4,
    "int32": 4,
    "uint32": 4,
    "uint8": 1,
    "float64": 8,
    "int64": 8,
}


@dataclass(frozen=True, slots=True)
class Array:
    """C-order, little-endian data with its dtype and shape; checked on construction.

    ``digest`` is the sha256 of ``data`` when a worker got it as a verified blob: kernels
    pass it to ``Gpu.resident`` to keep the array on the device across units. It plays no
    part in equality, which is the data's.
    """

    dtype: str
    shape: tuple[int, ...]
    data: bytes
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        itemsize = ITEMSIZE.get(self.dtype)
        if itemsize is None:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {sorted(ITEMSIZE)}")
        if any(not isinstance(n, int) or n < 0 for n in self.shape):
            raise ValueError(f"shape {self.shape!r} must be non-negative ints")
        expected = prod(self.shape) * itemsize
        if len(self.data) != expected:
            raise ValueError(
                f"{self.dtype} array of shape {self.shape} needs {expected} bytes, "
                f"got {len(self.data)}"
            )

    @property
    def size(self) -> int:
        """Number of elements."""
        return prod(self.shape)
