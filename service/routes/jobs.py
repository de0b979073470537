"""``/v1/jobs``: submit (upload or uri), status, server-sent events, cancel/delete."""

from __future__ import annotations

from typing import TypeVar

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from service.deps import AdmittedCallerDep, CallerDep, JobDep, Services, ServicesDep, base_url
from service.events import job_events
from service.schemas import (
    AOI_HELP,
    ERROR_RESPONSES,
    MIN_SCORE_HELP,
    NMS_IOU_HELP,
    NODATA_HELP,
    SCALE_HELP,
    Accepted,
    JobOut,
    UriSubmission,
    links,
)
from service.storage import ENVELOPE_BYTES, Upload, receive_multipart, uploads_dir
from spikescan.errors import InvalidInput, PayloadTooLarge, option
from workers import aoi as aois
from workers.jobs import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)
M = TypeVar("M", bound=BaseModel)
MAX_JSON_BYTES = 1 << 20

def _fraction(description: str) -> dict[str, object]:
    return {"type": "number", "minimum": 0, "maximum": 1, "description": description}


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["scene", "model"],
                    "properties": {
                        "scene": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "bands": {"type": "string"},
                        "stride": {"type": "integer"},
                        "scale": {"type": "number", "description": SCALE_HELP},
                        "nodata": {"type": "number", "description": NODATA_HELP},
                        "min_score": _fraction(MIN_SCORE_HELP),
                        "nms_iou": _fraction(NMS_IOU_HELP),
                        "aoi": {"type": "string", "description": f"GeoJSON text; {AOI_HELP}"},
                    },
                }
            },
            "application/json": {"schema": UriSubmission.model_json_schema()},
        },
    }
}


def parse_json(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"request body: {where}: {first['msg']}") from None


def form_int(upload: Upload, name: str) -> int | None:
    raw = upload.fields.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"form field {name!r} must be an integer, got {raw!r}") from None


def form_inputs(upload: Upload) -> dict[str, float | None]:
    """The optional number fields: ``scale`` and ``nodata`` (workers/input_check.py), ``min_score`` and
    ``nms_iou`` (a detector's peak picking, 0..1)."""
    out: dict[str, float | None] = {}
    for name in ("scale", "nodata", "min_score", "nms_iou"):
        raw = upload.fields.get(name, "").strip()
        try:
            out[name] = float(raw) if raw else None
        except ValueError:
            raise InvalidInput(f"form field {name!r} must be a number, got {raw!r}") from None
    for name in ("min_score", "nms_iou"):
        value = out[name]
        if value is not None and not 0.0 <= value <= 1.0:
            raise InvalidInput(f"form field {name!r} must lie between 0 and 1, got {value}")
    return out


def required_field(upload: Upload, name: str) -> str:
    value = upload.fields.get(name, "").strip()
    if not value:
        raise InvalidInput(f"form field {name!r} is required")
    return value


def declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None  # chunked: the cap is enforced while streaming


async def receive_upload(request: Request, svc: Services, scenes: int | None = 1) -> Upload:
    """Stream a multipart body to staging. With ``scenes`` known, a Content-Length that cannot fit that many
    scenes at the cap is refused as soon as the first file part's name has arrived, not after the upload."""
    cap = svc.settings.max_upload_mb << 20
    declared = declared_length(request)
    refusal = None
    if scenes is not None and declared is not None and declared > scenes * cap + ENVELOPE_BYTES:
        refusal = (
            f"larger than the server's limit of {svc.settings.max_upload_mb} MB (SPIKESCAN_MAX_UPLOAD_MB): "
            f"the request declares {declared / (1 << 20):,.0f} MB (Content-Length)"
        )
    return await receive_multipart(
        request.headers.get("content-type", ""),
        request.stream(),
        uploads_dir(svc.settings.data_dir),
        cap,
        refusal=refusal,
    )


def accepted(job: Job, request: Request, svc: Services) -> Accepted:
    return Accepted(id=job.id, status=job.status, links=links(job, base_url(request), svc.signer))


