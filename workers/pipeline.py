"""The whole job in one process: scene → chip grid → backend (batches of chips) → mosaic → outputs.

``run(...)`` is the in-process path behind ``spikescan predict``; the service runs the same pieces in separate
processes (chipper: ``Scene.read_chip_row`` + ``has_data``; inference: ``Backend.infer`` + ``chip_results``;
mosaicker: ``Mosaicker`` + ``LayerWriter``; then ``finish_outputs``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from models import package as model_package
from models.package import ModelPackage
from models.tasks import Footprint, VectorParams, for_card
from spikescan.config import Settings, get_settings
from workers import input_check, objectstore, report, stac, vector_formats
from workers.aoi import Aoi
from workers.aoi import load as load_aoi
from workers.backends import Backend, BatchResult, get_backend
from workers.batching import RowBatcher
from workers.chips import ChipGrid, cell_validity
from workers.cog import LayerWriter
from workers.mosaic import Behind, ChipResult, Mosaicker, StripTee, WriteBehind
from workers.progress import Progress, ProgressCallback
from workers.scene import ChipBatch, Scene
from workers.vectors import VectorWriter

# GDAL's block cache defaults to 5 % of RAM and fills up on big scenes; a small fixed cap keeps peak memory
# independent of the scene's size (tiles evicted early are decompressed again: a little time for flat memory).
GDAL_CACHE_MB = 16
# What to give rasterio.Env: it hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, i.e. in bytes, so a bare
# 16 made a 16-byte cache — every warped-VRT block was warped again on each read, 10-40x slower.
GDAL_CACHE_BYTES = GDAL_CACHE_MB << 20
READ_AHEAD = 2  # chip rows read ahead of the one being inferred (``_scan``)


def has_data(batch: ChipBatch) -> np.ndarray:
    """Chips with at least one valid pixel; the rest are skipped before inference."""
    return batch.valid.any(axis=(1, 2))


def chip_results(batch: ChipBatch, result: BatchResult, output_stride: int) -> list[ChipResult]:
    cells = cell_validity(batch.valid, output_stride)
    return [
        ChipResult(chip, result.scores[i], cells[i], int(result.spikes[i]))
        for i, chip in enumerate(batch.chips)
    ]


def infer_batch(
    backend: Backend, batch: ChipBatch, batch_size: int, output_stride: int, keep: np.ndarray | None = None
) -> list[ChipResult]:
    """Results for the chips ``keep`` (indices; default all), ``batch_size`` chips per backend call."""
    idx = np.arange(len(batch)) if keep is None else keep
    results: list[ChipResult] = []
    for start in range(0, len(idx), batch_size):
        part = batch.select(idx[start : start + batch_size])
        results.extend(chip_results(part, backend.infer(part.pixels, part.valid), output_stride))
    return results


def output_transform(scene: Scene, grid: ChipGrid) -> Affine:
    """Output cell → scene CRS: the model grid scaled by the output stride, from the same origin."""
    return scene.transform * Affine.scale(grid.output_stride)


class OutputWriters:
    """The mosaic's sinks for one job: the COGs (``LayerWriter``) and the vector layer (``VectorWriter``),
    fed the same strips; used alike by ``spikescan predict`` and the service's mosaicker."""

    def __init__(self, out: Path, pkg: ModelPackage, scene: Scene, grid: ChipGrid,
                 params: VectorParams | None = None) -> None:
        transform = output_transform(scene, grid)
        self.layers = LayerWriter(out, grid.out_width, grid.out_height, transform, scene.crs,
                                  pkg.card.classes, pkg.card.colors)
        footprint = Footprint(scene.width / grid.output_stride, scene.height / grid.output_stride,
                              pkg.card.gsd_m * grid.output_stride)
        try:
            self.vectors = VectorWriter(out / "detections.geojson", for_card(pkg.card), footprint, transform,
                                        scene.crs, pkg.id, params)
        except BaseException:
            self.layers.abort()
            raise
        self.sink = StripTee(self.layers, self.vectors)

    def finish(self, watch: report.Stopwatch) -> int:
        """COGs and the vector layers completed; the number of features written."""
        with watch.stage("vectors"):
            n = self.vectors.finish()
            # From the finished GeoJSON: small, and no raster is held for it.
            vector_formats.export(self.vectors.path, self.vectors.path.parent)
        with watch.stage("cog"):
            self.layers.finish()
        return n

    def abort(self) -> None:
        self.layers.abort()
        self.vectors.abort()


