"""The analysts' web map: one static page at ``/``; its script, styles and the vendored Leaflet at ``/web/``.

The page is plain files in ``service/web/`` (Leaflet is copied there from the npm registry at build time by
``make web``), so it works behind firewalls with no CDN. It talks only to the public ``/v1`` API.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.deps import ServicesDep

log = logging.getLogger("spikescan.service")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
VENDORED = WEB_DIR / "vendor" / "leaflet.js"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=FileResponse)
def index() -> FileResponse:
    # no-cache: a new release's page must not run against an old cached script
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/web/config.json")
def config(svc: ServicesDep) -> dict[str, str | None]:
    """What the page needs of the server's settings: only the operator's basemap (none by default)."""
    return {"basemap_url": svc.settings.basemap_url, "basemap_attribution": svc.settings.basemap_attribution}


def install(app: FastAPI) -> None:
    """Serve the page; a mount (not a route), so it is added to the app rather than to a router."""
    if not VENDORED.is_file():
        log.warning("web map assets missing (%s): run `make web`", VENDORED)
    app.include_router(router)
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
