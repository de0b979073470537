"""Signed result URLs: links to a job's files and tiles that work with no API key header, until they expire.

QGIS, GDAL's ``/vsicurl/``, a browser or a colleague given the link cannot send ``Authorization``; with API
keys on, the job record therefore also carries ``signed:<file>`` links of the form

    /v1/jobs/<id>/signed/<expires>.<signature>/results/<file>

The token sits in the path, not the query: GDAL looks for a raster's sidecars (``classes.tif.aux.xml``) by
appending to the URL, and a query string would be broken by that; in the path, one token covers every file of
the job, the sidecars and the ``{z}/{x}/{y}`` tiles alike. The signature is an HMAC-SHA256 over the job id,
its owner and the expiry, so it is good for one job of one owner only, and deleting the job revokes it.

The secret is ``SPIKESCAN_URL_SIGNING_SECRET``; without one it is derived from the API keys, so every replica
with the same keys agrees and rotating the keys invalidates the links. Expiry is
``SPIKESCAN_SIGNED_URL_TTL_S`` (default 7 days), rounded up to the hour so a job's links stay the same
between polls within that hour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from spikescan.config import Settings
from spikescan.errors import SignatureExpired, SignatureInvalid

_ROUND_S = 3600
_SIG_BYTES = 24  # 192 bits of the HMAC: far beyond guessing, short enough for a URL


class UrlSigner:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlSigner | None:
        """None on an open server (no API keys): its plain URLs already work without a header."""
        if not settings.api_keys:
            return None
        if settings.url_signing_secret is not None:
            secret = settings.url_signing_secret.get_secret_value().encode()
        else:
            material = "\0".join(sorted(settings.api_keys)).encode()
            secret = hashlib.sha256(b"spikescan signed result urls\0" + material).digest()
        return cls(secret, settings.signed_url_ttl_s)

    def expiry(self, now: float | None = None) -> int:
        t = (time.time() if now is None else now) + self.ttl_s
        return int(-(-t // _ROUND_S) * _ROUND_S) if self.ttl_s >= _ROUND_S else int(t)

    def token(self, job_id: str, owner: str, expires: int) -> str:
        return f"{expires}.{self._sign(job_id, owner, expires)}"

    def verify(self, token: str, job_id: str, owner: str, now: float | None = None) -> None:
        """Raise ``SignatureInvalid`` (tampered, another job's) or ``SignatureExpired``; return if good."""
        raw_expires, _, sig = token.partition(".")
        if not raw_expires.isdigit() or not sig:
            raise SignatureInvalid("malformed signed URL: expected /signed/<expires>.<signature>/...")
        expires = int(raw_expires)
        if not hmac.compare_digest(sig, self._sign(job_id, owner, expires)):
            raise SignatureInvalid("the URL's signature does not match (altered, or for another job)")
        if expires < (time.time() if now is None else now):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            raise SignatureExpired(f"this signed URL expired at {when}; GET the job again for fresh links")

    def _sign(self, job_id: str, owner: str, expires: int) -> str:
        msg = f"{job_id}\n{owner}\n{expires}".encode()
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()[:_SIG_BYTES]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
