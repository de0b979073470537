"""The web map end to end: Debian's headless Chromium (driven by Playwright) against a real stack — API under
uvicorn, private Redis, worker processes — with the real landcover-landsat model on the real Landsat scene.

The mosaicker is started only after the page has shown the class layer of the finished chips, so the partial
results are seen on the map while the job is still ``running``; then the job completes and the detections,
their popups, the layer switch, the legend and the QGIS links are checked, at 1280x800 and at 390x844.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import rasterio
from PIL import Image
from playwright.sync_api import Browser, Page, Response, sync_playwright
from rasterio.warp import transform_bounds

import models

if TYPE_CHECKING:
    from tests.service.conftest import Stack

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ZOO = Path(models.__file__).parent / "zoo"
MODEL = "landcover-landsat"

# Opaque pixels over all loaded class-layer tiles (blob images are same-origin, so a canvas may read them).
OPAQUE_TILE_PIXELS = """() => {
  let n = 0;
  for (const img of document.querySelectorAll('.class-tiles img.leaflet-tile-loaded')) {
    if (!img.naturalWidth) continue;
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const a = ctx.getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < a.length; i += 4) if (a[i] > 0) n++;
  }
  return n;
}"""


@pytest.fixture(scope="module")
def models_dir() -> Path:
    """The real model zoo, not the random-weights test models: detections must look like detections."""
    return ZOO


@pytest.fixture()
def web_stack(new_stack: Callable[..., Stack]) -> Stack:
    assert Path(CHROMIUM).is_file(), "Debian's chromium is missing: `make test` installs it"
    return new_stack(SPIKESCAN_MAX_UPLOAD_MB="64")  # the Landsat scene is 4.3 MB


@pytest.fixture()
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def assert_not_blank(png: bytes, min_std: float = 20.0, min_colours: int = 50) -> None:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.std() > min_std, f"screenshot looks blank (pixel std {pixels.std():.1f})"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= min_colours


def assert_fits(page: Page, width: int) -> None:
    """No horizontal scrolling, and every control is on screen."""
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"horizontal overflow at {width}px: page is {scroll}px wide"
    for sel in ("#api-key", "#scene", "#model", "#submit", "#map", "#jobs li", ".leaflet-control-zoom"):
        box = page.locator(sel).first.bounding_box()
        assert box is not None and page.locator(sel).first.is_visible(), sel
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (sel, box)


def job_status(page: Page) -> str:
    return str(page.eval_on_selector("#jobs li", "li => li.dataset.status"))


def open_with_key(page: Page, url: str, key: str, errors: list[str]) -> None:
    page.goto(url)
    page.fill("#api-key", key)
    page.press("#api-key", "Tab")  # 'change' stores the key in sessionStorage
    # The first load, before the key, was refused (401): only what follows must be error-free.
    page.reload()
    errors.clear()
    assert page.input_value("#api-key") == key, "the API key did not survive a reload (sessionStorage)"
    page.wait_for_selector(f"#model option[value='{MODEL}']", state="attached")


def keyed_page(browser: Browser, s: Stack) -> tuple[Page, list[str]]:
    """A page on the web map, opened with the stack's first API key, collecting console and page errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # The console names a failed load's status but not its URL; a 5xx gets its URL and the API's log, whose
    # traceback is what a fix needs (a rare race would otherwise leave nothing to go on).
    page.on("response", lambda r: errors.append(_server_error(s, r)) if r.status >= 500 else None)
    open_with_key(page, s.url, s.keys[0], errors)
    return page, errors


def _server_error(s: Stack, response: Response) -> str:
    log = (s.root / "api.log").read_text(errors="replace")
    return f"HTTP {response.status} from {response.url}; API log tail:\n{log[-4000:]}"


def click_largest_detection(page: Page) -> str:
    centre: dict[str, Any] = page.evaluate(
        """() => {
          const paths = [...document.querySelectorAll('path.detection')].map(p => p.getBoundingClientRect());
          const r = paths.sort((a, b) => b.width * b.height - a.width * a.height)[0];
          return {x: r.x + r.width / 2, y: r.y + r.height / 2};
        }"""
    )
    page.mouse.click(centre["x"], centre["y"])
    page.wait_for_selector(".leaflet-popup-content")
    return page.inner_text(".leaflet-popup-content")


