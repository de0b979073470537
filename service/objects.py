"""A stored file as an HTTP response, with ``Range``: from the data dir as a file, from a bucket as a proxy.

With a bucket the API proxies ranged GETs rather than redirecting to a presigned URL: the bucket's endpoint
is often private (an in-cluster MinIO, a VPC endpoint) and unreachable for QGIS on an analyst's laptop, a
redirect would leave the API's own auth and signed URLs behind, and GDAL's /vsicurl/ then sees one server
with one behaviour. Each ranged GET becomes one ranged GET on the bucket, streamed through in chunks, so the
API holds a chunk per request, never a file.
"""

from __future__ import annotations

import re

from fastapi.responses import FileResponse, Response, StreamingResponse

from workers.objectstore import ObjectStore

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def stored_response(
    objects: ObjectStore, key: str, *, media_type: str, filename: str, range_header: str | None, head: bool
) -> Response:
    """The object ``key`` (the caller has checked it exists) as a response honouring one byte range."""
    root = objects.local_root
    if root is not None:  # starlette's FileResponse does Range, HEAD and conditional requests itself
        return FileResponse(
            root / key, media_type=media_type, filename=filename, content_disposition_type="inline"
        )
    size = objects.size(key)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{filename}"',
    }
    if size is None:  # expired or deleted between the check and now
        return Response(status_code=404)
    span = _parse_range(range_header, size)
    if span == "unsatisfiable":
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = span if span is not None else (0, size - 1)
    headers["Content-Length"] = str(end - start + 1)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if head or size == 0:
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        objects.read_range(key, start, end), status_code=status, headers=headers, media_type=media_type
    )


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range as (start, end) inclusive; None to send the whole file (no header, several
    ranges, or a unit we do not know: RFC 9110 lets a server ignore Range); "unsatisfiable" for a 416."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # bytes=-N: the last N bytes
        n = int(match[2])
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end
