"""Where a scene comes from: the one place that turns a user's reference into something GDAL opens.

rio-tiler's ``Reader(input: str)`` idea: everything downstream (``workers.scene``, the input check, the
chipper, the inference workers, the API's checks) hands a reference to ``resolve`` and opens the result with
``open_dataset``; nothing else knows about URLs, buckets or STAC.

* a local path (or ``file://``): opened as it is;
* ``https://`` / ``http://`` and ``/vsicurl/…``: GDAL range reads through /vsicurl/, the URL untouched (a
  ``Path`` would fold ``//`` and break it). One ranged GET first, redirects not followed, to answer in the
  user's terms before GDAL does: not found, access denied, unreachable, a server that ignores ``Range``
  (GDAL would then download the whole file for every block), a redirect to another host, not a TIFF;
* ``s3://bucket/key`` and ``/vsis3/…``: GDAL's /vsis3/, credentials from the standard ``AWS_*`` environment,
  which GDAL reads itself; ``AWS_ENDPOINT_URL`` (the AWS SDKs' name for an S3-compatible store; not GDAL's)
  becomes GDAL's ``AWS_S3_ENDPOINT``/``AWS_HTTPS``/path-style addressing;
* a STAC Item (``.json`` path or URL, or inline JSON): ``workers.stac_input`` stacks its band assets.

Remote scenes are GeoTIFFs only: any other driver would let a crafted file make GDAL fetch further URLs.
Sizes are checked from the header (``workers.scene``) before a pixel is read. Every open and every read of a
remote scene runs inside ``SceneSource.env()``: GDAL reads its HTTP options per thread (rasterio sets them
thread-locally outside the main thread), and a VRT opens its band files lazily, on the first read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from spikescan.errors import InvalidScene, SceneUnreachable

Kind = Literal["file", "http", "s3", "vsi", "stac"]
GEOTIFF_SUFFIXES = (".tif", ".tiff")
# What a file that is not a TIFF most often is, from its first bytes: for a message better than GDAL's.
SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"<", "an XML or HTML document (a GDAL VRT, say)"),
    (b"{", "a JSON document"),
)
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
PREFLIGHT_TIMEOUT_S = 15.0
# GDAL's options for every remote read. Why each:
REMOTE_OPTIONS = {
    # No directory listing and no probes for sidecars (.aux.xml, .ovr, .msk): a COG carries its own
    # overviews and masks, and each probe is a request (a listing of an S3 prefix may be thousands).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # /vsicurl/ fetches nothing but GeoTIFFs, whatever a file's header points at.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ",".join(GEOTIFF_SUFFIXES),
    # A COG's header and tile index in the first request, not a dozen 16 kB ones.
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    # Object stores answer 429/5xx under load: retry a few times with backoff rather than fail a whole job.
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "120",
    # A signed request must never be replayed with its Authorization header to wherever a redirect points.
    "CPL_VSIL_CURL_AUTHORIZATION_HEADER_ALLOWED_IF_REDIRECT": "NO",
}


@dataclass(frozen=True)
class SceneSource:
    """A scene reference resolved: ``ref`` as the user gave it (every message names it), ``gdal_path`` what
    rasterio opens, ``driver`` the one GDAL driver allowed (None: any, for the CLI's local files)."""

    ref: str
    gdal_path: str
    kind: Kind
    driver: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    label: str = ""  # the scene's name where the reference does not end in one (a STAC Item's id)

    @property
    def remote(self) -> bool:
        return self.kind in ("http", "s3", "stac")

    @property
    def name(self) -> str:
        """The file's own name, for item ids and the report: the last path segment, no query string."""
        if self.label:
            return self.label
        if self.kind == "file":
            return Path(self.ref).name
        return url_file_name(self.ref)

    def env(self) -> AbstractContextManager[object]:
        """The GDAL configuration every open and read of this scene needs (nothing for a local file)."""
        return rasterio.Env(**self.options) if self.options else nullcontext()


def url_file_name(url: str) -> str:
    """A URL's last path segment, unquoted, without the query string ("scene" if it has none)."""
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]) or "scene"


