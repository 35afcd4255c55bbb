"""The operator's live view: one aggregation a second, shared by every console watching.

The hub's tick runs the overview queries once, joins them with the live connections, keeps
an hour of per-second figures for the charts and sets the Prometheus gauges. Each console
then gets a snapshot cut to its own page of the worker table, so what one viewer costs is
bounded by its page size, not by the number of workers; viewers asking for the same page
share one encoding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from typing import Any

import msgspec

from tabgrid.coordinator.credibility import credibility
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.store import Store, overview, trust

log = logging.getLogger("tabgrid.coordinator.console_hub")

HOUR = 3600
RATE_WINDOW_S = 10
MAX_PER_PAGE = 100
SHARED_WINDOW_S = 3600  # addresses holding many worker ids seen within this window
SORTS = (
    "id",
    "kind",
    "addr",
    "connected_since",
    "last_seen",
    "leases",
    "valid",
    "invalid",
    "errors",
    "consecutive_valid",
    "credibility",
    "credit",
    "state",
)
KINDS = ("", "browser", "native")
STATES = ("", "active", "paused", "draining", "banned", "offline")
SERIES = ("validated", "valid", "invalid", "error", "workers", "queue")


class ViewError(ValueError):
    """A view the console asked for that cannot be shown (the API answers 400)."""


def _bad(detail: str) -> ViewError:
    return ViewError(detail)


@dataclass(frozen=True)
class View:
    """One console's worker table: its sort, filter and page."""

    sort: str = "credit"
    order: str = "desc"
    q: str = ""
    kind: str = ""
    state: str = ""
    page: int = 0
    per_page: int = 50

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> View:
        def number(name: str, default: int, hi: int) -> int:
            """A non-negative integer, capped at ``hi`` (as other page sizes are)."""
            raw = params.get(name, str(default))
            if not (raw.isascii() and raw.isdigit()):
                raise _bad(f"{name} must be a non-negative integer, not {raw!r}")
            return min(int(raw), hi)

        view = cls(
            sort=params.get("sort", "credit"),
            order=params.get("order", "desc"),
            q=params.get("q", "")[:200].strip().lower(),
            kind=params.get("kind", ""),
            state=params.get("state", ""),
            page=number("page", 0, 1_000_000),
            per_page=max(1, number("per_page", 50, MAX_PER_PAGE)),
        )
        for name, allowed in (
            ("sort", SORTS),
            ("order", ("asc", "desc")),
            ("kind", KINDS),
            ("state", STATES),
        ):
            if getattr(view, name) not in allowed:
                shown = ", ".join(a or "(empty)" for a in allowed)
                raise _bad(f"{name} must be one of {shown}, not {getattr(view, name)!r}")
        return view


@dataclass
class Aggregate:
    """Everything one tick learned; viewers only read it."""

    t: float
    network: dict
    jobs: list
    workers: list[dict]
    disagreements: list[dict]
    pages: dict[tuple, bytes] = field(default_factory=dict)


class Series:
    """An hour of per-second points."""

    def __init__(self) -> None:
        self.t: deque[float] = deque(maxlen=HOUR)
        self.values = {name: deque(maxlen=HOUR) for name in SERIES}

    def add(self, t: float, point: dict[str, float]) -> None:
        self.t.append(t)
        for name in SERIES:
            self.values[name].append(point[name])

    def since(self, after: float | None) -> dict[str, list[float]]:
        start = 0
        if after is not None:
            start = next((i for i, t in enumerate(self.t) if t > after), len(self.t))
        out = {"t": list(self.t)[start:]}
        for name in SERIES:
            out[name] = list(self.values[name])[start:]
        return out


def worker_state(row: dict, peer: Any) -> str:
    """active: computing or asking for work; paused: connected but asking for nothing (its
    volunteer paused it, or its usage cap has it resting); draining; banned; offline."""
    if row.get("banned"):
        return "banned"
    if peer is None:
        return "offline"
    if peer.draining:
        return "draining"
    return "active" if peer.leases or peer.credit else "paused"


def _sort_key(name: str):  # type: ignore[no-untyped-def]
    def key(row: dict) -> tuple:
        value = row.get(name)
        # Missing values last in either order: a separate flag sorts before the value.
        return (value is None, value if value is not None else 0)

    return key


