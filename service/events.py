"""Server-sent events for one job: the status JSON whenever it changes, until the job reaches a final state.

Redis is polled (cheaply: one HGETALL) rather than subscribed to, so events work the same whichever worker
on whichever machine moved the job. A comment line every ``KEEPALIVE_S`` keeps proxies from closing an idle
stream while a long job mosaics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from service.deps import Services
from service.schemas import JobOut

POLL_S = 0.5
KEEPALIVE_S = 15.0


def _snapshot(svc: Services, job_id: str, base: str) -> JobOut | None:
    job = svc.store.find(job_id)
    return JobOut.of(job, svc.store.failures(job_id), base, svc.signer) if job else None


async def job_events(
    svc: Services, job_id: str, base: str, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    last = ""
    quiet_since = time.monotonic()
    while not await disconnected():
        out = await anyio.to_thread.run_sync(_snapshot, svc, job_id, base)
        if out is None:
            yield "event: deleted\ndata: {}\n\n"
            return
        # Rates and ETAs change every poll; only a change of the counts or state is news.
        key = out.model_copy(
            update={
                "progress": out.progress.model_copy(update={"chips_per_s": None, "eta_s": None}),
                "updated": 0.0,
            }
        ).model_dump_json()
        if key != last:
            last, quiet_since = key, time.monotonic()
            yield f"event: progress\nid: {int(out.updated * 1000)}\ndata: {out.model_dump_json()}\n\n"
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if out.status in ("done", "failed", "cancelled"):
            return
        await anyio.sleep(POLL_S)
