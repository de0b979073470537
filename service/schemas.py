"""Request and response bodies of the HTTP API (these are what OpenAPI publishes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.signing import UrlSigner
from workers.jobs import OUTPUTS, Job

SCALE_HELP = "multiply the pixels by this before the encoding (e.g. 0.0039: a 16-bit scene, an 8-bit model)"
NODATA_HELP = "a fill value the scene does not declare (a pixel holding it on every band is nodata)"
MIN_SCORE_HELP = "detection models: lowest peak score that makes an object (default: the model card's)"
AOI_HELP = (
    "area of interest: GeoJSON Polygon/MultiPolygon, Feature or FeatureCollection, EPSG:4326 unless it names "
    "a CRS; chips outside are skipped, outputs are no data outside"
)
NMS_IOU_HELP = "detection models: a box overlapping a better one above this IoU is dropped (default: card's)"


class UriSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(
        default=None,
        description="the scene under one of the server's input roots: a path (or file:// URL), an https:// "
        "or s3:// URL of a GeoTIFF, or the path or URL of a STAC Item (.json) whose band assets lie there",
    )
    item: dict[str, Any] | None = Field(
        default=None,
        description="a STAC Item given inline (instead of uri): its GeoTIFF band assets (absolute hrefs "
        "under the input roots) are picked by eo:bands common name to match the model and stacked",
    )
    model: str = Field(description="model name, see GET /v1/models")
    bands: str | None = Field(default=None, description="1-based scene bands in the card's order, e.g. 4,3,2")
    stride: int | None = Field(default=None, ge=1, description="chip stride in model pixels")
    scale: float | None = Field(default=None, gt=0, allow_inf_nan=False, description=SCALE_HELP)
    nodata: float | None = Field(default=None, allow_inf_nan=False, description=NODATA_HELP)
    min_score: float | None = Field(default=None, ge=0, le=1, description=MIN_SCORE_HELP)
    nms_iou: float | None = Field(default=None, ge=0, le=1, description=NMS_IOU_HELP)
    aoi: dict[str, Any] | None = Field(default=None, description=AOI_HELP)

    @model_validator(mode="after")
    def _one_scene(self) -> UriSubmission:
        if (self.uri is None) == (self.item is None):
            raise ValueError("give exactly one of 'uri' and 'item'")
        return self

    def scene(self) -> str | dict[str, Any]:
        return self.uri if self.uri is not None else self.item  # type: ignore[return-value]


class BatchSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    uris: list[str] = Field(min_length=1, max_length=1000)
    bands: str | None = None
    stride: int | None = Field(default=None, ge=1)
    scale: float | None = Field(default=None, gt=0, allow_inf_nan=False, description=SCALE_HELP)
    nodata: float | None = Field(default=None, allow_inf_nan=False, description=NODATA_HELP)
    min_score: float | None = Field(default=None, ge=0, le=1, description=MIN_SCORE_HELP)
    nms_iou: float | None = Field(default=None, ge=0, le=1, description=NMS_IOU_HELP)
    aoi: dict[str, Any] | None = Field(default=None, description=f"one AOI for every scene; {AOI_HELP}")


LINKS_HELP = (
    "self, events, tiles and one link per result file; with API keys on, also `signed:<file>` and "
    "`signed:tiles`: expiring URLs that work with no key header (QGIS, GDAL /vsicurl/, a browser)"
)


class Progress(BaseModel):
    chips_total: int
    chips_done: int
    chips_failed: int
    chips_skipped: int
    chips_per_s: float | None
    eta_s: float | None
    chipping_complete: bool


class JobOut(BaseModel):
    id: str
    status: str
    model: str
    scene_name: str = Field(description="the uploaded file's name, or the basename of the submitted uri")
    batch: str | None = None
    created: float
    updated: float
    finished: float | None = None
    progress: Progress
    error: str | None = None
    failed_chips: dict[str, str] = Field(default_factory=dict)
    # About the input (workers/input_check.py): {code, message, ...}; from a sample at submission, from
    # every pixel once chipped.
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    links: dict[str, str] = Field(description=LINKS_HELP)

    @classmethod
    def of(cls, job: Job, failures: dict[str, str], base: str, signer: UrlSigner | None = None) -> JobOut:
        return cls(
            id=job.id,
            status=job.status,
            model=job.model,
            scene_name=job.scene_name or Path(job.scene).name,
            batch=job.batch or None,
            created=job.created,
            updated=job.updated,
            finished=job.finished,
            progress=Progress(
                chips_total=job.chips_total,
                chips_done=job.chips_done,
                chips_failed=job.chips_failed,
                chips_skipped=job.chips_skipped,
                chips_per_s=job.rate(),
                eta_s=job.eta_s(),
                chipping_complete=job.chipped,
            ),
            error=job.error or None,
            failed_chips=failures,
            warnings=job.warnings(),
            links=links(job, base, signer),
        )


def links(job: Job, base: str, signer: UrlSigner | None = None) -> dict[str, str]:
    root = f"{base}/v1/jobs/{job.id}"
    tiles = "tiles/{z}/{x}/{y}.png"
    out = {"self": root, "events": f"{root}/events", "tiles": f"{root}/{tiles}"}
    out.update({name: f"{root}/results/{name}" for name in OUTPUTS})
    if signer is not None:
        signed = f"{root}/signed/{signer.token(job.id, job.owner, signer.expiry())}"
        out.update({f"signed:{name}": f"{signed}/results/{name}" for name in OUTPUTS})
        out["signed:tiles"] = f"{signed}/{tiles}"
    return out


class Accepted(BaseModel):
    id: str
    status: str
    links: dict[str, str] = Field(description=LINKS_HELP)


class SceneError(BaseModel):
    """One scene of a batch that was refused, and why (the error a single submission would have got)."""

    scene: str = Field(description="the file name of an uploaded scene, or the uri as given")
    status: int
    error: ErrorDetail


class BatchOut(BaseModel):
    id: str
    jobs: list[Accepted]
    errors: list[SceneError] = Field(default_factory=list, description="the scenes refused, each on its own")


class BatchStatus(BaseModel):
    id: str
    jobs: list[JobOut]


class ModelOut(BaseModel):
    name: str
    id: str
    version: str
    task: str
    classes: list[str]
    colors: list[list[int]] = Field(description="RGBA per class, as in the model card")
    target_classes: list[str] = Field(default_factory=list, description="classes detections.geojson holds")
    bands: list[str]
    gsd_m: float
    patch_size: int


class Health(BaseModel):
    status: str
    redis: bool
    version: str
    # What a Redis restart keeps (workers.redis_server.persistence); anything but aof-always can lose jobs.
    persistence: str = "unknown"


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"code", "message"}}`` (service/errors.py)."""

    error: ErrorDetail


# Declared on every router so the OpenAPI document lists the error answers clients will really get.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "bad request"),
        (401, "missing or unknown API key"),
        (403, "forbidden"),
        (404, "unknown job, model or file"),
        (409, "conflict with the job's state"),
        (413, "upload over the size cap"),
        (416, "byte range not satisfiable"),
        (422, "not a usable scene or request"),
        (429, "the server is at capacity (its job queue is near its memory limit): retry after Retry-After"),
        (503, "backend, Redis, the result storage or the model unavailable (a package that fails its "
              "integrity check); Redis and storage outages carry Retry-After"),
    )
}
