"""Signed result URLs (``service.signing``): a job's files and tiles with no API key header.

The token in the path stands in for the key: it is checked against the job's id and owner, and then the very
same handlers as ``/v1/jobs/{id}/results/...`` and ``/tiles/...`` answer (HTTP Range included). Only reads:
nothing here can cancel, delete or list.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from service.deps import ServicesDep, base_url
from service.routes import results
from service.schemas import ERROR_RESPONSES
from spikescan.errors import NotFound
from workers.jobs import Job

router = APIRouter(prefix="/v1/jobs/{job_id}/signed/{token}", tags=["results"], responses=ERROR_RESPONSES)


def signed_job(job_id: str, token: str, svc: ServicesDep) -> Job:
    if svc.signer is None:  # an open server signs nothing: its plain URLs need no key
        raise NotFound("this server does not sign URLs (no API keys configured): use the plain links")
    job = svc.store.get(job_id)
    svc.signer.verify(token, job.id, job.owner)
    return job


SignedJob = Annotated[Job, Depends(signed_job)]


@router.api_route("/results/{name}", methods=["GET", "HEAD"], response_class=FileResponse)
def signed_result(name: str, token: str, job: SignedJob, svc: ServicesDep, request: Request) -> Response:
    """A result file, as ``GET /v1/jobs/{id}/results/{name}``, authorised by the URL's signature; the STAC
    Item's asset hrefs are signed URLs too, so a client given the Item's link needs no key for its files."""
    signed = f"{base_url(request)}/v1/jobs/{job.id}/signed/{token}/results"
    return results.result_response(name, job, svc, request, signed)


@router.get(
    "/tiles/{z}/{x}/{y}.png", response_class=Response, responses={200: {"content": {"image/png": {}}}}
)
async def signed_tile(
    z: int,
    x: int,
    y: int,
    job: SignedJob,
    svc: ServicesDep,
    layer: Annotated[str, Query(description=results.LAYER_HELP)] = "classes",
    klass: Annotated[str | None, Query(alias="class", description=results.CLASS_HELP)] = None,
) -> Response:
    """A map tile, as ``GET /v1/jobs/{id}/tiles/{z}/{x}/{y}.png`` (any ``layer``), authorised by the URL's
    signature."""
    return await results.tile(z=z, x=x, y=y, job=job, svc=svc, layer=layer, klass=klass)
