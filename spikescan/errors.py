"""The project's exceptions: one base, each also the matching built-in.

They are translated to responses in exactly two places: ``spikescan.cli`` (exit status 2 with a one-line
message) and ``service.errors`` (a 4xx JSON body). Everything below raises these and nothing else for the
caller's mistakes, so neither edge has to guess.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

# What the user sets, as each edge names it: the CLI's flag and the API's request field. Messages name an
# option with ``option("bands")`` (or ``option("scale", 0.0039)``) and each edge renders the text its own
# way (``render``), so a web user is never told to "pass --bands". The one table of both spellings.
OPTIONS: dict[str, tuple[str, str]] = {
    "bands": ("--bands", "bands"),
    "stride": ("--stride", "stride"),
    "scale": ("--scale", "scale"),
    "nodata": ("--nodata", "nodata"),
    "min_score": ("--min-score", "min_score"),
    "nms_iou": ("--nms-iou", "nms_iou"),
    "aoi": ("--aoi", "aoi"),
}
Edge = Literal["cli", "api"]
_OPTION = re.compile(r"\[\[option:([a-z_]+)(?:=([^\]]*))?\]\]")


def option(name: str, value: object = None) -> str:
    """A placeholder for option ``name`` (with an example ``value``) in a message; ``render`` spells it."""
    if name not in OPTIONS:
        raise KeyError(f"unknown option {name!r}: add it to spikescan.errors.OPTIONS")
    return f"[[option:{name}]]" if value is None else f"[[option:{name}={value}]]"


def render(text: str, edge: Edge = "cli") -> str:
    """``text`` with its option placeholders spelt for ``edge``: ``--scale 2`` or ``field `scale` = 2``."""

    def spell(m: re.Match[str]) -> str:
        flag, field = OPTIONS[m.group(1)]
        value = m.group(2)
        if edge == "cli":
            return flag if value is None else f"{flag} {value}"
        return f"field `{field}`" if value is None else f"field `{field}` = {value}"

    return _OPTION.sub(spell, text)


class SpikescanError(Exception):
    """Base of every error spikescan raises on purpose.

    ``raw`` is the text as written (option placeholders included); ``message`` is it as the CLI says it,
    ``for_api()`` as the HTTP API does."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.raw = message

    @property
    def message(self) -> str:
        return render(self.raw, "cli")

    def for_api(self) -> str:
        return render(self.raw, "api")

    def __str__(self) -> str:
        return self.message


class InvalidInput(SpikescanError, ValueError):
    """The caller gave something we cannot use (a bad argument, a bad request field)."""

    code = "invalid_input"


class InvalidScene(InvalidInput):
    """A raster that is not a readable, georeferenced image we can scan."""

    code = "invalid_scene"


class BandMismatch(InvalidScene):
    """The scene's bands cannot be matched to the bands the model expects."""

    code = "band_mismatch"


class ResolutionMismatch(InvalidScene):
    """The scene's ground sample distance is too far from the model's to resample honestly."""

    code = "resolution_mismatch"


class InputOutOfRange(InvalidScene):
    """Pixels far outside the model's training range (a 16-bit scene into an 8-bit model): rescale them."""

    code = "out_of_range"


class SceneTooLarge(InvalidScene):
    """A scene whose header claims more pixels than the configured limit (SPIKESCAN_MAX_SCENE_PIXELS)."""

    code = "scene_too_large"


class SceneUnreachable(InvalidScene):
    """A remote scene (URL, bucket) that could not be reached or answered with a server error."""

    code = "scene_unreachable"


class ModelPackageError(SpikescanError, ValueError):
    """A model package that is broken, tampered with, or not ours."""

    code = "invalid_model"


class UnknownModel(SpikescanError, LookupError):
    code = "unknown_model"


class NotFound(SpikescanError, LookupError):
    code = "not_found"


class Forbidden(SpikescanError, PermissionError):
    code = "forbidden"


class Unauthorized(SpikescanError, PermissionError):
    code = "unauthorized"


class SignatureInvalid(Unauthorized):
    """A signed result URL whose signature does not match (altered, or made for another job)."""

    code = "bad_signature"


class SignatureExpired(Forbidden):
    """A signed result URL past its expiry: the job record offers fresh ones."""

    code = "signature_expired"


class PayloadTooLarge(InvalidInput):
    code = "too_large"


class BackendUnavailable(SpikescanError, RuntimeError):
    """A backend that cannot run here (no board configured, optional stack not installed)."""

    code = "backend_unavailable"


class Unavailable(SpikescanError, RuntimeError):
    """The server cannot take this request now but can later: nothing was recorded, and the caller should
    repeat it after ``retry_after_s`` seconds (the HTTP edge sends that as ``Retry-After``). Never raised in
    a worker for a job's input: it is the server's state, not the caller's mistake."""

    code = "unavailable"
    retry_after_s = 10

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class QueueFull(Unavailable):
    """Back-pressure: Redis is near (or at) its memory cap, so new jobs wait until running ones drain it."""

    code = "queue_full"
    retry_after_s = 30  # jobs drain at the pace of inference: minutes, not seconds


class QueueUnavailable(Unavailable):
    """Redis is unreachable or restarting."""

    code = "queue_unavailable"
    retry_after_s = 5


class StorageDown(Unavailable):
    """The object store of ``SPIKESCAN_STORAGE_URL`` does not answer (down, unreachable, throttling)."""

    code = "storage_unavailable"


class DataUnavailable(SpikescanError, RuntimeError):
    """Packaged data could not be fetched or failed its checksum."""

    code = "data_unavailable"


class OutputError(SpikescanError, OSError):
    """Results could not be written (disk full, permissions)."""

    code = "output_error"


# The storage's fault, not one chip's: retrying cannot help until an operator acts.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full disk, an exceeded quota or a read-only volume under ``path`` into an ``OutputError`` that
    says so: a job fails at once with a message an operator can act on, instead of every chip being retried
    and dead-lettered one by one."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        raise OutputError(
            f"{path}: cannot write results: {os.strerror(exc.errno)}; free space on (or fix) that volume and "
            "resubmit the job"
        ) from None