def run(
    scene_path: str | Path,
    model: str | Path | ModelPackage,
    out_dir: str | Path,
    *,
    stride: int | None = None,
    backend: str | None = None,
    bands: str | Sequence[int] | None = None,
    settings: Settings | None = None,
    quiet: bool = True,
    on_progress: ProgressCallback | None = None,
    vector_params: VectorParams | None = None,
    inputs: input_check.InputOptions | None = None,
    scene_name: str | None = None,
    aoi: Aoi | None = None,
) -> dict[str, Any]:
    """Scan one scene and write classes.tif, scores.tif, detections.geojson (+ .gpkg, .fgb), item.json,
    report.json.

    ``inputs`` carries the user's ``--scale`` and ``--nodata`` (``workers.input_check``); ``aoi`` limits
    the job to an area of interest (``workers.aoi``: chips outside skipped, outputs no data outside).
    ``scene_name`` (default: the file's name) names the scene in report.json and the STAC Item.

    ``vector_params`` overrides the card's detection settings (``--min-score``, ``--nms-iou``).
    Returns the report (also written to ``out_dir/report.json``).
    """
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        return _run(
            scene_path,
            model,
            Path(out_dir),
            stride,
            backend,
            bands,
            settings or get_settings(),
            Progress.factory(quiet, on_progress),
            vector_params,
            inputs,
            scene_name,
            aoi,
        )


def _run(
    scene_path: str | Path,
    model: str | Path | ModelPackage,
    out: Path,
    stride: int | None,
    backend: str | None,
    bands: str | Sequence[int] | None,
    settings: Settings,
    make_progress: Callable[[int], Progress],
    vector_params: VectorParams | None = None,
    inputs: input_check.InputOptions | None = None,
    scene_name: str | None = None,
    aoi: Aoi | None = None,
) -> dict[str, Any]:
    watch = report.Stopwatch()
    pkg = model if isinstance(model, ModelPackage) else model_package.load(model, settings.models_dir)
    # The backend loads (its int8 graph built, compiled) on a thread while the scene is opened and checked:
    # both are fixed costs of every job, and both mostly release the GIL.
    with ThreadPoolExecutor(1, thread_name_prefix="backend-load") as loader:
        loading = loader.submit(get_backend, backend, pkg, settings)
        try:
            scene = input_check.open_checked(
                scene_path, pkg.card, bands, inputs, aoi, max_pixels=settings.max_scene_pixels
            )
        except BaseException:
            _discard(loading)
            raise
    with scene, loading.result() as engine:
        grid = ChipGrid.for_model(
            scene.width, scene.height, pkg.card.patch_size, pkg.card.output_stride, stride
        )
        writers = OutputWriters(out, pkg, scene, grid, vector_params)
        behind = WriteBehind(writers.sink)
        try:
            counters = _scan(
                scene,
                grid,
                engine,
                Mosaicker(grid, len(pkg.card.classes), behind),
                watch,
                engine.batch_size_for(settings.batch_size, grid.cols),
                make_progress(grid.n_chips),
            )
            with watch.stage("mosaic"):  # the strips still being written behind
                behind.close()
            counters.detections = writers.finish(watch)
        except BaseException:
            try:
                behind.close()
            finally:
                writers.abort()
            raise
        context = {"scene": scene, "grid": grid, "engine": engine, "counters": counters}
        return finish_outputs(out, pkg, watch, **context, scene_name=scene_name or Path(scene_path).name)


def _discard(loading: Future[Backend]) -> None:
    """Close a backend whose job failed before it was used (if it loaded at all)."""
    try:
        engine = loading.result()
    except Exception:  # noqa: BLE001 - the job's own error is the one to report
        return
    engine.close()


def _scan(
    scene: Scene,
    grid: ChipGrid,
    engine: Backend,
    mosaic: Mosaicker,
    watch: report.Stopwatch,
    batch_size: int,
    progress: Progress,
) -> report.Counters:
    counters = report.Counters(chips_total=grid.n_chips)

    def infer(batch: ChipBatch) -> list[ChipResult]:
        with watch.stage("infer"):
            return chip_results(batch, engine.infer(batch.pixels, batch.valid), grid.output_stride)

    def blend(done: tuple[int, list[ChipResult]]) -> None:
        with watch.stage("mosaic"):
            mosaic.feed_row(*done)

    # The blend runs on its own thread: the inference thread only reads results out of the backend.
    blender: Behind[tuple[int, list[ChipResult]]] = Behind(blend, name="mosaic")

    def feed(done: list[tuple[int, list[ChipResult]]]) -> None:
        for row, results in done:
            blender.put((row, results))
            counters.chips_processed += len(results)
            counters.spikes += sum(r.spikes for r in results)
            progress.update(grid.cols)

    def read(row: int) -> tuple[ChipBatch, np.ndarray]:
        batch = scene.read_chip_row(grid, row)
        return batch, has_data(batch)

    batcher = RowBatcher(infer, batch_size)
    # The next chip rows are read while this one is inferred: GDAL and the emulator's kernels release the GIL,
    # so on two cores reading and decoding hide behind inference. ``READ_AHEAD`` rows ahead, so that the
    # reader never waits for this thread to take a row: memory stays that many rows more.
    try:
        with progress, ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
            ahead = deque(reader.submit(read, r) for r in range(min(READ_AHEAD, grid.rows)))
            for row in range(grid.rows):
                with watch.stage("read"):  # only the time spent waiting for the reader
                    batch, keep = ahead.popleft().result()
                if row + READ_AHEAD < grid.rows:
                    ahead.append(reader.submit(read, row + READ_AHEAD))
                counters.chips_skipped += int((~keep).sum())
                feed(batcher.add_row(row, batch, np.flatnonzero(keep)))
            feed(batcher.flush())
    finally:
        blender.close()  # every fed row blended (or the blend's failure raised)
    return counters


