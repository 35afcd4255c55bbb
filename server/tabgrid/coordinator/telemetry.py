"""What the coordinator counts: Prometheus metrics, and running totals the console charts.

Each app has its own registry (tests start many apps in one process). Counters move as
results are recorded; the gauges are set once a second by the console hub from the same
aggregation the console shows, so a scrape costs no query.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabgrid.coordinator.validator import Outcome

OUTCOMES = ("valid", "invalid", "error")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.results = Counter(
            "tabgrid_results", "Results judged, by outcome", ["outcome"], registry=r
        )
        self.validated = Counter("tabgrid_units_validated", "Units validated", registry=r)
        self.validation_latency = Histogram(
            "tabgrid_validation_latency_seconds",
            "From a unit's first result to its canonical result",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_latency = Histogram(
            "tabgrid_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        # The rate of its _sum is the share of the time the scheduler spends in ticks; it
        # stays near 0.75 where the coordinator is the limit (README, what to watch).
        self.ticks = Histogram(
            "tabgrid_tick_duration_seconds",
            "Scheduler ticks (record results, lease units), hand-off to the database to commit",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.workers = Gauge(
            "tabgrid_workers_connected", "Connected workers by kind", ["kind"], registry=r
        )
        self.leases = Gauge("tabgrid_leases_outstanding", "Leases not yet returned", registry=r)
        self.queue = Gauge("tabgrid_queue_depth", "Replicas wanted by running jobs", registry=r)
        for outcome in OUTCOMES:
            self.results.labels(outcome)
        for kind in ("browser", "native"):
            self.workers.labels(kind)
        # Totals since start, sampled by the console hub once a second for rates and charts.
        self.totals = dict.fromkeys((*OUTCOMES, "validated"), 0)

    def outcome(self, o: Outcome) -> None:
        for name, n in (("valid", o.valid), ("invalid", o.invalid), ("error", o.errors)):
            if n:
                self.results.labels(name).inc(n)
                self.totals[name] += n
        if o.units_done:
            self.validated.inc(o.units_done)
            self.totals["validated"] += o.units_done
        for seconds in o.latencies:
            self.validation_latency.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HttpLatency:
    """Times every HTTP request, labelled by the route's path template (bounded cardinality).

    The router leaves the matched endpoint in the scope, so the template is one dict lookup
    rather than matching every route again on each request (workers fetch blobs per unit).
    """

    def __init__(self, app: ASGIApp, telemetry: Telemetry, routes: list[BaseRoute]) -> None:
        self.app = app
        self.telemetry = telemetry
        self.templates = {
            id(getattr(r, "endpoint", None) or getattr(r, "app", None)): getattr(r, "path", "")
            for r in routes
        }

    def _template(self, scope: Scope) -> str:
        return self.templates.get(id(scope.get("endpoint")), "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"  # bounded labels
            self.telemetry.http_latency.labels(method, self._template(scope), str(status)).observe(
                time.perf_counter() - start
            )
