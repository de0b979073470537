"""The bad-input corpus over HTTP, against a real uvicorn server, real workers and a real Redis.

Every refusal is a 4xx (503 for a broken model in the server's own catalogue) JSON ``{"error": {"code",
"message"}}`` whose message names the file (its basename only) and the problem, and leaves no job record, no
staged upload and no job directory. Oversized bodies are cut off early; paths and text chosen by the caller
never escape the data directory or the JSON.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import rasterio

from models.package import ModelPackage
from tests.bad_scenes import (
    NAN_BLOCK,
    cells_inside,
    claims_huge,
    jpeg_named_tif,
    nan_scene,
    retyped,
    tampered_copy,
    vrt_reading,
)
from tests.service.conftest import nothing_left, upload

if TYPE_CHECKING:
    from tests.service.conftest import Stack

GB3 = 3 << 30
CAP = 4 << 20  # the stacks' SPIKESCAN_MAX_UPLOAD_MB
# What may be in flight when the 413 arrives: the cap, plus loopback socket buffers on both sides.
IN_FLIGHT = 32 << 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, osbs_tif: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    empty = d / "empty.tif"
    empty.write_bytes(b"")
    return {
        "huge": claims_huge(osbs_tif, d / "huge.tif"),
        "empty": empty,
        "photo": jpeg_named_tif(osbs_tif, d / "photo.tif"),
        "complex": retyped(osbs_tif, d / "complex.tif", "complex64"),
        # A VRT reads whatever file it names: uploaded, it would show the caller any raster on the server.
        "vrt": vrt_reading(osbs_tif, d / "vrt.tif"),
        "nan": nan_scene(osbs_tif, d / "nan.tif", declared=True),
        "notes": _text(d / "notes.tif"),
    }


def _text(path: Path) -> Path:
    path.write_text("this is not a GeoTIFF\n")
    return path


def _error(r: httpx.Response) -> dict[str, str]:
    body = json.loads(r.content)  # raises if the body is not JSON
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("huge", "scene_too_large", "huge.tif: header claims 1,000,000 x 1,000,000 pixels"),
        ("empty", "invalid_scene", "empty.tif: the file is empty (0 bytes)"),
        ("photo", "invalid_scene", "photo.tif: not a GeoTIFF: the file is a JPEG image"),
        ("complex", "invalid_scene", "complex.tif: pixel data type complex64 is not supported"),
        ("vrt", "invalid_scene", "vrt.tif: not a GeoTIFF: the file is an XML or HTML document"),
    ],
)
def test_bad_scenes_are_422_naming_file_and_problem(
    stack: Stack, corpus: dict[str, Path], rgb_model: ModelPackage, name: str, code: str, words: str
) -> None:
    check = nothing_left(stack)
    started = time.monotonic()
    with stack.client() as http:
        r = upload(http, corpus[name], rgb_model.name)
    assert r.status_code == 422, r.text
    err = _error(r)
    assert err["code"] == code and err["message"].startswith(words), err
    assert str(stack.data_dir) not in err["message"] and ".part" not in err["message"]
    assert time.monotonic() - started < 10  # refused from the header, not after reading 10^12 pixels
    check()


def test_huge_header_message_names_the_limit(
    stack: Stack, corpus: dict[str, Path], rgb_model: ModelPackage
) -> None:
    with stack.client() as http:
        message = _error(upload(http, corpus["huge"], rgb_model.name))["message"]
    assert "more than the limit of 4e+10 (SPIKESCAN_MAX_SCENE_PIXELS)" in message


# --- oversized bodies, on a raw socket so that we see exactly when the answer comes -------------------------


def _connect(stack: Stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", stack.port), timeout=30)


def _head(stack: Stack, framing: str, ctype: str) -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
        f"Authorization: Bearer {stack.keys[0]}\r\nContent-Type: {ctype}\r\n{framing}\r\n\r\n"
    ).encode()


def _read_response(sock: socket.socket, already: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    data = already
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed before a response: {data!r}"
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    return int(status_line.split()[1]), headers, rest


def _multipart_start(boundary: str, filename: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nrand-rgb\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="scene"; filename="{filename}"\r\n'
        "Content-Type: image/tiff\r\n\r\n"
    ).encode()


def _vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory figure, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def test_a_3gb_content_length_is_refused_before_the_body_is_read(stack: Stack) -> None:
    check = nothing_left(stack)
    boundary = "spikescan-corpus"
    with _connect(stack) as sock:
        # The form field and the scene part's headers (to name the file), and not one byte of the scene.
        sock.sendall(
            _head(stack, f"Content-Length: {GB3}", f"multipart/form-data; boundary={boundary}")
            + _multipart_start(boundary, "three-gigabytes.tif")
        )
        status, headers, body = _read_response(sock)
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == {
        "code": "too_large",
        "message": "three-gigabytes.tif: larger than the server's limit of 4 MB (SPIKESCAN_MAX_UPLOAD_MB): "
        "the request declares 3,072 MB (Content-Length)",
    }
    with _connect(stack) as sock:
        sock.sendall(_head(stack, f"Content-Length: {GB3}", "application/json"))  # no body at all
        status, headers, body = _read_response(sock)
    assert status == 413 and json.loads(body)["error"] == {
        "code": "too_large",
        "message": f"JSON request body of {GB3} bytes is larger than 1024 KiB",
    }
    check()


def _send_chunked_until_answered(sock: socket.socket, total: int) -> tuple[int, bytes]:
    """Send ``total`` bytes of chunked body, watching for an early answer; returns (bytes sent, answer)."""
    chunk = bytes(1 << 16)
    frame = memoryview(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    sent, pending = 0, frame[:0]
    sock.setblocking(False)
    try:
        while sent < total:
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                answer = None
            if answer is not None:
                assert answer, f"connection closed without an answer after {sent} bytes"
                return sent, answer
            pending = pending or frame
            try:
                n = sock.send(pending)
            except BlockingIOError:
                time.sleep(0.002)  # the server is not reading: look for its answer again
                continue
            pending, sent = pending[n:], sent + n
    finally:
        sock.setblocking(True)
        sock.settimeout(30)
    raise AssertionError(f"all {sent} bytes sent and no answer")


def test_a_chunked_3gb_upload_is_answered_413_just_past_the_cap(stack: Stack) -> None:
    check = nothing_left(stack)
    pid = stack.api.pid
    rss_before, peak_before = _vm(pid, "VmRSS"), _vm(pid, "VmHWM")
    boundary = "spikescan-corpus"
    start = _multipart_start(boundary, "three-gigabytes.tif")
    with _connect(stack) as sock:
        sock.sendall(
            _head(stack, "Transfer-Encoding: chunked", f"multipart/form-data; boundary={boundary}")
            + f"{len(start):x}\r\n".encode()
            + start
            + b"\r\n"
        )
        sent, answer = _send_chunked_until_answered(sock, GB3)
        status, headers, body = _read_response(sock, answer)
    assert status == 413, body
    assert CAP < sent < CAP + IN_FLIGHT, f"sent {sent >> 20} MB before the 413"
    err = json.loads(body)["error"]
    assert err == {
        "code": "too_large",
        "message": "three-gigabytes.tif: larger than the server's limit of 4 MB (SPIKESCAN_MAX_UPLOAD_MB)",
    }
    # Nothing near the body's size was ever held: not now, and no new peak either.
    assert _vm(pid, "VmRSS") - rss_before < 64 << 20
    assert _vm(pid, "VmHWM") - peak_before < 64 << 20
    check()


# --- NaN nodata, through the API ----------------------------------------------------------------------------


def test_a_nan_nodata_scene_runs_and_the_nan_block_is_nodata(
    stack: Stack, corpus: dict[str, Path], rgb_model: ModelPackage, tmp_path: Path
) -> None:
    with stack.client() as http:
        r = upload(http, corpus["nan"], rgb_model.name)
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        assert stack.wait_done(http, job)["status"] == "done"
        for name in ("classes.tif", "detections.geojson"):
            got = http.get(f"/v1/jobs/{job}/results/{name}")
            assert got.status_code == 200, got.text
            (tmp_path / name).write_bytes(got.content)
    block = cells_inside(tmp_path / "classes.tif", corpus["nan"], NAN_BLOCK)
    assert block.size >= 100 and (block == 255).all()
    with rasterio.open(tmp_path / "classes.tif") as classes:
        assert (classes.read(1) != 255).sum() > 3 * block.size
    lon_lat_block = _block_lon_lat(corpus["nan"])
    for feature in json.loads((tmp_path / "detections.geojson").read_text())["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert not all(_inside(lon_lat_block, p) for p in ring), feature


def _block_lon_lat(scene: Path) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds

    with rasterio.open(scene) as src:
        return transform_bounds(  # type: ignore[no-any-return]
            src.crs, "EPSG:4326", *window_bounds(Window.from_slices(*NAN_BLOCK), src.transform)
        )


def _inside(box: tuple[float, float, float, float], point: list[float]) -> bool:
    return box[0] < point[0] < box[2] and box[1] < point[1] < box[3]


# --- a tampered package in the server's own catalogue -------------------------------------------------------


def test_a_tampered_catalogue_model_is_503_and_left_out_of_the_list(
    new_stack: Callable[..., Stack],
    models_dir: Path,
    landsat_tif: Path,
    osbs_tif: Path,
    tmp_path: Path,
) -> None:
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    shutil.copytree(models_dir / "rand-rgb", catalogue / "rand-rgb")
    tampered_copy(models_dir / "rand-landsat", catalogue / "rand-landsat")
    s = new_stack(SPIKESCAN_MODELS_DIR=str(catalogue))
    shutil.copy(landsat_tif, s.inputs / "landsat.tif")
    check = nothing_left(s)
    with s.client() as http:
        answers = [
            upload(http, osbs_tif, "rand-landsat"),  # the model is checked before the scene
            http.post("/v1/jobs", json={"uri": str(s.inputs / "landsat.tif"), "model": "rand-landsat"}),
            http.post("/v1/batches", json={"uris": [str(s.inputs / "landsat.tif")], "model": "rand-landsat"}),
        ]
        listed = http.get("/v1/models")
    for r in answers:
        assert r.status_code == 503, r.text
        err = _error(r)
        assert err["code"] == "invalid_model"
        assert err["message"] == (
            "model 'rand-landsat' failed its integrity check on this server (rand-landsat/weights.npz: "
            "checksum does not match the card (modified or corrupt)); ask the operator to reinstall it"
        )
    assert listed.status_code == 200, listed.text
    names = {m["name"] for m in listed.json()}
    assert "rand-rgb" in names and "rand-landsat" not in names
    assert "rand-landsat" in (s.root / "api.log").read_text()  # the operator is told which and why
    check()


# --- paths chosen by the caller -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ok_uri(stack: Stack, osbs_tif: Path) -> str:
    """A good scene under the stack's input root."""
    shutil.copy(osbs_tif, stack.inputs / "ok.tif")
    return str(stack.inputs / "ok.tif")


