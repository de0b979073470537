"""The ``spikescan`` command line. Parsers live here; each command's work lives in the module it names.

This is one of the two places our exceptions become responses: any ``SpikescanError`` prints one line naming
the problem and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from spikescan.errors import SpikescanError

Handler = Callable[[argparse.Namespace], int]


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
    from models import train

    return train.main(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    from workers import pipeline

    return pipeline.main(args)


def _settings():  # type: ignore[no-untyped-def]
    from spikescan.config import get_settings

    return get_settings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikescan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="run the whole pipeline on one scene, in this process")
    p.add_argument("scene", help="GeoTIFF (or any raster GDAL opens)")
    p.add_argument("--model", required=True, help="a model name (see `spikescan models`) or a package directory")
    p.add_argument("--out", required=True, help="directory for the outputs")
    p.add_argument("--stride", type=int, default=None, help="chip stride in model pixels (default: half a patch)")
    p.add_argument("--backend", default=None, choices=["emulator", "spinnaker", "nest"])
    p.add_argument("--bands", default=None, help="1-based scene bands in the model card's order, e.g. 4,3,2")
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

    p = sub.add_parser("train", help="reproduce a shipped model from its recipe")
    p.add_argument("recipe", help="recipe name (trees-rgb, landcover-landsat) or a recipe JSON file")
    p.add_argument("--out", default=None, help="package directory to write (default: a scratch directory)")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(handler=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SpikescanError as exc:
        print(f"spikescan: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikescan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
