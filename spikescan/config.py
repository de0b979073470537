"""All configuration in one pydantic-settings class, read from ``SPIKESCAN_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache() -> Path:
    return Path.home() / ".cache" / "spikescan"


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    return value


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
    max_upload_mb: int = 2048
    # Pixels per band a scene's header may claim; checked before any pixel is read, so a tiny file claiming
    # 10^6 x 10^6 cannot start a job of 10^9 chips. 4e10 is 200k x 200k: above the largest single-file
    # orthomosaics and satellite strips users bring (a 100k x 100k 10 cm mosaic is 10 x 10 km), while work
    # and output size still scale with it. Tile a larger scene, or raise this.
    max_scene_pixels: int = Field(default=40_000_000_000, ge=1)
    backend: str = "emulator"
    # A SpiNNaker board for the `spinnaker` backend: its address, or a spalloc server that shares boards out
    # (with the user name spalloc wants). Neither set: the backend refuses, the emulator computes the same.
    spinnaker_machine: str | None = None
    spalloc_server: str | None = None
    spalloc_user: str = "spikescan"
    spinnaker_boards: int = 1
    batch_size: int = 64
    # Chips that failed this many deliveries go to the dead-letter list.
    max_chip_attempts: int = 3
    # A chip held longer than this by a silent worker is reclaimed by another.
    chip_claim_timeout_s: float = 60.0

    @field_validator("input_roots", "api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)


def get_settings() -> Settings:
    return Settings()
