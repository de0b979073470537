"""``/v1/batches``: many scenes in one request, each accepted or refused on its own.

A batch answers 202 with the jobs of the scenes accepted and ``errors``: each refused scene with the status
and error a single submission of it would have got. Only when no scene is accepted is the batch itself refused
(with the first error's status, its message naming every scene's problem)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
import redis
from fastapi import APIRouter, Request

from service.deps import AdmittedCallerDep, CallerDep, Services, ServicesDep, base_url
from service.errors import status_for
from service.routes.jobs import (
    accepted,
    form_inputs,
    form_int,
    is_json,
    json_body,
    receive_upload,
    required_field,
)
from service.schemas import (
    ERROR_RESPONSES,
    BatchOut,
    BatchStatus,
    BatchSubmission,
    ErrorDetail,
    JobOut,
    SceneError,
)
from service.storage import Upload
from spikescan.errors import InvalidInput, NotFound, SpikescanError, option
from workers import aoi as aois
from workers.jobs import Job, new_id

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
                        "aoi": {"type": "string", "description": "GeoJSON text: one AOI for every scene"},
                    },
                }
            },
        },
    }
}


class _Outcome:
    """What became of each scene of one batch: the jobs accepted, and the scenes refused with their error."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.refused: list[tuple[str, SpikescanError]] = []

    def errors(self) -> list[SceneError]:
        return [
            SceneError(
                scene=scene, status=status_for(exc), error=ErrorDetail(code=exc.code, message=exc.message)
            )
            for scene, exc in self.refused
        ]

    def none_accepted(self) -> SpikescanError:
        """The refusal of a batch whose every scene was refused: the first error's kind, naming them all."""
        first = self.refused[0][1]
        messages = list(dict.fromkeys(exc.message for _scene, exc in self.refused))
        if len(messages) == 1:  # one reason for all (a broken model, say): as a single submission says it
            return type(first)(messages[0])
        return type(first)(f"no scene of the batch was accepted: {'; '.join(messages)}")


def _each_on_its_own(svc: Services, scenes: list[tuple[str, Callable[[], Job]]], batch: str) -> _Outcome:
    """Submit every scene by itself: a scene our checks refuse is noted and the rest go on. Only a failure of
    the infrastructure (Redis, the disk) stops the batch, and then the jobs recorded so far are withdrawn."""
    outcome = _Outcome()
    try:
        for scene, submit in scenes:
            try:
                outcome.jobs.append(submit())
            except SpikescanError as exc:
                outcome.refused.append((scene, exc))
    except BaseException:
        for job in outcome.jobs:
            # Redis at its memory cap refuses the move (a write) but not the delete (which frees memory), and
            # a worker that finds the job gone drops it all the same.
            with contextlib.suppress(redis.OutOfMemoryError):
                svc.store.move(job.id, "cancelled", error="batch rejected")
            svc.store.delete(job)
            svc.store.remove_files(job.id)
        raise
    if outcome.jobs:
        svc.store.record_batch(batch, [j.id for j in outcome.jobs])
    return outcome


def _uri_batch(svc: Services, owner: str, body: BatchSubmission, batch: str) -> _Outcome:
    inputs = body.model_dump(include={"scale", "nodata", "min_score", "nms_iou"})
    aoi = aois.parse(body.aoi, option("aoi")) if body.aoi is not None else None  # one AOI, every scene
    return _each_on_its_own(
        svc,
        [
            (
                uri,
                lambda u=uri: svc.submitter.submit_uri(
                    owner, u, body.model, body.bands, body.stride, batch, aoi=aoi, **inputs
                ),
            )
            for uri in body.uris
        ],
        batch,
    )


def _upload_batch(svc: Services, owner: str, upload: Upload, batch: str) -> _Outcome:
    scenes = [f for f in upload.files if f.field == "scene"]
    if not scenes:
        raise InvalidInput("expected one or more file parts named 'scene'")
    model, bands, stride = (
        required_field(upload, "model"),
        upload.fields.get("bands") or None,
        form_int(upload, "stride"),
    )
    inputs = form_inputs(upload)
    raw_aoi = upload.fields.get("aoi", "").strip()
    aoi = aois.from_text(raw_aoi, option("aoi")) if raw_aoi else None
    return _each_on_its_own(
        svc,
        [
            (
                f.filename or "upload",
                lambda f=f: svc.submitter.submit_upload(
                    owner, f, model, bands, stride, batch, aoi=aoi, **inputs
                ),
            )
            for f in scenes
        ],
        batch,
    )


@router.post("", status_code=202, response_model=BatchOut, openapi_extra=_BATCH_BODY)
async def submit_batch(request: Request, svc: ServicesDep, owner: AdmittedCallerDep) -> BatchOut:
    batch = new_id("b")
    if is_json(request):
        body = await json_body(request, BatchSubmission)
        outcome = await anyio.to_thread.run_sync(
            _uri_batch, svc, owner, body, batch, limiter=svc.submitter.check_slots
        )
    else:
        # Any number of scenes, each under the cap: nothing to check the Content-Length against, so the
        # per-scene cap is enforced while streaming.
        upload = await receive_upload(request, svc, scenes=None)
        try:
            outcome = await anyio.to_thread.run_sync(
                _upload_batch, svc, owner, upload, batch, limiter=svc.submitter.check_slots
            )
        finally:
            upload.discard()
    if not outcome.jobs:
        raise outcome.none_accepted()
    svc.metrics.jobs_submitted.inc(len(outcome.jobs))
    return BatchOut(id=batch, jobs=[accepted(j, request, svc) for j in outcome.jobs], errors=outcome.errors())


@router.get("/{batch_id}", response_model=BatchStatus)
def batch_status(batch_id: str, request: Request, svc: ServicesDep, owner: CallerDep) -> BatchStatus:
    ids = svc.store.batch_jobs(batch_id)
    jobs = [j for j in (svc.store.find(i) for i in ids) if j is not None and j.owner == owner]
    if not jobs:
        raise NotFound(f"no batch {batch_id!r}")
    return BatchStatus(
        id=batch_id,
        jobs=[JobOut.of(j, svc.store.failures(j.id), base_url(request), svc.signer) for j in jobs],
    )
