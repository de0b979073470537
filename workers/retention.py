"""The retention sweep: a finished job whose record expired (``SPIKESCAN_RESULT_TTL_S``) loses its files.

Redis expires the record itself (``JobStore.move`` sets the TTL when the job finishes); what Redis cannot
expire — the job's objects in storage, its entries in the job index and the owners' sets — is removed here.
Any worker runs it now and then; it is idempotent, so several workers sweeping at once do no harm.
"""

from __future__ import annotations

import logging

from workers.jobs import JobStore
from workers.queue import PREFIX

log = logging.getLogger("spikescan.retention")
_PAGE = 500


def sweep(store: JobStore) -> list[str]:
    """Forget every indexed job whose record is gone; returns their ids."""
    client = store.client
    ids = [x.decode() for x in client.zrange(f"{PREFIX}:jobs", 0, -1)]
    gone: list[str] = []
    for i in range(0, len(ids), _PAGE):
        page = ids[i : i + _PAGE]
        pipe = client.pipeline(transaction=False)
        for job_id in page:
            pipe.exists(store.key(job_id))
        gone += [job_id for job_id, alive in zip(page, pipe.execute(), strict=True) if not alive]
    if not gone:
        return []
    for job_id in gone:
        # Files first: should the store be down, the index still names the job and the next sweep retries.
        store.remove_files(job_id)
    owners = list(client.scan_iter(match=f"{PREFIX}:owner:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for job_id in gone:
        pipe.delete(*(store.key(job_id, p) for p in ("queued", "done", "failed", "failures", "rows")))
    for owner in owners:
        pipe.srem(owner, *gone)
    pipe.zrem(f"{PREFIX}:jobs", *gone)
    pipe.execute()
    log.info("retention: removed %d expired job(s)", len(gone))
    return gone
