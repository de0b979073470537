"""All configuration in one pydantic-settings class, read from ``SPIKESCAN_*`` environment variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache() -> Path:
    return Path.home() / ".cache" / "spikescan"


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    return value


# A path list separator (``:`` on POSIX, as in $PATH) where the next root begins: an absolute path or a URL.
# Not a scheme's ``://`` nor a port's ``:8080/``, which are followed by neither.
_PATHSEP = re.compile(re.escape(os.pathsep) + r"(?=\s*/(?!/)|\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def _split_roots(value: object) -> object:
    """Input roots: comma- (or semicolon-) separated as documented, and ``os.pathsep``-separated as a shell
    user writes path lists (``/data/a:/data/b``); URL prefixes such as ``s3://bucket/`` stay whole."""
    parts = _split(value)
    if isinstance(parts, list):
        return [p.strip() for part in parts for p in _PATHSEP.split(str(part)) if p.strip()]
    return parts


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPIKESCAN_", extra="ignore")

    # Where jobs, uploads and results live; shared between API and workers in production.
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / "spikescan-data")
    # Fetched training/demo data; outside git, reused across clones on one machine.
    cache_dir: Path = Field(default_factory=_default_cache)
    # Extra model packages beyond the shipped zoo.
    models_dir: Path | None = None
    redis_url: str | None = None
    # Where the API may read scenes a caller names (workers.roots): directories, or URL prefixes such as
    # https://host/scenes/ and s3://bucket/prefix/. Strings, not paths: a Path would fold "s3://" to "s3:/".
    input_roots: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Signed result URLs (service/signing.py): the HMAC secret (default: derived from the API keys) and how
    # long a link works.
    url_signing_secret: SecretStr | None = None
    signed_url_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    # The server's address as clients reach it (behind an ingress or proxy), e.g. https://scan.example.org:
    # absolute links (job records, STAC items) are built on it. Unset: on the address each request came to.
    public_url: str | None = None
    max_upload_mb: int = 2048
    # Pixels per band a scene's header may claim; checked before any pixel is read, so a tiny file claiming
    # 10^6 x 10^6 cannot start a job of 10^9 chips. 4e10 is 200k x 200k: above the largest single-file
    # orthomosaics and satellite strips users bring (a 100k x 100k 10 cm mosaic is 10 x 10 km), while work
    # and output size still scale with it. Tile a larger scene, or raise this.
    max_scene_pixels: int = Field(default=40_000_000_000, ge=1)
    backend: str = "emulator"
    # A basemap for the web map, e.g. an intranet XYZ server "https://tiles.example/{z}/{x}/{y}.png". Off by
    # default: the map then fetches nothing from outside this server (the scene itself is the context).
    basemap_url: str | None = None
    basemap_attribution: str = ""
    # A SpiNNaker board for the `spinnaker` backend: its address, or a spalloc server that shares boards out
    # (with the user name spalloc wants). Neither set: the backend refuses, the emulator computes the same.
    spinnaker_machine: str | None = None
    spalloc_server: str | None = None
    spalloc_user: str = "spikescan"
    spinnaker_boards: int = 1
    batch_size: int = 64
    # CPU threads one worker's emulator may use (onnxruntime's intra-op pool): set it to the CPUs the worker
    # is given (a pod's CPU request), with OMP/OpenBLAS/MKL_NUM_THREADS alike, so that workers sharing a node
    # do not each run a pool as wide as the node.
    threads: int = Field(default=1, ge=1)
    # The library that runs the emulator's int8 graph (models.int8.choose_engine): auto takes OpenVINO on CPUs
    # with AMX-INT8 (its oneDNN kernels measured 1.6-2x onnxruntime's there) and onnxruntime elsewhere. Both
    # compute the same integers; a graph the chosen one refuses runs on the emulator's own kernels.
    int8_engine: Literal["auto", "onnxruntime", "openvino"] = "auto"
    # Where uploads, per-chip results and outputs live (workers.objectstore): unset, the data dir; a
    # directory; or s3://bucket/prefix (obstore and GDAL read the standard AWS_* environment, AWS_ENDPOINT_URL
    # for S3-compatible stores), so that hosts share only Redis and the bucket.
    storage_url: str | None = None
    # How long a finished (done, failed, cancelled) job's record and outputs are kept: its Redis keys expire
    # then, and the next sweep (workers.retention) deletes its files. 0 keeps them until DELETE.
    result_ttl_s: int = Field(default=7 * 24 * 3600, ge=0)
    # Back-pressure: the API refuses new jobs and uploads (429 queue_full, with Retry-After) once Redis's
    # used_memory passes this fraction of its maxmemory, so the jobs already accepted keep the headroom they
    # need to finish (chip bookkeeping grows while they run) and Redis never reaches its cap and refuses a
    # worker's write. No effect on a Redis without maxmemory.
    redis_memory_high_water: float = Field(default=0.8, gt=0, le=1)
    # How long the API trusts its last look at Redis's INFO memory and at the object store before looking
    # again: one probe per interval, not one per request.
    admission_check_s: float = Field(default=2.0, ge=0)
    # A file `spikescan worker` touches every few seconds while its loop (or a long task) makes progress: a
    # liveness/readiness probe checks its age (deploy/workers.yaml). Private to the worker (its /tmp), never
    # on a shared volume. Unset: no file.
    worker_alive_file: Path | None = None
    # Chips that failed this many deliveries go to the dead-letter list.
    max_chip_attempts: int = 3
    # A chip held longer than this by a silent worker is reclaimed by another.
    chip_claim_timeout_s: float = 60.0

    @field_validator("api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.match(r"https?://[^/\s]+", value.strip()):
            raise ValueError(f"SPIKESCAN_PUBLIC_URL must be an absolute http(s) URL, got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("input_roots", mode="before")
    @classmethod
    def _path_list(cls, value: object) -> object:
        roots = _split_roots(value)
        # A relative root would depend on the server's working directory: refused at start-up, by name.
        relative = [str(r) for r in roots if "://" not in str(r) and not os.path.isabs(r)] if isinstance(
            roots, list
        ) else []
        if relative:
            raise ValueError(
                f"SPIKESCAN_INPUT_ROOTS must hold absolute paths or URL prefixes, separated by commas or "
                f"{os.pathsep!r}; not absolute: {', '.join(relative)}"
            )
        return roots


def get_settings() -> Settings:
    return Settings()