def test_traversing_uris_are_refused_with_json(stack: Stack, ok_uri: str, osbs_tif: Path) -> None:
    inputs = str(stack.inputs)
    # Inside the root, but a VRT reads whatever it names, here a file outside every root.
    vrt_reading(osbs_tif, stack.inputs / "mosaic.vrt")
    cases = [
        (f"{inputs}/mosaic.vrt", 422, "invalid_scene"),
        (f"{inputs}/../../../../etc/passwd", 403, "forbidden"),
        (f"{inputs}/sub/../../outside.tif", 403, "forbidden"),
        (f"file://{inputs}/../../../../etc/passwd", 403, "forbidden"),
        (f"file://{inputs}/%2e%2e/%2e%2e/%2e%2e/etc/passwd", 403, "forbidden"),
        (f"file://{inputs}/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", 403, "forbidden"),
        (f"file://localhost/{inputs}/../../etc/passwd", 403, "forbidden"),
        # Not a URL: '%2e' is a literal name, which does not exist under the root.
        (f"{inputs}/%2e%2e/%2e%2e/etc/passwd", 422, "invalid_scene"),
        (f"{inputs}/ok.tif\x00.png", 400, "invalid_input"),
        (f"file://{inputs}/ok.tif%00.png", 400, "invalid_input"),
        ("\x00", 400, "invalid_input"),
    ]
    check = nothing_left(stack)
    with stack.client() as http:
        for uri, status, code in cases:
            for r in (
                http.post("/v1/jobs", json={"uri": uri, "model": "rand-rgb"}),
                http.post("/v1/batches", json={"uris": [uri], "model": "rand-rgb"}),
            ):
                assert (r.status_code, _error(r)["code"]) == (status, code), (uri, r.text)
        nul = http.post("/v1/jobs", json={"uri": f"{inputs}/ok.tif\x00.png", "model": "rand-rgb"})
        assert "NUL byte" in _error(nul)["message"]
        for path in ("/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/%2e%2e/results/report.json"):
            r = http.get(path)
            assert r.status_code == 404 and _error(r)["code"] == "not_found", (path, r.text)
    check()


