"""What every route needs, built once per app (``Services``) and handed out as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request

from service.admission import Admission
from service.auth import Keyring, presented_key, require_owner
from service.metrics import Metrics
from service.signing import UrlSigner
from service.submission import Submitter
from spikescan.config import Settings
from workers.jobs import Job, JobStore
from workers.queue import Streams


@dataclass
class Services:
    settings: Settings
    client: redis.Redis
    store: JobStore
    streams: Streams
    keyring: Keyring
    submitter: Submitter
    metrics: Metrics
    signer: UrlSigner | None  # signed result URLs; None on an open server
    admission: Admission  # back-pressure: new work refused before Redis or the store fills or fails

    @classmethod
    def build(cls, settings: Settings) -> Services:
        if not settings.redis_url:
            raise ValueError("create_app needs settings.redis_url (spikescan serve starts a private Redis)")
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=30, health_check_interval=30)
        store = JobStore.for_settings(client, settings)
        streams = Streams.open(client, settings.chip_claim_timeout_s, settings.max_chip_attempts)
        return cls(
            settings,
            client,
            store,
            streams,
            Keyring(settings.api_keys),
            Submitter(settings, store, streams.chip),
            Metrics(store, streams.all()),
            UrlSigner.from_settings(settings),
            Admission(client, store.objects, settings.redis_memory_high_water, settings.admission_check_s),
        )


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services)]


def caller(request: Request, svc: ServicesDep) -> str:
    """The owner id of the caller's API key (``local`` on an open server)."""
    return svc.keyring.owner(presented_key(request))


CallerDep = Annotated[str, Depends(caller)]


def admitted_caller(svc: ServicesDep, owner: CallerDep) -> str:
    """The caller of a request that adds work (a job, a batch, an upload), once back-pressure lets it in:
    after the key check (an unknown key is a 401 however busy the server is), before any body is read."""
    svc.admission.check()
    return owner


AdmittedCallerDep = Annotated[str, Depends(admitted_caller)]


def owned_job(job_id: str, svc: ServicesDep, owner: CallerDep) -> Job:
    job = svc.store.get(job_id)
    require_owner(job.owner, owner, job_id)
    return job


JobDep = Annotated[Job, Depends(owned_job)]


def base_url(request: Request) -> str:
    """Where links point: ``SPIKESCAN_PUBLIC_URL`` if set (the address behind an ingress), else the address
    the request came to."""
    public = services(request).settings.public_url
    return public or str(request.base_url).rstrip("/")