def resolve(ref: str | Path | SceneSource, *, geotiff_only: bool = False) -> SceneSource:
    """What ``ref`` names, checked as far as can be without GDAL: a local file exists and is not empty; a
    URL answers a ranged GET with the start of a TIFF. STAC Items are left to ``workers.stac_input``."""
    if isinstance(ref, SceneSource):
        return ref
    if isinstance(ref, Path):
        return _local(str(ref), ref, geotiff_only)
    text = ref
    if text.startswith("/vsicurl/"):
        return http_source(text.removeprefix("/vsicurl/"), shown_as=text)
    if text.startswith("/vsis3/"):
        return s3_source("s3://" + text.removeprefix("/vsis3/"), shown_as=text)
    if text.startswith("/vsi"):
        if geotiff_only:
            raise InvalidScene(f"{text}: GDAL virtual file systems are not accepted here")
        return SceneSource(text, text, "vsi")
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return http_source(text)
    if scheme == "s3":
        return s3_source(text)
    if scheme == "file":
        return _local(text, Path(unquote(urlsplit(text).path)), geotiff_only)
    if scheme and len(scheme) > 1:  # one letter: a Windows drive, a path after all
        raise InvalidScene(f"{text}: unsupported scheme {scheme!r} (give a path, an https:// or s3:// URL)")
    return _local(text, Path(text), geotiff_only)


def is_stac(ref: str | Path) -> bool:
    """Whether ``ref`` names a STAC Item rather than a raster: inline JSON, or a ``.json``/``.geojson``."""
    text = str(ref).strip()
    if text.startswith("{"):
        return True
    path = urlsplit(text).path if "://" in text else text
    return path.lower().endswith((".json", ".geojson"))


# --- local files ------------------------------------------------------------------------------------------
def _local(ref: str, path: Path, geotiff_only: bool) -> SceneSource:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidScene(f"{ref}: no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise InvalidScene(f"{ref}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if size == 0:
        raise InvalidScene(f"{ref}: the file is empty (0 bytes)")
    return SceneSource(ref, str(path), "file", "GTiff" if geotiff_only else None)


def sniff(head: bytes) -> str | None:
    """What a file that is not a TIFF is, from its first bytes; None when they do not say."""
    return next((kind for magic, kind in SIGNATURES if head.lstrip().startswith(magic)), None)


def sniff_source(source: SceneSource) -> str | None:
    """``sniff`` for a local file (remote files were sniffed by their preflight already)."""
    if source.kind != "file":
        return None
    try:
        with open(source.gdal_path, "rb") as fh:
            return sniff(fh.read(16))
    except OSError:
        return None  # GDAL's own message says enough


# --- HTTP -------------------------------------------------------------------------------------------------
def http_source(url: str, *, shown_as: str | None = None) -> SceneSource:
    """An http(s) GeoTIFF, after one ranged GET: the URL GDAL gets is the one checked (a same-host redirect
    is followed here, once, so that GDAL never follows one itself)."""
    shown = shown_as or url
    _check_geotiff_name(shown, urlsplit(url).path)
    final = _preflight(url, shown)
    return SceneSource(shown, "/vsicurl/" + final, "http", "GTiff", dict(REMOTE_OPTIONS))


def _check_geotiff_name(shown: str, path: str) -> None:
    if not unquote(path).lower().endswith(GEOTIFF_SUFFIXES):
        raise InvalidScene(
            f"{shown}: only GeoTIFFs are read from URLs and buckets (a name ending in .tif or .tiff)"
        )


def _preflight(url: str, shown: str, redirects: int = 3) -> str:
    try:
        with (
            httpx.Client(timeout=PREFLIGHT_TIMEOUT_S, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Range": "bytes=0-15"}) as resp,
        ):
            head = b""
            if resp.status_code in (200, 206):
                for chunk in resp.iter_bytes():
                    head += chunk
                    if len(head) >= 16:
                        break
            status, location = resp.status_code, resp.headers.get("location")
    except httpx.HTTPError as exc:
        raise SceneUnreachable(f"{shown}: unreachable ({type(exc).__name__}: {exc})") from None
    if status in (301, 302, 303, 307, 308) and location:
        target = urljoin(url, location)
        if not _same_origin(url, target):
            raise InvalidScene(
                f"{shown}: redirects to another host ({urlsplit(target).netloc}); redirects are not "
                "followed across hosts: give the final URL (under an accepted input root)"
            )
        if redirects == 0:
            raise InvalidScene(f"{shown}: too many redirects")
        return _preflight(target, shown, redirects - 1)
    check_status(shown, status)
    if status == 200:
        raise InvalidScene(
            f"{shown}: the server ignores HTTP Range requests (answered 200 with the whole file); "
            "scenes are read in parts: serve it from a server or bucket that honours Range"
        )
    _check_tiff_head(shown, head[:16])
    return url


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme.lower(), pa.hostname, pa.port) == (pb.scheme.lower(), pb.hostname, pb.port)


def check_status(shown: str, status: int) -> None:
    if status in (200, 206):
        return
    reason = {
        401: "access denied (HTTP 401: credentials needed)",
        403: "access denied (HTTP 403)",
        404: "not found (HTTP 404)",
        410: "gone (HTTP 410)",
        416: "the file is empty (HTTP 416 for its first bytes)",
    }.get(status)
    if reason is None:
        raise SceneUnreachable(f"{shown}: the server answered HTTP {status}")
    raise InvalidScene(f"{shown}: {reason}")


def _check_tiff_head(shown: str, head: bytes) -> None:
    if not head:
        raise InvalidScene(f"{shown}: the file is empty (0 bytes)")
    if not head.startswith(TIFF_MAGIC):
        kind = sniff(head)
        raise InvalidScene(f"{shown}: not a GeoTIFF" + (f": the file is {kind}" if kind else ""))


# --- S3 ---------------------------------------------------------------------------------------------------
def s3_source(url: str, *, shown_as: str | None = None) -> SceneSource:
    parts = urlsplit(url)
    shown = shown_as or url
    if not parts.netloc or not parts.path.strip("/"):
        raise InvalidScene(f"{shown}: an s3:// URL names a bucket and a key (s3://bucket/path/scene.tif)")
    _check_geotiff_name(shown, parts.path)
    return SceneSource(
        shown, f"/vsis3/{parts.netloc}{parts.path}", "s3", "GTiff", REMOTE_OPTIONS | s3_options(os.environ)
    )


def s3_options(environ: Mapping[str, str]) -> dict[str, str]:
    """GDAL's names for an S3-compatible endpoint given the AWS SDKs' way (``AWS_ENDPOINT_URL``, or the
    S3-specific ``AWS_ENDPOINT_URL_S3``). An explicit ``AWS_S3_ENDPOINT`` (GDAL's own) wins. Credentials and
    region GDAL reads from the same environment itself."""
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if not endpoint or environ.get("AWS_S3_ENDPOINT"):
        return {}
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidScene(f"AWS_ENDPOINT_URL={endpoint!r}: expected http(s)://host[:port]")
    return {
        "AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/"),
        "AWS_HTTPS": "YES" if parts.scheme == "https" else "NO",
        # S3-compatible servers (MinIO, moto, Ceph) address buckets by path, not by host name.
        "AWS_VIRTUAL_HOSTING": environ.get("AWS_VIRTUAL_HOSTING", "FALSE"),
    }