def test_a_traversing_upload_filename_writes_nothing_outside_the_job(
    stack: Stack, osbs_tif: Path, corpus: dict[str, Path], rgb_model: ModelPackage
) -> None:
    evil = f"spikescan-evil-{secrets.token_hex(6)}.tif"
    escapes = [f"../../../../tmp/{evil}", f"/tmp/{evil}", f"..%2F..%2F{evil}"]
    with stack.client() as http:
        for name in escapes:
            check = nothing_left(stack)
            r = upload(http, corpus["notes"], rgb_model.name, filename=name)
            message = _error(r)["message"]
            assert r.status_code == 422 and message.startswith(f"{name.rsplit('/', 1)[-1]}: not a raster")
            assert "../" not in message and "/tmp" not in message
            check()
        r = upload(http, osbs_tif, rgb_model.name, filename=escapes[0])
        assert r.status_code == 202, r.text
        job = r.json()["id"]
    r = stack.rclient()
    scene = r.hget(f"spikescan:job:{job}", "scene")
    r.close()
    assert scene is not None and Path(scene.decode()) == stack.data_dir / "jobs" / job / "scene.tif"
    assert Path(scene.decode()).read_bytes() == osbs_tif.read_bytes()
    assert not Path("/tmp", evil).exists()
    assert not list(stack.root.rglob(evil))


