"""API keys: ``SPIKESCAN_API_KEYS`` (comma-separated), kept only as sha256 digests; each key owns its jobs.

A request names its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The caller's identity is
the first 16 hex digits of the key's digest; jobs are recorded under it, and a job of another owner is
answered exactly like a job that does not exist (404), so ids cannot be probed.

With no keys configured the server is open, every caller is the owner ``local``, and ``spikescan serve``
binds to the loopback interface only (see ``service.serve``).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from spikescan.errors import NotFound, Unauthorized

OPEN_OWNER = "local"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Keyring:
    def __init__(self, keys: list[str]) -> None:
        # Plain keys are dropped here; only digests stay in memory.
        self._digests = [digest(k) for k in keys if k]

    @property
    def open(self) -> bool:
        return not self._digests

    def owner(self, presented: str | None) -> str:
        if self.open:
            return OPEN_OWNER
        if not presented:
            raise Unauthorized("an API key is required (Authorization: Bearer <key> or X-API-Key)")
        d = digest(presented)
        if not any(hmac.compare_digest(d, known) for known in self._digests):
            raise Unauthorized("API key not recognised")
        return d[:16]


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require_owner(job_owner: str, caller: str, job_id: str) -> None:
    if job_owner != caller:
        raise NotFound(f"no job {job_id!r}")