# --- opening ----------------------------------------------------------------------------------------------
def open_dataset(source: SceneSource) -> rasterio.DatasetReader:
    """``source`` opened by GDAL (headers only), or an ``InvalidScene`` naming ``source.ref``."""
    try:
        with source.env(), warnings.catch_warnings():
            # Ungeoreferenced scenes are refused by workers.scene, with a message naming the file.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(source.gdal_path, driver=source.driver)
    except RasterioError as exc:
        raise _open_error(source, exc) from None


def _open_error(source: SceneSource, exc: Exception) -> InvalidScene:
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if source.kind == "s3":
        if "403" in text or "AccessDenied" in text or "InvalidAccessKeyId" in text or "Signature" in text:
            return InvalidScene(f"{source.ref}: access denied (check the AWS_* credentials)")
        if "does not exist" in text or "404" in text or "NoSuchKey" in text or "NoSuchBucket" in text:
            return InvalidScene(f"{source.ref}: no such object in the bucket")
        if "Could not resolve" in text or "Couldn't connect" in text or "Connection" in text:
            return SceneUnreachable(f"{source.ref}: the object store is unreachable ({first})")
    kind = sniff_source(source)
    if kind and source.driver == "GTiff":
        return InvalidScene(f"{source.ref}: not a GeoTIFF: the file is {kind}")
    return InvalidScene(f"{source.ref}: not a raster GDAL can read ({first})")


@contextmanager
def opened(source: SceneSource) -> Iterator[rasterio.DatasetReader]:
    """``open_dataset`` as a context manager that closes the dataset."""
    src = open_dataset(source)
    try:
        yield src
    finally:
        src.close()
