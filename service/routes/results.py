"""Result files (with HTTP Range, so GDAL's /vsicurl/ reads the COGs remotely) and map tiles."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from models import package
from models.card import ModelCard
from service import layers, preview
from service.deps import JobDep, Services, ServicesDep, base_url
from service.layers import check_layer
from service.objects import stored_response
from service.schemas import ERROR_RESPONSES
from service.tiles import render_tile
from spikescan.errors import NotFound
from workers import sources, stac
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
# A plain string, checked by ``check_layer``: an unknown layer is a 400 naming the layers, not a 422.
LAYER_HELP = "classes (default), scene (the source imagery, context for the results) or scores"
CLASS_HELP = "layer=scores: one class's score (default: the card's target classes summed)"


def finished_key(store: JobStore, job: Job, name: str) -> str:
    """The storage key of one of a finished job's result files, or a 404 naming what is wrong."""
    if name not in MEDIA:
        raise NotFound(f"no result file {name!r}: a job's results are {', '.join(OUTPUTS)}")
    if job.status != "done":
        raise NotFound(f"job {job.id} has no results yet (status {job.status})")
    key = store.out_key(job.id, name)
    if store.objects.size(key) is None:
        raise NotFound(f"job {job.id}: {name} is missing from its results")
    return key


def _read_stored(store: JobStore, key: str, render: Callable[..., bytes], *args: object) -> bytes:
    """``render(path, *args)`` on a stored raster: a local path, or /vsis3/ with the AWS_* environment."""
    source = sources.resolve(store.objects.ref(key))
    with source.env():  # GDAL's options are per thread: set in the thread that reads
        return render(source.gdal_path, *args)


def _scene_tile(job: Job, card: ModelCard, z: int, x: int, y: int) -> bytes:
    if not job.scene.startswith("s3://"):
        return layers.scene_tile(Path(job.scene), card, job.bands, z, x, y)
    source = sources.resolve(job.scene)  # an upload in a bucket, or an s3:// job: /vsis3/ with AWS_*
    with source.env():
        return layers.scene_tile(source.gdal_path, card, job.bands, z, x, y)


@router.api_route("/results/{name}", methods=["GET", "HEAD"], response_class=FileResponse)
def result(name: str, job: JobDep, svc: ServicesDep, request: Request) -> Response:
    """One of the job's result files (HTTP Range honoured); an unknown name is a 404. ``item.json`` comes
    with absolute asset hrefs and a ``self`` link."""
    return result_response(name, job, svc, request, f"{base_url(request)}/v1/jobs/{job.id}/results")


def result_response(name: str, job: Job, svc: Services, request: Request, results_url: str) -> Response:
    """A result file as served from ``results_url`` (the plain or the signed ``…/results``): the STAC Item
    with its hrefs made absolute under it (``workers.stac.published``), any other file as stored."""
    key = finished_key(svc.store, job, name)
    if name == "item.json":
        raw = svc.store.objects.get_bytes(key)
        if raw is None:  # expired or deleted since the check
            raise NotFound(f"job {job.id}: item.json is missing from its results")
        return JSONResponse(stac.published(json.loads(raw), results_url), media_type=MEDIA[name])
    return stored_response(
        svc.store.objects,
        key,
        media_type=MEDIA[name],
        filename=name,
        range_header=request.headers.get("range"),
        head=request.method == "HEAD",
    )


@router.get(
    "/tiles/{z}/{x}/{y}.png", response_class=Response, responses={200: {"content": {"image/png": {}}}}
)
async def tile(
    z: int,
    x: int,
    y: int,
    job: JobDep,
    svc: ServicesDep,
    layer: Annotated[str, Query(description=LAYER_HELP)] = "classes",
    klass: Annotated[str | None, Query(alias="class", description=CLASS_HELP)] = None,
) -> Response:
    """Web-Mercator tiles of a layer (``service.layers``): the classes — before the job is done, drawn from
    the chips finished so far (``service.preview``) — the scene itself, available as soon as the job is, or
    the score ramp of the finished job."""
    check_layer(layer)
    card = model_card(job.model, job.model_id, svc.settings.models_dir)
    if layer == "scene":
        png = await anyio.to_thread.run_sync(_scene_tile, job, card, z, x, y)
    elif layer == "scores":
        key = finished_key(svc.store, job, "scores.tif")
        png = await anyio.to_thread.run_sync(
            _read_stored, svc.store, key, layers.scores_tile, card, klass, z, x, y
        )
    elif job.status in PREVIEWABLE:
        png = await anyio.to_thread.run_sync(preview.partial_tile, svc.store, job, card, z, x, y)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
    else:
        key = finished_key(svc.store, job, "classes.tif")
        png = await anyio.to_thread.run_sync(_read_stored, svc.store, key, render_tile, z, x, y)
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
