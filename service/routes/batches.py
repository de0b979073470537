"""``/v1/batches``: many scenes in one request — all accepted, or none."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from fastapi import APIRouter, Request

from service.deps import CallerDep, Services, ServicesDep, base_url
from service.routes.jobs import (
    accepted,
    form_inputs,
    form_int,
    is_json,
    json_body,
    receive_upload,
    required_field,
)
from service.schemas import ERROR_RESPONSES, BatchOut, BatchStatus, BatchSubmission, JobOut
from service.storage import Upload, remove_job_files
from spikescan.errors import InvalidInput, NotFound
from workers.jobs import Job, new_id
from workers.queue import PREFIX

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ERROR_RESPONSES)

_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": BatchSubmission.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["scene", "model"],
                    "properties": {
                        "scene": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "model": {"type": "string"},
                        "bands": {"type": "string"},
                        "stride": {"type": "integer"},
                        "scale": {"type": "number"},
                        "nodata": {"type": "number"},
                        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
                        "nms_iou": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                }
            },
        },
    }
}


def _all_or_nothing(svc: Services, submit_one: list[Callable[[], Job]], batch: str) -> list[Job]:
    # Callers validate every scene first, so only an infrastructure failure can land here half way.
    jobs: list[Job] = []
    try:
        for submit in submit_one:
            jobs.append(submit())
    except BaseException:
        for job in jobs:
            svc.store.move(job.id, "cancelled", error="batch rejected")
            svc.store.delete(job)
            remove_job_files(svc.store.job_dir(job.id))
        raise
    svc.client.rpush(f"{PREFIX}:batch:{batch}", *(j.id for j in jobs))
    return jobs


def _uri_batch(svc: Services, owner: str, body: BatchSubmission, batch: str) -> list[Job]:
    paths = [svc.submitter.resolve_uri(uri, body.model) for uri in body.uris]  # outside the roots: at once
    inputs = body.model_dump(include={"scale", "nodata", "min_score", "nms_iou"})
    for path in paths:
        svc.submitter.validate(path, body.model, body.bands, body.stride, **inputs)
    return _all_or_nothing(
        svc,
        [
            (
                lambda u=uri: svc.submitter.submit_uri(
                    owner, u, body.model, body.bands, body.stride, batch, **inputs
                )
            )
            for uri in body.uris
        ],
        batch,
    )


def _upload_batch(svc: Services, owner: str, upload: Upload, batch: str) -> list[Job]:
    scenes = [f for f in upload.files if f.field == "scene"]
    if not scenes:
        raise InvalidInput("expected one or more file parts named 'scene'")
    model, bands, stride = (
        required_field(upload, "model"),
        upload.fields.get("bands") or None,
        form_int(upload, "stride"),
    )
    inputs = form_inputs(upload)
    for f in scenes:  # validate all before recording any
        svc.submitter.validate(f.path, model, bands, stride, shown_as=f.filename, **inputs)
    return _all_or_nothing(
        svc,
        [
            (lambda f=f: svc.submitter.submit_upload(owner, f, model, bands, stride, batch, **inputs))
            for f in scenes
        ],
        batch,
    )


@router.post("", status_code=202, response_model=BatchOut, openapi_extra=_BATCH_BODY)
async def submit_batch(request: Request, svc: ServicesDep, owner: CallerDep) -> BatchOut:
    batch = new_id("b")
    if is_json(request):
        body = await json_body(request, BatchSubmission)
        jobs = await anyio.to_thread.run_sync(
            _uri_batch, svc, owner, body, batch, limiter=svc.submitter.check_slots
        )
    else:
        # Any number of scenes, each under the cap: nothing to check the Content-Length against, so the
        # per-scene cap is enforced while streaming.
        upload = await receive_upload(request, svc, scenes=None)
        try:
            jobs = await anyio.to_thread.run_sync(
                _upload_batch, svc, owner, upload, batch, limiter=svc.submitter.check_slots
            )
        finally:
            upload.discard()
    svc.metrics.jobs_submitted.inc(len(jobs))
    return BatchOut(id=batch, jobs=[accepted(j, request) for j in jobs])


@router.get("/{batch_id}", response_model=BatchStatus)
def batch_status(batch_id: str, request: Request, svc: ServicesDep, owner: CallerDep) -> BatchStatus:
    ids = [x.decode() for x in svc.client.lrange(f"{PREFIX}:batch:{batch_id}", 0, -1)]
    jobs = [j for j in (svc.store.find(i) for i in ids) if j is not None and j.owner == owner]
    if not jobs:
        raise NotFound(f"no batch {batch_id!r}")
    return BatchStatus(
        id=batch_id, jobs=[JobOut.of(j, svc.store.failures(j.id), base_url(request)) for j in jobs]
    )
