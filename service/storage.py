"""Uploads streamed to storage in chunks with a size cap, and the paths of a job's files.

A multipart body is parsed as it arrives (python-multipart's streaming parser): file parts go straight to a
staging file under ``<data_dir>/uploads/``, small text fields are kept, and the running size is checked on
every chunk, so an oversize upload is cut off at the cap, never held in memory, and leaves nothing behind.
Staged files are moved into the job's storage (``JobStore.objects``: the data dir or a bucket) only once the
scene has been validated and the job accepted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from spikescan.errors import InvalidInput, OutputError, PayloadTooLarge, writing

MAX_FIELD_BYTES = 64 * 1024
# Room for the multipart envelope around one scene at the cap: boundaries, part headers, the small fields.
ENVELOPE_BYTES = 1 << 20
_FLUSH_BYTES = 256 << 10  # per upload in flight: 20 concurrent uploads hold 5 MB
STALE_UPLOAD_S = 24 * 3600.0


@dataclass
class StagedFile:
    field: str
    filename: str
    path: Path
    size: int = 0


@dataclass
class Upload:
    """What a multipart request carried: text fields and the staged files, in order."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[StagedFile] = field(default_factory=list)

    def discard(self) -> None:
        for f in self.files:
            f.path.unlink(missing_ok=True)


class _Receiver:
    """Callbacks for the streaming parser; file bytes are buffered up to a flush size, then written."""

    def __init__(self, staging: Path, max_bytes: int, refusal: str | None = None) -> None:
        self.staging = staging
        self.max_bytes = max_bytes
        self.refusal = refusal
        self.upload = Upload()
        self._headers: dict[str, str] = {}
        self._header_field = b""
        self._header_value = b""
        self._name = ""
        self._file: StagedFile | None = None
        self._fh: BinaryIO | None = None
        self._text = bytearray()
        self.pending = bytearray()
        self.complete = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._hfield,
            "on_header_value": self._hvalue,
            "on_header_end": self._hend,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._text = {}, bytearray()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field, self._header_value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        self._name = options.get(b"name", b"").decode()
        filename = options.get(b"filename")
        if filename is not None:
            shown = Path(filename.decode(errors="replace")).name
            if self.refusal:
                raise PayloadTooLarge(f"{shown or 'upload'}: {self.refusal}")
            path = self.staging / f"{uuid.uuid4().hex}.part"
            self._file = StagedFile(self._name, shown, path)
            self.upload.files.append(self._file)
            self._fh = open(path, "wb")  # noqa: SIM115 - closed in _part_end or close()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise InvalidInput(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")
            return
        self._file.size += end - start
        if self._file.size > self.max_bytes:
            raise PayloadTooLarge(
                f"{self._file.filename or 'upload'}: larger than the server's limit of "
                f"{self.max_bytes // (1 << 20)} MB (SPIKESCAN_MAX_UPLOAD_MB)"
            )
        self.pending += data[start:end]

    def _end(self) -> None:
        self.complete = True

    def flush(self) -> None:
        if self._fh is not None and self.pending:
            self._fh.write(self.pending)
        self.pending = bytearray()

    def _part_end(self) -> None:
        if self._file is not None:
            self.flush()
            self.close()
            self._file = None
        else:
            self.upload.fields[self._name] = self._text.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


async def receive_multipart(
    content_type: str,
    body: AsyncIterator[bytes],
    staging: Path,
    max_bytes: int,
    refusal: str | None = None,
) -> Upload:
    """Parse a multipart body into an ``Upload``; on any failure every staged file is removed.

    ``refusal``: the body is already known to be too large (its Content-Length); read no further than the
    first file part's headers, to name the file, then refuse with this reason."""
    ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidInput("expected multipart/form-data with a 'scene' file part, or JSON with a 'uri'")
    staging.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(staging, max_bytes, refusal)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    try:
        with writing(staging):  # a full disk is a 507 naming the volume, not a 500
            seen = 0
            async for chunk in body:
                parser.write(chunk)
                seen += len(chunk)
                if refusal and seen > ENVELOPE_BYTES:  # no file part in sight: refuse without its name
                    raise PayloadTooLarge(f"upload: {refusal}")
                if len(receiver.pending) >= _FLUSH_BYTES:
                    await anyio.to_thread.run_sync(receiver.flush)
            parser.finalize()
            if not receiver.complete:
                raise MultipartParseError("body ended before the closing boundary (upload interrupted?)")
            receiver.flush()
    except (PayloadTooLarge, OutputError):
        # Answered at once, the rest of the body unread: uvicorn keeps the connection and discards what
        # still arrives, so a client reading while it sends sees the 413 after little more than the cap,
        # and one that sends everything first still reads it (no reset), without us reading on.
        receiver.close()
        receiver.upload.discard()
        raise
    except MultipartParseError as exc:
        receiver.close()
        receiver.upload.discard()
        raise InvalidInput(f"malformed multipart body ({exc})") from None
    except BaseException:
        receiver.close()
        receiver.upload.discard()
        raise
    receiver.close()
    return receiver.upload


def uploads_dir(data_dir: Path) -> Path:
    return data_dir / "uploads"


def sweep_stale_uploads(staging: Path, max_age_s: float = STALE_UPLOAD_S) -> int:
    """Remove staged files left by a server that died mid-upload. Only old ones: other API replicas on the
    same storage may be receiving uploads right now."""
    if not staging.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    stale = [p for p in staging.glob("*.part") if p.stat().st_mtime < cutoff]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
