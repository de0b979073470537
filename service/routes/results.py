"""Result files (with HTTP Range, so GDAL's /vsicurl/ reads the COGs remotely) and map tiles."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

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
from workers.jobs import Job, JobStore

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"], responses=ERROR_RESPONSES)

MEDIA = {
    "classes.tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    "scores.tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    "detections.geojson": "application/geo+json",
    "item.json": "application/geo+json",
    "report.json": "application/json",
}
PREVIEWABLE = ("running", "mosaicking")
ResultName = Literal["classes.tif", "scores.tif", "detections.geojson", "item.json", "report.json"]


def finished_output(store: JobStore, job: Job, name: str) -> str:
    if job.status != "done":
        raise NotFound(f"job {job.id} has no results yet (status {job.status})")
    path = store.out_dir(job.id) / name
    if not path.is_file():
        raise NotFound(f"job {job.id}: {name} is missing from its results")
    return str(path)


@router.api_route("/results/{name}", methods=["GET", "HEAD"], response_class=FileResponse)
def result(name: ResultName, job: JobDep, svc: ServicesDep) -> FileResponse:
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
async def extent(job: JobDep, svc: ServicesDep) -> JSONResponse:
    """The scene's footprint (GeoJSON Feature, lon/lat, with ``bbox``), available as soon as the job is."""
    card = model_card(job.model, job.model_id, svc.settings.models_dir)
    feature = await anyio.to_thread.run_sync(preview.extent, job, card)
    return JSONResponse(feature, media_type="application/geo+json")


@lru_cache(maxsize=16)
def model_card(name: str, model_id: str, models_dir: Path | None) -> ModelCard:
    # Keyed by the job's model id too, so a redeployed model is never drawn with a stale card's colours.
    return package.load(name, models_dir).card
