"""Device buffers kept across units and jobs, keyed by the digest of the bytes they hold.

Both GPU backends keep one ``ResidentCache``: a model's weights are uploaded to the device
once per worker, not once per unit. The bound is in bytes, least recently used out first.
A buffer handed to a unit is pinned until the unit releases it, and only unpinned buffers
are evicted, so eviction never destroys a buffer that a unit in flight still binds. When
everything is pinned the cache runs over its bound until units let go, rather than fail.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_RESIDENT_BYTES = 512 << 20  # MiniLM's weights are 91 MB; BERT-base's 440 MB


@dataclass(slots=True)
class _Entry:
    buffer: Any
    size: int
    users: int = 0


class ResidentCache:
    """Buffers by digest; ``destroy`` frees one on the device."""

    def __init__(self, max_bytes: int, destroy: Callable[[Any], None]) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._destroy = destroy
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.size = 0
        self.uploads = 0  # buffers added: what a test counts to see weights go up once

    def __contains__(self, digest: str) -> bool:
        return digest in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def fits(self, size: int) -> bool:
        return size <= self.max_bytes

    def take(self, digest: str) -> Any:
        """The buffer for ``digest``, pinned, or None when it is not resident."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        self._entries.move_to_end(digest)
        entry.users += 1
        return entry.buffer

    def add(self, digest: str, buffer: Any, size: int) -> None:
        """Keep ``buffer`` (just uploaded, pinned once for the caller) under ``digest``."""
        self.uploads += 1
        self._entries[digest] = _Entry(buffer, size, users=1)
        self.size += size
        self._evict()

    def give_back(self, digest: str, buffer: Any) -> bool:
        """Unpin ``buffer``; False when this cache does not know it (then the caller owns it)."""
        entry = self._entries.get(digest)
        if entry is None or entry.buffer is not buffer:
            return False
        entry.users = max(0, entry.users - 1)
        self._evict()
        return True

    def clear(self) -> None:
        """Forget everything, destroying nothing: the device these buffers lived on is gone."""
        self._entries.clear()
        self.size = 0

    def _evict(self) -> None:
        if self.size <= self.max_bytes:
            return
        for digest, entry in list(self._entries.items()):  # least recently used first
            if entry.users == 0:
                del self._entries[digest]
                self.size -= entry.size
                self._destroy(entry.buffer)
                if self.size <= self.max_bytes:
                    return