def test_web_map_upload_partial_results_detections(
    web_stack: Stack, browser: Browser, landsat_tif: Path, tmp_path: Path
) -> None:
    s = web_stack
    for name, role in (("chipper", "chip"), ("infer", "infer")):
        s.worker(name, role)  # no mosaicker yet: the job must stop short of done, with every chip finished
    page, errors = keyed_page(browser, s)

    page.select_option("#model", MODEL)
    page.set_input_files("#scene", str(landsat_tif))
    page.click("#submit")
    page.wait_for_selector("#jobs li[data-status='running']", timeout=30_000)
    # Partial results: the finished chips' classes appear on the map before any mosaic exists.
    page.wait_for_function(f"({OPAQUE_TILE_PIXELS})() > 1000", timeout=30_000, polling=500)
    assert job_status(page) == "running"
    partial = page.screenshot(path=str(tmp_path / "partial.png"))
    assert_not_blank(partial)

    s.worker("mosaicker", "mosaic")
    page.wait_for_selector("#jobs li[data-status='done']", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('path.detection').length > 0", timeout=20_000)
    job_id = page.eval_on_selector("#jobs li", "li => li.dataset.jobId")
    with s.client() as http:
        detections = http.get(f"/v1/jobs/{job_id}/results/detections.geojson").json()
    drawn = page.evaluate("document.querySelectorAll('path.detection').length")
    assert drawn == len(detections["features"]) > 0

    popup = click_largest_detection(page)
    assert "water" in popup and "score" in popup and "area" in popup, popup
    legend = page.inner_text(".legend")
    assert all(c in legend for c in ("developed", "forest", "water")), legend

    # The layer switch hides and shows the detections.
    switch = page.locator(".leaflet-control-layers-overlays label", has_text="Detections").locator("input")
    switch.uncheck()
    assert page.evaluate("document.querySelectorAll('path.detection').length") == 0
    switch.check()
    assert page.evaluate("document.querySelectorAll('path.detection').length") == drawn

    page.click("#copy-cog")
    cog_url = page.input_value("#copied")
    page.click("#copy-geojson")
    assert page.input_value("#copied") == f"{s.url}/v1/jobs/{job_id}/results/detections.geojson"
    with s.client() as http:
        head = http.get(cog_url, headers={"Range": "bytes=0-3"})
    assert head.status_code == 206 and head.content[:2] in (b"II", b"MM"), cog_url

    final = page.screenshot(path=str(tmp_path / "done-1280.png"))
    assert_not_blank(final)
    assert page.evaluate(f"({OPAQUE_TILE_PIXELS})()") > 1000
    assert_fits(page, 1280)

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(500)  # the resize handler re-fits the map
    assert_fits(page, 390)
    assert_not_blank(page.screenshot(path=str(tmp_path / "done-390.png")))
    assert errors == [], errors
    keep = os.environ.get("SPIKESCAN_TEST_SCREENSHOTS")  # a folder, for developers who want to look
    if keep:
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)


def test_web_map_shows_the_apis_error_for_a_bad_upload(
    web_stack: Stack, browser: Browser, osbs_tif: Path
) -> None:
    """An RGB scene for a 5-band Landsat model: the API's own 4xx message is shown, and no job is listed."""
    page, errors = keyed_page(browser, web_stack)
    page.select_option("#model", MODEL)
    page.set_input_files("#scene", str(osbs_tif))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    with web_stack.client() as http, open(osbs_tif, "rb") as fh:
        api = http.post("/v1/jobs", data={"model": MODEL}, files={"scene": ("OSBS_029.tif", fh)})
    assert api.status_code == 422 and message == api.json()["error"]["message"], message
    assert page.locator("#jobs li").count() == 0
    # The browser logs the refused request itself; that is the only message allowed.
    assert [e for e in errors if "status of 422" not in e] == [], errors


def _seven_band_scene(landsat_tif: Path, out: Path) -> Path:
    """The Landsat scene with two extra bands around its five and no band names: the server cannot guess."""
    with rasterio.open(landsat_tif) as src:
        profile = src.profile | {"count": 7}
        data = src.read()
    extra = np.full(data.shape[1:], 7.0, np.float32)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.concatenate([extra[None], data, extra[None]]))
    return out


