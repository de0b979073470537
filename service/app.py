"""The FastAPI application. ``create_app(settings)`` builds it; nothing is built at import time.

Routes live in ``service.routes``; errors become JSON in ``service.errors``; what routes share (Redis, job
store, queues, API keys, metrics) is built once here into ``app.state.services``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI, Request, Response

from service import errors
from service.deps import Services
from service.routes import apidocs, batches, jobs, results, signed, system, web
from service.storage import sweep_stale_uploads, uploads_dir
from spikescan.config import Settings
from workers.pipeline import GDAL_CACHE_MB
from workers.redis_server import warn_about_persistence

log = logging.getLogger("spikescan.service")


def create_app(settings: Settings) -> FastAPI:
    # The API reads scenes (validation) and COGs (tiles, previews) for as long as it runs; GDAL's default
    # block cache (5 % of RAM) would grow to that. Read by GDAL at its first raster access, so set it first.
    os.environ.setdefault("GDAL_CACHEMAX", f"{GDAL_CACHE_MB}MB")
    svc = Services.build(settings)
    sweep_stale_uploads(uploads_dir(settings.data_dir))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warn_about_persistence(svc.client, log)
        yield
        svc.client.close()

    app = FastAPI(
        title="spikescan",
        version=version("spikescan"),
        lifespan=lifespan,
        summary="Chip GeoTIFFs, scan each patch with a spiking CNN, get map layers back.",
        docs_url=None,  # served by service.routes.apidocs from bundled assets, not FastAPI's CDN pages
        redoc_url=None,
    )
    app.state.services = svc
    errors.install(app)
    for module in (jobs, batches, results, signed, system):
        app.include_router(module.router)
    web.install(app)
    apidocs.install(app)
    app.middleware("http")(_count_requests(svc))
    return app


def _count_requests(
    svc: Services,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        # The route template, not the raw path: job ids would make the label set unbounded.
        path = getattr(route, "path", "unmatched")
        svc.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    return middleware
