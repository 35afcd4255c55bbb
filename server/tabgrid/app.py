"""The Starlette application: wires the store, blobs, scheduler, routes and side tasks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from tabgrid.api import blobs as api_blobs
from tabgrid.api import routes as api
from tabgrid.api import static as web
from tabgrid.api import status_page as pages
from tabgrid.blobs import BlobStore, FileBlobStore
from tabgrid.coordinator import events, gateway
from tabgrid.coordinator.console_hub import ConsoleHub
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import HttpLatency, Telemetry
from tabgrid.services import Services
from tabgrid.settings import Settings
from tabgrid.store import Store, notify
from tabgrid.store.blob_parts import DatabaseBlobStore

log = logging.getLogger("tabgrid")


def create_app(settings: Settings) -> Starlette:
    store = Store(settings.db)
    blobs = open_blobs(settings)
    telemetry = Telemetry()
    scheduler = Scheduler(store, blobs, settings, telemetry)
    hub = ConsoleHub(
        store, scheduler, telemetry, settings.console_interval_s, settings.trust_saboteur_bound
    )
    services = Services(settings, store, blobs, scheduler, telemetry, hub)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [
            _supervised(services.scheduler.run(), "scheduler"),
            _supervised(services.scheduler.sweep(), "lease sweeper"),
            _supervised(api_blobs.sweep(services), "blob sweeper"),
            _supervised(hub.run(), "console hub"),
        ]
        if store.is_postgres:
            heard = functools.partial(events.dispatch, services.scheduler)
            tasks.append(_supervised(notify.listen(settings.db, heard), "notification listener"))
        await services.scheduler.start()
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # the database may be what failed
                await services.scheduler.stop()
            blobs.close()
            store.close()

    web_dir = settings.web_dir or web.default_web_dir()
    routes = api.routes() + gateway.routes() + pages.routes() + web.routes(web_dir)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=api.exception_handlers(),
        middleware=[
            Middleware(web.SecurityHeaders),
            Middleware(HttpLatency, telemetry=telemetry, routes=routes),
            *api.middleware(settings),
        ],
    )
    app.state.services = services
    return app


def open_blobs(settings: Settings) -> BlobStore:
    """The blob store the settings name: files under the data directory, or the database."""
    if settings.blobs == "db":
        return DatabaseBlobStore(settings.db, settings.data_dir / "tmp")
    return FileBlobStore(settings.blob_dir)


def _supervised(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A side task that dies takes the server down with it instead of failing silently."""
    task = asyncio.create_task(coro, name=name)

    def done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.critical("%s died: %r; stopping the coordinator", name, t.exception())
            os.kill(os.getpid(), signal.SIGTERM)

    task.add_done_callback(done)
    return task


def serve(settings: Settings) -> None:
    """Runs the coordinator until interrupted."""
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # store/schema.py says what changed
    if not settings.distinct_addresses:
        log.warning(
            "distinct-address rule is OFF: replicas of a unit may go to workers at one address "
            "(fine on one machine, where every tab shares 127.0.0.1; not for a public network)"
        )
    where = "the database" if settings.blobs == "db" else settings.blob_dir
    log.info("database %s, blobs in %s", _redact(settings.db), where)
    if settings.trust_proxy:
        log.info("client addresses from X-Forwarded-For of %s", ", ".join(settings.trust_proxy))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.limits.max_message,
        # Control frames are small JSON: compressing them costs the coordinator more CPU than
        # it saves bandwidth.
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        **proxy_options(settings),
    )


def proxy_options(settings: Settings) -> dict[str, object]:
    """uvicorn's proxy options: X-Forwarded-For is believed only from the trusted proxies,
    since the distinct-address rule rests on the client's address. uvicorn's own default
    would believe any process on 127.0.0.1."""
    if not settings.trust_proxy:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(settings.trust_proxy)}


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
