"""The HTTP client behind ``spikescan submit``: upload or batch-submit, follow progress, download results.

Uploads stream from disk (httpx reads the file in chunks). Progress is followed over the job's server-sent
events; results are streamed to ``<out>/<job id>/``. Server errors come back as our own exceptions carrying
the server's message, so the CLI prints one line and exits 2.

A server that is busy rather than refusing (429 ``queue_full``, 503 ``storage_unavailable`` /
``queue_unavailable``, always with ``Retry-After``) is asked again after the time it names, while the
session's ``--max-wait`` budget lasts; past it the ``Unavailable`` reaches the CLI, which exits 75
(``spikescan.cli.EXIT_STATUS``): the same command may well succeed later, unlike a bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

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
    503: e.BackendUnavailable,  # without Retry-After: the server cannot do this (a broken model package)
}
# Answers that mean "busy, come back in Retry-After seconds", by the error body's code.
_BUSY: dict[str, type[e.Unavailable]] = {
    cls.code: cls for cls in (e.Unavailable, e.QueueFull, e.QueueUnavailable, e.StorageDown)
}
FINAL = ("done", "failed", "cancelled")
T = TypeVar("T")


def retry_after_s(value: str | None) -> int | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    if value.strip().isdigit():
        return int(value)
    try:
        return max(0, round(parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError):
        return None


class Client:
    """``max_wait_s``: how long, in all, this client may wait for a busy server (``on_wait`` is told of each
    wait); 0 gives a busy answer back at once as ``Unavailable``."""

    def __init__(
        self,
        server: str,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_wait_s: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout_s)
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0
        self.on_wait = on_wait

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        response.read()
        try:
            err = response.json()["error"]
            message = f"{err['message']} (HTTP {response.status_code} {err['code']})"
            code = str(err["code"])
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code} from {response.request.url}"
            code = ""
        after = retry_after_s(response.headers.get("retry-after"))
        if response.status_code in (429, 503) and after is not None:
            busy = _BUSY.get(code, e.QueueFull if response.status_code == 429 else e.Unavailable)
            raise busy(message, after)
        raise _BY_STATUS.get(response.status_code, e.InvalidInput)(message)

    def _patiently(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, made again after each busy answer's ``Retry-After`` while the budget lasts. A wait
        never outlasts what is left of the budget: the last try comes when it runs out, then we give up."""
        while True:
            try:
                return attempt()
            except e.Unavailable as exc:
                left = self.max_wait_s - self.waited_s
                if left <= 0:
                    if self.max_wait_s > 0:
                        raise type(exc)(
                            f"{exc.raw}; gave up after waiting {self.waited_s:.0f} s (--max-wait)",
                            exc.retry_after_s,
                        ) from None
                    raise
                pause = min(max(exc.retry_after_s, 1), left)  # never a busy loop on "Retry-After: 0"
                if self.on_wait:
                    self.on_wait(
                        f"server busy ({exc.code}): retrying in {pause:.0f} s "
                        f"({left - pause:.0f} s of --max-wait left after that)"
                    )
                time.sleep(pause)
                self.waited_s += pause

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

        def attempt() -> dict[str, Any]:  # the file opened afresh each try: a refused one may be half sent
            try:
                fh = open(scene, "rb")  # noqa: SIM115 - closed below, after the streamed request
            except OSError as exc:
                raise e.InvalidScene(f"{scene}: cannot read ({exc.strerror})") from None
            with fh:
                return self._request(
                    "POST", "/v1/jobs", data=form, files={"scene": (scene.name, fh, "image/tiff")}
                ).json()  # type: ignore[no-any-return]

        return self._patiently(attempt)

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

        def post() -> dict[str, Any]:
            return self._request("POST", "/v1/batches", json=body).json()  # type: ignore[no-any-return]

        return self._patiently(post)

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
            self._patiently(lambda name=name, target=target: self._fetch(job_id, name, target))
            paths.append(target)
        return paths

    def _fetch(self, job_id: str, name: str, target: Path) -> None:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/results/{name}") as response:
            self._check(response)
            with open(target, "wb") as fh:
                for chunk in response.iter_bytes(1 << 20):
                    fh.write(chunk)


def _progress_line(status: dict[str, Any]) -> str:
    p = status["progress"]
    rate = f"{p['chips_per_s']:.1f} chips/s" if p.get("chips_per_s") else "-"
    eta = f"ETA {p['eta_s']:.0f} s" if p.get("eta_s") is not None else ""
    return (
        f"{status['id']} {status['status']:<10} {p['chips_done']}/{p['chips_total']} chips "
        f"({p['chips_failed']} failed) {rate} {eta}".rstrip()
    )


def main(args: argparse.Namespace) -> int:
    client = Client(
        args.server,
        args.api_key or os.environ.get("SPIKESCAN_API_KEY"),
        max_wait_s=args.max_wait,
        on_wait=lambda line: print(f"spikescan: {line}", file=sys.stderr, flush=True),
    )
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