class ConsoleHub:
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        telemetry: Telemetry,
        interval: float = 1.0,
        saboteur_bound: float = 0.2,  # as settings.trust_saboteur_bound: credibility's f
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.telemetry = telemetry
        self._saboteur_bound = saboteur_bound
        self.interval = interval
        self.series = Series()
        self.latest: Aggregate | None = None
        self.ticks = 0
        self.aggregations = 0  # queries run: one per tick however many are watching
        self.viewers = 0
        self._ticked = asyncio.Condition()
        self._totals: deque[tuple[float, dict[str, int]]] = deque(maxlen=RATE_WINDOW_S + 1)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("console tick failed; trying again")
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        now = time.time()
        peers = dict(self.scheduler.peers)
        agg = await self.store.run(self._aggregate, list(peers), now)
        self.aggregations += 1
        for row in agg.workers:
            peer = peers.get(row["id"])
            row["connected_since"] = peer.connected_at if peer else None
            row["leases"] = len(peer.leases) if peer else 0
            row["state"] = worker_state(row, peer)
            row["addr"] = peer.addr if peer else row.pop("client_addr", "")
            row.pop("client_addr", None)
            evidence = row["checks_passed"] + row["consecutive_valid"]
            row["credibility"] = round(credibility(evidence, self._saboteur_bound), 6)
        agg.network["workers"] = self._worker_counts(agg.workers)
        agg.network |= self._rates(now)
        self._set_gauges(agg.network)
        self.series.add(
            now,
            {
                "validated": agg.network["validated_per_s"],
                **{k: v for k, v in agg.network["results_per_s"].items()},
                "workers": agg.network["workers"]["connected"],
                "queue": agg.network["queue"],
            },
        )
        self.latest = agg
        self.ticks += 1
        async with self._ticked:
            self._ticked.notify_all()

    def _aggregate(self, conn: Any, connected: list[str], now: float) -> Aggregate:
        return Aggregate(
            t=now,
            network=overview.network(conn)
            | {"shared_addresses": trust.addresses_with_many_ids(conn, now - SHARED_WINDOW_S)},
            jobs=overview.job_rows(conn, now),
            workers=overview.worker_rows(conn, connected, now),
            disagreements=overview.recent_disagreements(conn),
        )

    @staticmethod
    def _worker_counts(rows: list[dict]) -> dict[str, int]:
        counts = {"connected": 0, "browser": 0, "native": 0, "banned": 0, "draining": 0}
        for r in rows:
            if r["connected_since"] is not None:
                counts["connected"] += 1
                counts[r["kind"]] = counts.get(r["kind"], 0) + 1
            if r["state"] in ("banned", "draining"):
                counts[r["state"]] += 1
        return counts

    def _rates(self, now: float) -> dict[str, Any]:
        self._totals.append((now, dict(self.telemetry.totals)))
        (t0, first), (t1, last) = self._totals[0], self._totals[-1]
        span = max(t1 - t0, 1e-9)

        def rate(name: str) -> float:
            return round((last[name] - first[name]) / span, 3) if t1 > t0 else 0.0

        return {
            "validated_per_s": rate("validated"),
            "results_per_s": {k: rate(k) for k in ("valid", "invalid", "error")},
        }

    def _set_gauges(self, network: dict) -> None:
        for kind in ("browser", "native"):
            self.telemetry.workers.labels(kind).set(network["workers"].get(kind, 0))
        self.telemetry.leases.set(network["leases"])
        self.telemetry.queue.set(network["queue"])

    async def wait_after(self, tick: int) -> int:
        """Waits until a tick newer than ``tick`` has happened; returns its number."""
        async with self._ticked:
            await self._ticked.wait_for(lambda: self.ticks > tick and self.latest is not None)
        return self.ticks

    # ---- one viewer's snapshot ----------------------------------------------------------

    def workers_page(self, view: View) -> dict:
        assert self.latest is not None
        rows = self.latest.workers
        if view.kind:
            rows = [r for r in rows if r["kind"] == view.kind]
        if view.state:
            rows = [r for r in rows if r["state"] == view.state]
        if view.q:
            rows = [r for r in rows if view.q in _haystack(r)]
        rows = sorted(rows, key=_sort_key(view.sort), reverse=view.order == "desc")
        start = view.page * view.per_page
        page = rows[start : start + view.per_page]
        shown = [{k: v for k, v in r.items() if k not in ("banned", "draining")} for r in page]
        return {
            "total": len(rows),
            "page": view.page,
            "per_page": view.per_page,
            "sort": view.sort,
            "order": view.order,
            "rows": shown,
        }

    def snapshot(self, view: View, since: float | None) -> bytes:
        """The SSE data for one viewer: the shared figures, its page, the series since
        ``since`` (all of the last hour when None)."""
        agg = self.latest
        assert agg is not None
        key = (astuple(view), since)
        cached = agg.pages.get(key)
        if cached is not None:
            return cached
        body = msgspec.json.encode(
            {
                "t": agg.t,
                "network": agg.network,
                "series": self.series.since(since),
                "series_full": since is None,
                "jobs": [_job(j) for j in agg.jobs],
                "workers": self.workers_page(view),
                "disagreements": [_disagreement(d) for d in agg.disagreements],
            }
        )
        if len(agg.pages) < 64:
            agg.pages[key] = body
        return body


def _haystack(row: dict) -> str:
    adapter = row.get("adapter") or {}
    parts = [row["id"], row.get("name") or "", row.get("addr") or "", *map(str, adapter.values())]
    return " ".join(parts).lower()


def _job(status: Any) -> dict:
    out = msgspec.to_builtins(status)
    out["priority"] = out["policy"]["priority"]
    out["picture"] = status.kernel == "mandelbrot"
    del out["policy"]
    return out


def _disagreement(d: dict) -> dict:
    return {
        "id": d["id"],
        "at": d["at"],
        "job": d["job_id"],
        "unit": d["unit_id"],
        "index": d["idx"],
        "kernel": d["kernel"],
        "summary": d["summary"],
        "replicas": d["replicas"],
    }