# --- text chosen by the caller, in headers and JSON ---------------------------------------------------------

INJECTED = "X-Injected: yes"


def _raw_multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[str, bytes]:
    """A multipart body written by hand, so names and values reach the server exactly as given."""
    boundary = "corpus-" + secrets.token_hex(4)
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def _assert_contained(r: httpx.Response) -> str:
    assert 400 <= r.status_code < 500, r.text
    assert "x-injected" not in r.headers
    message = _error(r)["message"]
    assert "\r" not in message and "\n" not in message  # one line: CR/LF show escaped
    return message


def test_crlf_and_quotes_in_filenames_and_fields_stay_inside_the_json(
    stack: Stack, corpus: dict[str, Path], osbs_tif: Path, ok_uri: str
) -> None:
    notes, scene = corpus["notes"].read_bytes(), osbs_tif.read_bytes()
    quoted = 'a\\"}, {\\"code\\": \\"ok.tif'  # backslash-escaped quotes, as a client writes them
    check = nothing_left(stack)
    with stack.client() as http:

        def post(parts: list[tuple[str, str | None, bytes]]) -> httpx.Response:
            ctype, body = _raw_multipart(parts)
            return http.post("/v1/jobs", content=body, headers={"content-type": ctype})

        crlf_name = post([("model", None, b"rand-rgb"), ("scene", f"x.tif\r\n{INJECTED}\r\n", notes)])
        _assert_contained(crlf_name)
        msg = _assert_contained(post([("model", None, b"rand-rgb"), ("scene", quoted, notes)]))
        assert msg.startswith('a"}, {"code": "ok.tif: not a raster'), msg
        for field, value, code in (
            ("model", f"rand-rgb\r\n{INJECTED}", "unknown_model"),
            ("model", 'rand-rgb"}', "unknown_model"),
            ("bands", f"1,2,3\r\n{INJECTED}", "band_mismatch"),
            ("stride", f"24\r\n{INJECTED}", "invalid_input"),
        ):
            fields = {"model": "rand-rgb", field: value}
            parts = [(k, None, v.encode()) for k, v in fields.items()] + [("scene", "ok.tif", scene)]
            r = post(parts)
            msg = _assert_contained(r)
            assert _error(r)["code"] == code, r.text
            assert repr(value) in msg or repr(value.strip()) in msg, msg
        for model in (f"rand-rgb\r\n{INJECTED}", 'rand-rgb"}, "x": "'):
            r = http.post("/v1/jobs", json={"uri": ok_uri, "model": model})
            assert _error(r)["code"] == "unknown_model" and repr(model) in _assert_contained(r)
    check()


def test_model_names_resolve_only_in_the_catalogue(stack: Stack, osbs_tif: Path) -> None:
    # The API runs in this working directory (the Stack does not change it), where these are directories.
    names = [n for n in ("service", "tests", "models") if (Path.cwd() / n).is_dir()]
    assert names
    check = nothing_left(stack)
    with stack.client() as http:
        for name in names:
            r = upload(http, osbs_tif, name)
            assert (r.status_code, _error(r)["code"]) == (404, "unknown_model"), (name, r.text)
    check()
