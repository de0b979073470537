"""``/docs`` (Swagger UI) and ``/redoc`` from assets served by this API, never from a CDN.

FastAPI's own pages load Swagger UI and ReDoc from jsDelivr (and ReDoc's fonts from Google), so behind a
firewall or offline they are blank. The assets are copied from the npm registry at build time into
``service/apidocs/`` (``apidocs/``: ``make apidocs``) and committed, like the web map's Leaflet.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger("spikescan.service")
ASSETS = Path(__file__).resolve().parent.parent / "apidocs"
PREFIX = "/apidocs"

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="spikescan API",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
    )


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="spikescan API",
        redoc_js_url=f"{PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{PREFIX}/favicon-32x32.png",
        with_google_fonts=False,
    )


def install(app: FastAPI) -> None:
    """The two pages and their assets; the app must be built with ``docs_url=None, redoc_url=None``."""
    if not (ASSETS / "swagger-ui-bundle.js").is_file():
        log.warning("API docs assets missing (%s): run `make apidocs`", ASSETS)
    app.include_router(router)
    app.mount(PREFIX, StaticFiles(directory=ASSETS, check_dir=False), name="apidocs")
