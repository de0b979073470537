"""GDAL's remote-file cache is cleared on the GDAL that rasterio loaded (the bucket-outage test in
tests/service/test_backpressure.py is the end-to-end check: without it the scene stayed "unreadable")."""

from __future__ import annotations

from pathlib import Path

import rasterio

from workers import gdal_cache


def test_rasterios_gdal_is_found_and_its_remote_cache_cleared() -> None:
    found = gdal_cache.loaded_gdal_libraries()
    assert any(Path(rasterio.__file__).parent.name in p or "rasterio.libs" in p for p in found), found
    assert gdal_cache.clear_remote_cache() >= 1


def test_no_maps_means_nothing_to_clear(tmp_path: Path) -> None:
    assert gdal_cache.loaded_gdal_libraries(tmp_path / "missing") == []
