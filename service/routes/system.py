"""Liveness/readiness, Prometheus metrics and the models this server can run."""

from __future__ import annotations

import logging
from importlib.metadata import version

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from models import package
from service.deps import CallerDep, ServicesDep
from service.schemas import ERROR_RESPONSES, Health, ModelOut
from spikescan.errors import ModelPackageError
from workers.redis_server import persistence

router = APIRouter(tags=["system"], responses=ERROR_RESPONSES)
log = logging.getLogger("spikescan.service")


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(svc: ServicesDep) -> JSONResponse:
    """200 when Redis answers (the API can accept and report jobs), 503 otherwise."""
    try:
        ok = bool(svc.client.ping())
        mode = persistence(svc.client)
    except redis.RedisError:
        ok, mode = False, "unknown"
    body = Health(
        status="ok" if ok else "unavailable", redis=ok, version=version("spikescan"), persistence=mode
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(svc: ServicesDep) -> Response:
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", response_model=list[ModelOut])
def models(svc: ServicesDep, owner: CallerDep) -> list[ModelOut]:
    out = []
    for path in package.available(svc.settings.models_dir):
        try:
            pkg = package.load(path)
        except ModelPackageError as exc:
            # Left out rather than flagged: nobody can run it, and clients (the web map) offer every model
            # listed. The operator finds why in the log; a job naming it gets a 503 that says why.
            log.warning("GET /v1/models: leaving out %s: %s", path.name, exc.message)
            continue
        c = pkg.card
        out.append(
            ModelOut(
                name=c.name,
                id=pkg.id,
                version=c.version,
                task=c.task,
                classes=c.classes,
                colors=c.colors,
                target_classes=c.target_classes,
                bands=[b.name for b in c.bands],
                gsd_m=c.gsd_m,
                patch_size=c.patch_size,
            )
        )
    return out
