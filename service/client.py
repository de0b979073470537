"""The HTTP client behind ``spikescan submit``: upload or batch-submit, follow progress, download results.

Uploads stream from disk (httpx reads the file in chunks). Progress is followed over the job's server-sent
events; results are streamed to ``<out>/<job id>/``. Server errors come back as our own exceptions carrying
the server's message, so the CLI prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from spikescan import errors as e
from workers.jobs import OUTPUTS

_BY_STATUS: dict[int, type[e.SpikescanError]] = {
    401: e.Unauthorized,
    403: e.Forbidden,
    404: e.NotFound,
    413: e.PayloadTooLarge,
    422: e.InvalidScene,
    429: e.QueueFull,  # the server's back-pressure: the message says when to come back
    503: e.Unavailable,
}
FINAL = ("done", "failed", "cancelled")


class Client:
    def __init__(self, server: str, api_key: str | None = None, timeout_s: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        response.read()
        try:
            err = response.json()["error"]
            message = f"{err['message']} (HTTP {response.status_code} {err['code']})"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code} from {response.request.url}"
        raise _BY_STATUS.get(response.status_code, e.InvalidInput)(message)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._check(self.http.request(method, url, **kwargs))
        except httpx.TransportError as exc:
            raise e.BackendUnavailable(f"cannot reach {self.http.base_url}: {exc}") from None

    def upload(
        self,
        scene: Path,
        model: str,
        bands: str | None = None,
        stride: int | None = None,
        **inputs: float | None,
    ) -> dict[str, Any]:
        """``inputs``: the optional ``scale``, ``nodata`` (workers/input_check.py), ``min_score`` and
        ``nms_iou`` (a detector's peak picking)."""
        form = {
            "model": model,
            **({"bands": bands} if bands else {}),
            **({"stride": str(stride)} if stride else {}),
            **{k: repr(float(v)) for k, v in inputs.items() if v is not None},
        }
        try:
            fh = open(scene, "rb")  # noqa: SIM115 - closed below, after the streamed request
        except OSError as exc:
            raise e.InvalidScene(f"{scene}: cannot read ({exc.strerror})") from None
        with fh:
            return self._request(
                "POST", "/v1/jobs", data=form, files={"scene": (scene.name, fh, "image/tiff")}
            ).json()  # type: ignore[no-any-return]

    def submit_uris(
        self,
        uris: list[str],
        model: str,
        bands: str | None = None,
        stride: int | None = None,
        **inputs: float | None,
    ) -> dict[str, Any]:
        body = {"uris": uris, "model": model, "bands": bands, "stride": stride} | {
            k: v for k, v in inputs.items() if v is not None
        }
        return self._request("POST", "/v1/batches", json=body).json()  # type: ignore[no-any-return]

    def status(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's status after every change, until a final state (server-sent events)."""
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
                self._check(response)
                for line in response.iter_lines():
                    if line.startswith("data:") and line[5:].strip() not in ("", "{}"):
                        yield json.loads(line[5:])
        except httpx.TransportError as exc:
            raise e.BackendUnavailable(f"lost the event stream of job {job_id}: {exc}") from None

    def wait(self, job_id: str, on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        last: dict[str, Any] = {}
        for last in self.events(job_id):
            if on_update:
                on_update(last)
        return last if last.get("status") in FINAL else self.status(job_id)

    def download(self, job_id: str, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in OUTPUTS:
            target = out_dir / name
            with self.http.stream("GET", f"/v1/jobs/{job_id}/results/{name}") as response:
                self._check(response)
                with open(target, "wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
            paths.append(target)
        return paths


def _progress_line(status: dict[str, Any]) -> str:
    p = status["progress"]
    rate = f"{p['chips_per_s']:.1f} chips/s" if p.get("chips_per_s") else "-"
    eta = f"ETA {p['eta_s']:.0f} s" if p.get("eta_s") is not None else ""
    return (
        f"{status['id']} {status['status']:<10} {p['chips_done']}/{p['chips_total']} chips "
        f"({p['chips_failed']} failed) {rate} {eta}".rstrip()
    )


def main(args: argparse.Namespace) -> int:
    client = Client(args.server, args.api_key or os.environ.get("SPIKESCAN_API_KEY"))
    try:
        inputs = {"scale": args.scale, "nodata": args.nodata, "min_score": args.min_score,
                  "nms_iou": args.nms_iou}
        if args.uri:
            jobs = [
                j["id"]
                for j in client.submit_uris(
                    list(args.scenes), args.model, args.bands, args.stride, **inputs
                )["jobs"]
            ]
        else:
            jobs = [
                client.upload(Path(s), args.model, args.bands, args.stride, **inputs)["id"]
                for s in args.scenes
            ]
        for job_id in jobs:
            print(job_id)
        if not args.wait:
            return 0
        failed = 0
        for job_id in jobs:
            final = client.wait(job_id, lambda s: print(_progress_line(s), file=sys.stderr))
            if final["status"] != "done":
                failed += 1
                print(f"{job_id}: {final['status']}: {final.get('error') or ''}", file=sys.stderr)
                continue
            for warning in final.get("warnings", []):
                print(f"{job_id}: warning: {warning['message']}", file=sys.stderr)
            out = Path(args.out) / job_id
            client.download(job_id, out)
            print(f"{job_id}: done, results in {out.resolve()}")
        return 1 if failed else 0
    finally:
        client.close()