def finish_outputs(
    out: Path,
    pkg: ModelPackage,
    watch: report.Stopwatch,
    *,
    scene: Scene,
    grid: ChipGrid,
    engine: Backend,
    counters: report.Counters,
    scene_name: str | None = None,
) -> dict[str, Any]:
    """item.json and report.json for the finished rasters and vector layer in ``out``; ``scene_name`` is
    what the user called the scene (an upload's file name), default the file's own name."""
    name = scene_name or scene.source.name
    n_det = counters.detections
    resampling = scene.resampled.note() if scene.resampled else None
    outputs = {name: str(out / href) for name, (href, *_rest) in stac.ASSETS.items()} | {
        "item": str(out / "item.json")
    }
    rep = report.build_report(
        scene=scene.path,
        scene_name=name,
        source_shape=scene.source_shape,
        model={"name": pkg.card.name, "version": pkg.card.version, "id": pkg.id},
        backend=engine.name,
        copies=engine.copies,
        energy_per_chip_j=engine.energy_per_chip_j,
        grid=grid.to_dict(),
        counters=counters,
        watch=watch,
        resampling=resampling,
        detections=n_det,
        outputs=outputs,
        inputs=input_check.report_inputs(scene),
        warnings=input_check.warnings(scene),
    )
    props = {
        "spikescan:model": rep["model"],
        "spikescan:backend": engine.name,
        "spikescan:copies": engine.copies,
        "spikescan:chip_size": grid.patch,
        "spikescan:stride": grid.stride,
        "spikescan:output_stride": grid.output_stride,
        "spikescan:chips": rep["chips"],
        "spikescan:spikes_total": rep["spikes_total"],
        "spikescan:spikes_per_chip": rep["spikes_per_chip"],
        "spikescan:energy_j": rep["energy_j"],
        "spikescan:resampling": resampling,
        "spikescan:timings_s": rep["wall_time_s"],
        "spikescan:detections": n_det,
    }
    item = stac.build_item(
        stac.item_id(name, pkg.card.name, pkg.id),
        scene.crs,
        output_transform(scene, grid),
        (grid.out_height, grid.out_width),
        props,
        acquired=scene.acquired,
        title=f"{name}: {pkg.card.name}",
    )
    report.write_json(out / "item.json", item)
    report.write_json(out / "report.json", rep)
    return rep


def main(args: argparse.Namespace) -> int:
    """``spikescan predict``: progress bar on a terminal, summary and output location on stdout. ``--out
    s3://bucket/prefix``: the outputs are written to a temporary directory, then uploaded there."""
    remote = str(args.out).startswith("s3://")
    out = Path(tempfile.mkdtemp(prefix="spikescan-out-")) if remote else Path(args.out)
    try:
        rep = _predict(args, out)
        if remote:  # report.json last: its presence says the outputs are whole
            objectstore.open_store(args.out, out).publish_dir(out, "", last="report.json")
    finally:
        if remote:
            shutil.rmtree(out, ignore_errors=True)
    for warning in rep["warnings"]:
        print(f"spikescan: warning: {warning['message']}", file=sys.stderr)
    print(report.summary(rep, args.out if remote else out.resolve()), file=sys.stdout)
    return 0


def _predict(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    return run(
        args.scene,
        args.model,
        out,
        stride=args.stride,
        backend=args.backend,
        bands=args.bands,
        quiet=args.quiet,
        vector_params=VectorParams(min_score=args.min_score, nms_iou=args.nms_iou),
        inputs=input_check.InputOptions(scale=args.scale, nodata=args.nodata),
        aoi=load_aoi(args.aoi) if args.aoi else None,
    )