async def json_body(request: Request, model: type[M], limit: int = MAX_JSON_BYTES) -> M:
    """A small JSON body, read with a cap so that a huge one is refused instead of buffered."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"JSON request body of {declared} bytes is larger than {limit // 1024} KiB")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"JSON request body larger than {limit // 1024} KiB")
    return parse_json(model, bytes(raw))


def is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


async def _submit_upload(request: Request, svc: Services, owner: str) -> Job:
    upload = await receive_upload(request, svc)
    try:
        scenes = [f for f in upload.files if f.field == "scene"]
        if len(scenes) != 1:
            raise InvalidInput(f"expected exactly one file part named 'scene', got {len(scenes)}")
        model, bands, stride = (
            required_field(upload, "model"),
            upload.fields.get("bands"),
            form_int(upload, "stride"),
        )
        inputs = form_inputs(upload)
        raw_aoi = upload.fields.get("aoi", "").strip()
        aoi = aois.from_text(raw_aoi, option("aoi")) if raw_aoi else None
        job = await anyio.to_thread.run_sync(
            lambda: svc.submitter.submit_upload(
                owner, scenes[0], model, bands or None, stride, aoi=aoi, **inputs
            ),
            limiter=svc.submitter.check_slots,
        )
        svc.metrics.upload_bytes.inc(scenes[0].size)
        return job
    finally:
        upload.discard()  # whatever was not adopted by an accepted job


@router.post("", status_code=202, response_model=Accepted, openapi_extra=_UPLOAD_BODY)
async def submit(request: Request, svc: ServicesDep, owner: AdmittedCallerDep) -> Accepted:
    """Upload a scene (multipart: ``scene`` file + ``model``) or name one on the server (JSON ``uri``)."""
    if is_json(request):
        body = await json_body(request, UriSubmission)
        aoi = aois.parse(body.aoi, option("aoi")) if body.aoi is not None else None
        job = await anyio.to_thread.run_sync(
            lambda: svc.submitter.submit_uri(
                owner, body.scene(), body.model, body.bands, body.stride, scale=body.scale,
                nodata=body.nodata, min_score=body.min_score, nms_iou=body.nms_iou, aoi=aoi,
            ),
            limiter=svc.submitter.check_slots,
        )
    else:
        job = await _submit_upload(request, svc, owner)
    svc.metrics.jobs_submitted.inc()
    return accepted(job, request, svc)


@router.get("", response_model=list[JobOut])
def list_jobs(request: Request, svc: ServicesDep, owner: CallerDep) -> list[JobOut]:
    """The caller's jobs, newest first."""
    return [JobOut.of(j, {}, base_url(request), svc.signer) for j in svc.store.jobs_of(owner)]


@router.get("/{job_id}", response_model=JobOut)
def status(job: JobDep, svc: ServicesDep, request: Request) -> JobOut:
    return JobOut.of(job, svc.store.failures(job.id), base_url(request), svc.signer)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def events(job: JobDep, svc: ServicesDep, request: Request) -> StreamingResponse:
    """Progress as server-sent events (``event: progress``, data = the status JSON) until a final state."""
    return StreamingResponse(
        job_events(svc, job.id, base_url(request), request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.delete("/{job_id}", status_code=204, responses={202: {"model": JobOut}})
def cancel_or_delete(job: JobDep, svc: ServicesDep, request: Request) -> Response:
    """A live job is cancelled (202, files kept until a second DELETE); a finished one is deleted (204)."""
    if not job.terminal and svc.store.move(job.id, "cancelled", error="cancelled by the user"):
        out = JobOut.of(svc.store.get(job.id), {}, base_url(request), svc.signer)
        return Response(out.model_dump_json(), status_code=202, media_type="application/json")
    job = svc.store.get(job.id)
    # Files first: should the storage be down (503), the record stays and a second DELETE finishes the work.
    svc.store.remove_files(job.id)
    svc.store.delete(job)
    return Response(status_code=204)
