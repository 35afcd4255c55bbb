"""Results sent but not yet acknowledged: kept, in the order sent, so that a coordinator that
dies before its transaction commits costs no computed work. Sent again after a reconnect;
forgotten once an Ack names them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from tabgrid.protocol import ResultItem, Welcome, encoder
from tabgrid.settings import Limits

# As many results as one Result message may carry by default (the gateway's bound), and a
# bound on their bytes: inline outputs may be up to a message each.
MAX_RESULTS = Limits().max_results
MAX_BYTES = 32 << 20


class Unacked:
    """Bounded by count and by encoded bytes; when full, the oldest results go first."""

    def __init__(self, max_results: int = MAX_RESULTS, max_bytes: int = MAX_BYTES) -> None:
        if max_results < 1 or max_bytes < 1:
            raise ValueError(f"bounds must be positive, got {max_results} and {max_bytes}")
        self.max_results, self.max_bytes = max_results, max_bytes
        self._items: OrderedDict[int, tuple[ResultItem, int]] = OrderedDict()  # by lease
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, lease: object) -> bool:
        return lease in self._items

    def items(self) -> list[ResultItem]:
        """Oldest first, as they were sent."""
        return [item for item, _ in self._items.values()]

    def add(self, items: Iterable[ResultItem]) -> list[int]:
        """Keeps ``items`` (a lease sent again replaces its older copy); returns the leases
        dropped to stay within the bounds, oldest first."""
        for item in items:
            self._pop(item.lease)
            size = len(encoder.encode(item))
            self._items[item.lease] = (item, size)
            self.bytes += size
        dropped = []
        while self._items and (len(self._items) > self.max_results or self.bytes > self.max_bytes):
            lease, (_, size) = self._items.popitem(last=False)
            self.bytes -= size
            dropped.append(lease)
        return dropped

    def forget(self, leases: Iterable[int]) -> int:
        """Drops these leases (acknowledged, or cancelled); returns how many were kept."""
        return sum(self._pop(lease) for lease in leases)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def _pop(self, lease: int) -> bool:
        kept = self._items.pop(lease, None)
        if kept is None:
            return False
        self.bytes -= kept[1]
        return True


def max_results(welcome: Welcome) -> int:
    """The results one message may carry to the coordinator that sent ``welcome``."""
    return welcome.max_results or MAX_RESULTS
