"""Forgetting what GDAL's network file systems (``/vsis3/``, ``/vsicurl/``) cached about remote files.

GDAL keeps, per process, what it learnt of each remote file — its size, its blocks, and that it could not be
reached. After a storage outage that last part is wrong: a worker that tried to open a job's scene while the
bucket was down was told "not recognized as being in a supported file format" again, from the cache, once
the bucket was back. rasterio does not expose GDAL's ``VSICurlClearCache``; it is called here on the GDAL
libraries this process has loaded (rasterio's, and pyogrio's if it is loaded: each wheel bundles its own).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

log = logging.getLogger("spikescan.worker")


def loaded_gdal_libraries(maps: Path = Path("/proc/self/maps")) -> list[str]:
    """Paths of the GDAL shared libraries mapped into this process (Linux; none found elsewhere)."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    paths = {line.split()[-1] for line in lines if "/libgdal" in line and line.split()[-1].startswith("/")}
    return sorted(paths)


def clear_remote_cache() -> int:
    """Clear every loaded GDAL's cache of remote files; how many libraries were cleared."""
    cleared = 0
    for path in loaded_gdal_libraries():
        try:
            ctypes.CDLL(path).VSICurlClearCache()
        except (OSError, AttributeError) as exc:  # a GDAL built without curl has no such function
            log.debug("could not clear the remote-file cache of %s: %s", path, exc)
            continue
        cleared += 1
    return cleared
