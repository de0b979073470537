"""Result files (with HTTP Range, so GDAL's /vsicurl/ reads the COGs remotely) and map tiles."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, JSONResponse

from models import package
from models.card import ModelCard
from service import preview
from service.deps import JobDep, ServicesDep
from service.schemas import ERROR_RESPONSES
from service.tiles import render_tile
from spikescan.errors import NotFound
from workers.jobs import OUTPUTS, Job, JobStore

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"], responses=ERROR_RESPONSES)

MEDIA = {
    "classes.tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    "classes.tif.aux.xml": "application/xml",  # GDAL's sidecar: RGBA colours, class names (workers/pam.py)
    "scores.tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    "detections.geojson": "application/geo+json",
    "detections.gpkg": "application/geopackage+sqlite3",
    "detections.fgb": "application/vnd.flatgeobuf",
    "item.json": "application/geo+json",
    "report.json": "application/json",
}
PREVIEWABLE = ("running", "mosaicking")


def finished_output(store: JobStore, job: Job, name: str) -> str:
    if name not in MEDIA:
        raise NotFound(f"no result file {name!r}: a job's results are {', '.join(OUTPUTS)}")
    if job.status != "done":
        raise NotFound(f"job {job.id} has no results yet (status {job.status})")
    path = store.out_dir(job.id) / name
    if not path.is_file():
        raise NotFound(f"job {job.id}: {name} is missing from its results")
    return str(path)


@router.api_route("/results/{name}", methods=["GET", "HEAD"], response_class=FileResponse)
def result(name: str, job: JobDep, svc: ServicesDep) -> FileResponse:
    """One of the job's result files (HTTP Range honoured); an unknown name is a 404."""
    return FileResponse(
        finished_output(svc.store, job, name),
        media_type=MEDIA[name],
        filename=name,
        content_disposition_type="inline",
    )


@router.get(
    "/tiles/{z}/{x}/{y}.png", response_class=Response, responses={200: {"content": {"image/png": {}}}}
)
async def tile(z: int, x: int, y: int, job: JobDep, svc: ServicesDep) -> Response:
    """The class layer; before the job is done, drawn from the chips finished so far (``service.preview``)."""
    if job.status in PREVIEWABLE:
        card = model_card(job.model, job.model_id, svc.settings.models_dir)
        png = await anyio.to_thread.run_sync(preview.partial_tile, svc.store, job, card, z, x, y)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
    path = finished_output(svc.store, job, "classes.tif")
    png = await anyio.to_thread.run_sync(render_tile, path, z, x, y)
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


@router.get(
    "/extent", response_class=JSONResponse, responses={200: {"content": {"application/geo+json": {}}}}
)
async def extent(job: JobDep) -> JSONResponse:
    """The scene's footprint (GeoJSON Feature, lon/lat, with ``bbox``), available as soon as the job is."""
    feature = await anyio.to_thread.run_sync(preview.extent, job)
    return JSONResponse(feature, media_type="application/geo+json")


@lru_cache(maxsize=16)
def model_card(name: str, model_id: str, models_dir: Path | None) -> ModelCard:
    # Keyed by the job's model id too, so a redeployed model is never drawn with a stale card's colours.
    return package.load(name, models_dir).card