def _aoi_lonlat(scene: Path, inset: float) -> dict[str, Any]:
    with rasterio.open(scene) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    dx, dy = (e - w) * inset, (n - s) * inset
    ring = [[w + dx, s + dy], [e - dx, s + dy], [e - dx, n - dy], [w + dx, n - dy], [w + dx, s + dy]]
    return {"type": "Polygon", "coordinates": [ring]}


def _imagery_share(png: bytes, palette: list[list[int]]) -> tuple[float, int]:
    """Share of pixels that are neither a class colour nor the empty map's, and how many colours there are."""
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    flat = [c[:3] for c in palette] + [[0xDF, 0xE5, 0xEA], [255, 255, 255]]  # the map's background, controls
    near = np.zeros(len(px), bool)
    for c in flat:
        near |= np.abs(px - np.array(c)).max(axis=1) <= 12
    return float((~near).mean()), len(np.unique(px, axis=0))


def tile_pixels(selector: str) -> str:
    return OPAQUE_TILE_PIXELS.replace(".class-tiles", selector)


def test_web_form_bands_stride_aoi_and_the_scene_under_the_classes(
    web_stack: Stack, browser: Browser, landsat_tif: Path, tmp_path: Path
) -> None:
    """A 7-band scene: the form says which bands the model takes, the API's refusal names field `bands`, the
    bands typed in the form run the job within an AOI, and the map shows the scene's imagery under the
    classes."""
    s = web_stack
    s.pipeline_workers()
    scene = _seven_band_scene(landsat_tif, tmp_path / "seven.tif")
    page, errors = keyed_page(browser, s)
    page.select_option("#model", MODEL)
    page.set_input_files("#scene", str(scene))
    page.wait_for_function("document.querySelector('#bands-hint').textContent.includes('this scene has 7')")
    hint = page.inner_text("#bands-hint")
    assert "blue, green, red, nir, swir16" in hint, hint  # from the card
    assert page.input_value("#bands") == ""  # no names to match: nothing guessed

    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert "field `bands`" in message and "--bands" not in message, message
    assert page.evaluate("document.activeElement.id") == "bands"  # the cursor goes where the fix is

    page.fill("#bands", "2,3,4,5,6")
    page.fill("#stride", "8")
    page.fill("#aoi", json.dumps(_aoi_lonlat(scene, 0.3)))
    page.click("#submit")
    page.wait_for_selector("#jobs li[data-status='done']", timeout=90_000)
    job_id = page.eval_on_selector("#jobs li", "li => li.dataset.jobId")
    with s.client() as http:
        status = http.get(f"/v1/jobs/{job_id}").json()
    assert status["progress"]["chips_skipped"] > 0, status  # the chips outside the AOI never ran

    page.wait_for_function(f"({tile_pixels('.scene-tiles')})() > 20000", timeout=30_000, polling=500)
    page.wait_for_function(f"({OPAQUE_TILE_PIXELS})() > 1000", timeout=30_000, polling=500)
    page.wait_for_timeout(300)  # let the tiles fade in
    card = json.loads((ZOO / MODEL / "model.json").read_text())
    shot = page.locator("#map").screenshot(path=str(tmp_path / "scene-under-classes.png"))
    share, colours = _imagery_share(shot, card["colors"])
    # Outside the AOI the classes are clear and the scene shows as it is: thousands of imagery colours.
    assert share > 0.15 and colours > 3000, (share, colours)  # the scene fills about a third of the map

    # The results' opacity control: at 0 only the scene is left; the classes come back at 1.
    page.fill("#opacity", "0")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("getComputedStyle(document.querySelector('.class-tiles')).opacity") == "0"
    only_scene, _ = _imagery_share(page.locator("#map").screenshot(), card["colors"])
    assert only_scene > share, (only_scene, share)
    switch = page.locator(".leaflet-control-layers-overlays label", has_text="Scene imagery").locator("input")
    switch.uncheck()
    assert page.evaluate("document.querySelectorAll('.scene-tiles').length") == 0
    assert [e for e in errors if "status of 422" not in e and "status of 400" not in e] == [], errors
    keep = os.environ.get("SPIKESCAN_TEST_SCREENSHOTS")
    if keep:
        shutil.copy(tmp_path / "scene-under-classes.png", Path(keep) / "scene-under-classes.png")
