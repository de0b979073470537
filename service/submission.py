"""Accepting a job: resolve the model, open and validate the scene, then record and queue it — or nothing.

A scene is accepted only after ``workers.scene.open_scene`` (GeoTIFF, georeferenced, bands fit the model,
GSD within range) and a probe read of its middle and last model rows (a truncated file opens fine but fails
there). Any failure leaves no job record and no file: staged uploads are deleted by the caller, and a job
whose recording fails half way is rolled back here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
from rasterio.windows import Window

from models import package
from service.storage import StagedFile
from spikescan.config import Settings
from spikescan.errors import InvalidInput, ModelPackageError, UnknownModel
from workers import sources, stac_input
from workers.aoi import Aoi
from workers.chips import ChipGrid
from workers.input_check import InputOptions, job_fields, open_checked
from workers.jobs import Job, JobStore, new_id
from workers.queue import WorkStream
from workers.roots import InputRoots

# A bare name from the catalogue: never a path, so a caller cannot make the server load any directory.
VECTOR_FIELDS = ("min_score", "nms_iou")  # a detector's peak-picking overrides (models.tasks.VectorParams)
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Scene checks that may run at once (each takes ~50 ms). Each holds GDAL buffers and a warped-VRT block and
# grows a malloc arena in its thread: 20 uploads checked all at once cost the API ~50 MB more than 2 at a
# time, for no gain on a few cores. Callers waiting for a slot wait in the event loop, holding no thread.
CHECKS_AT_ONCE = 2
log = logging.getLogger("spikescan.service")


class Submitter:
    def __init__(self, settings: Settings, store: JobStore, chip_stream: WorkStream) -> None:
        self.settings = settings
        self.store = store
        self.chip_stream = chip_stream
        self.check_slots = anyio.CapacityLimiter(CHECKS_AT_ONCE)  # routes pass it to to_thread

    def check(
        self,
        scene: str | Path,
        model: str,
        bands: str | None,
        stride: int | None,
        shown_as: str | None = None,
        aoi: Aoi | None = None,
        **inputs: float | None,
    ) -> tuple[str, dict[str, str]]:
        """Check ``scene`` against ``model``: the model's package id and the job fields of the input check
        (``workers.input_check``: fill values, scale, normalisation statistics, early warnings); ``inputs``
        are ``scale`` and ``nodata``. A scene hopelessly outside the model's input range is refused here."""
        vector = {k: inputs.pop(k, None) for k in VECTOR_FIELDS}
        options = InputOptions(**inputs)
        if not _MODEL_NAME.fullmatch(model):
            raise UnknownModel(f"unknown model {model!r}: give a model name from GET /v1/models")
        pkg = self.load_model(model)
        card = pkg.card
        try:
            with open_checked(
                scene, card, bands, options, aoi, geotiff_only=True, max_pixels=self.settings.max_scene_pixels
            ) as s:
                ChipGrid.for_model(s.width, s.height, card.patch_size, card.output_stride, stride)
                for row in {s.height // 2, s.height - 1}:
                    s.read(Window(0, row, s.width, 1))
                fields = job_fields(s)
        except InvalidInput as exc:
            if shown_as and str(scene) in exc.raw:
                raise type(exc)(exc.raw.replace(str(scene), shown_as)) from None
            raise
        if shown_as:
            fields["warnings"] = fields["warnings"].replace(str(scene), shown_as)
        # Kept in the job record for the mosaicker (``Job.vector_params``) and every reader (``aoi``).
        fields.update({k: repr(float(v)) for k, v in vector.items() if v is not None})
        if aoi is not None:
            fields["aoi"] = aoi.to_json()
        return pkg.id, fields

    def load_model(self, model: str) -> package.ModelPackage:
        """A catalogue model; a broken package names the model, never the server's paths."""
        # Only the catalogue: ``package.resolve`` would also take the name as a directory under the server's
        # working directory, which is no business of a remote caller's.
        where = package.in_catalogue(model, self.settings.models_dir)
        if where is None:
            raise UnknownModel(f"unknown model {model!r}: give a model name from GET /v1/models")
        try:
            return package.load(where)
        except ModelPackageError as exc:
            # The caller cannot fix this, the operator can: the full message goes to the log.
            log.error("model %r is unusable: %s", model, exc.message)
            reason = exc.message.replace(str(where), model)
            raise ModelPackageError(
                f"model {model!r} failed its integrity check on this server ({reason}); "
                "ask the operator to reinstall it"
            ) from None

    def submit_upload(
        self,
        owner: str,
        staged: StagedFile,
        model: str,
        bands: str | None,
        stride: int | None,
        batch: str = "",
        aoi: Aoi | None = None,
        **inputs: float | None,
    ) -> Job:
        model_id, fields = self.check(
            staged.path, model, bands, stride, shown_as=staged.filename or "upload", aoi=aoi, **inputs
        )
        job_id = new_id()
        try:
            # Into the job's storage: a rename in the data dir, a streamed multipart upload to a bucket.
            key = self.store.prefix(job_id) + "scene.tif"
            self.store.objects.move_in(key, staged.path)
            scene = self.store.objects.ref(key)
            return self._record(
                job_id,
                owner,
                (model, model_id),
                scene,
                uploaded=True,
                scene_name=staged.filename or "upload",
                bands=bands,
                stride=stride,
                batch=batch,
                extra=fields,
            )
        except BaseException:
            self.store.remove_files(job_id)
            raise

    def submit_uri(
        self,
        owner: str,
        uri: str | dict[str, Any],
        model: str,
        bands: str | None,
        stride: int | None,
        batch: str = "",
        aoi: Aoi | None = None,
        **inputs: float | None,
    ) -> Job:
        """A job for a scene named by ``uri`` (a path or URL under an input root, or a STAC Item's URL or
        path) or given as a STAC Item itself (a dict: the API's ``item``)."""
        scene = self.resolve_uri(uri, model)
        model_id, fields = self.check(scene, model, bands, stride, aoi=aoi, **inputs)
        return self._record(
            new_id(),
            owner,
            (model, model_id),
            scene,
            uploaded=False,
            scene_name=uri_name(uri),
            bands=bands,
            stride=stride,
            batch=batch,
            extra=fields,
        )

    def _record(
        self,
        job_id: str,
        owner: str,
        model: tuple[str, str],
        scene: str | Path,
        *,
        uploaded: bool,
        scene_name: str,
        bands: str | None,
        stride: int | None,
        batch: str,
        extra: dict[str, str] | None = None,
    ) -> Job:
        job = self.store.create(
            job_id,
            owner,
            *model,
            scene,
            uploaded=uploaded,
            scene_name=scene_name,
            bands=bands or "",
            stride=stride,
            backend=self.settings.backend,
            batch=batch,
            extra=extra,
        )
        try:
            self.chip_stream.add({"job": job_id})
        except BaseException:
            self.store.delete(job)
            raise
        return job

    def resolve_uri(self, uri: str | dict[str, Any], model: str) -> str:
        """What to record as the job's scene, if everything it reads lies under an input root
        (``workers.roots``): a real path, a URL, or — for a STAC Item — the Item as JSON with absolute hrefs,
        each asset the model uses admitted here. Recording the Item itself, not its URL, means every worker
        reads exactly the assets admitted now, whatever the URL serves later."""
        roots = InputRoots(self.settings.input_roots)
        if isinstance(uri, str) and not sources.is_stac(uri):
            return roots.admit(uri)
        if isinstance(uri, str):
            item = stac_input.load(roots.admit(uri))
        else:
            item = stac_input.item_from_dict(uri, stac_input.inline_name(uri))
        for pick in stac_input.pick(item, self.load_model(model).card):
            roots.admit(pick.href)
        return item.to_json()


def uri_name(uri: str | dict[str, Any]) -> str:
    """The scene's name as the caller gave it: the basename of the uri (before symlinks are resolved), or an
    inline STAC Item's id."""
    if isinstance(uri, dict):
        name = uri.get("id")
        return name if isinstance(name, str) and name else "stac-item"
    parsed = urlparse(uri)
    return Path(unquote(parsed.path) if parsed.scheme else uri).name or uri
