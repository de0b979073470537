"""The API's allow-list: a scene a remote caller names must lie under one of ``SPIKESCAN_INPUT_ROOTS``.

A root is a local directory or a URL prefix (``https://host/scenes/``, ``s3://bucket/prefix/``). Local
paths are compared after resolving symlinks on both sides. URLs are compared as parts, never as strings:
scheme, host and port exactly (``https://host.evil`` is not under ``https://host``), then the path segment
by segment (``/scenes-private/`` is not under ``/scenes``), after percent-decoding, with any ``.`` or ``..``
segment refused outright (a server or GDAL would fold it, and the check would have judged another path).
User info in a URL (``https://host@evil/``) is refused too: it is how such tricks are usually spelled.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from spikescan.errors import Forbidden, InvalidInput, InvalidScene

REMOTE_SCHEMES = ("https", "http", "s3")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _UrlKey:
    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]

    def under(self, root: _UrlKey) -> bool:
        return (
            (self.scheme, self.host, self.port) == (root.scheme, root.host, root.port)
            and self.segments[: len(root.segments)] == root.segments
        )


def _url_key(url: str) -> _UrlKey:
    """``url`` split into what the allow-list compares; ``InvalidInput`` for what it cannot judge."""
    if "\0" in url or "%00" in url:
        raise InvalidInput(f"{url!r}: a URL cannot contain a NUL byte")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "@" in parts.netloc:
        raise InvalidInput(f"{url}: URLs with user information (user@host) are not accepted")
    if parts.fragment:
        raise InvalidInput(f"{url}: a scene URL has no #fragment")
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        raise InvalidInput(f"{url}: invalid port") from None
    host = parts.hostname or ""
    if not host:
        raise InvalidInput(f"{url}: no host (or bucket) in the URL")
    segments = tuple(unquote(s) for s in parts.path.split("/") if s)
    # After decoding, a segment may hold a slash of its own ("..%2F..") : split again before judging.
    flat = tuple(p for s in segments for p in s.split("/"))
    if any(p in (".", "..") for p in flat):
        raise InvalidInput(f"{url}: '.' and '..' path segments are not accepted in a URL")
    return _UrlKey(scheme, host, port, tuple(p for p in flat if p))


class InputRoots:
    """``SPIKESCAN_INPUT_ROOTS``, parsed once: local directories and URL prefixes."""

    def __init__(self, roots: Sequence[str | Path]) -> None:
        self.dirs: list[Path] = []
        self.urls: list[_UrlKey] = []
        for root in roots:
            text = str(root)
            if urlsplit(text).scheme.lower() in REMOTE_SCHEMES:
                self.urls.append(_url_key(text))
            else:
                self.dirs.append(Path(os.path.realpath(text)))

    def admit(self, uri: str) -> str:
        """The reference to record for ``uri``: a real path for a local file, the URL itself for a remote
        one (its reachability and content are for ``workers.sources`` to check)."""
        scheme = urlsplit(uri).scheme.lower()
        if scheme in REMOTE_SCHEMES:
            return self._admit_url(uri)
        if scheme not in ("", "file"):
            raise InvalidInput(
                f"{uri}: unsupported scheme {scheme!r}: give a path, an https:// or s3:// URL under one of "
                "the server's input roots"
            )
        return str(self._admit_path(uri, scheme))

    def _admit_url(self, uri: str) -> str:
        key = _url_key(uri)
        if not any(key.under(root) for root in self.urls):
            raise Forbidden(f"{uri}: not accepted: {self._why_not('URL')}")
        return uri

    def _admit_path(self, uri: str, scheme: str) -> Path:
        raw = unquote(urlsplit(uri).path) if scheme == "file" else uri
        if "\0" in raw:
            raise InvalidInput(f"{uri!r}: a path cannot contain a NUL byte")
        if not os.path.isabs(raw):
            raise InvalidInput(f"{uri}: give an absolute path under one of the server's input roots")
        real = Path(os.path.realpath(raw))
        if not any(real == root or real.is_relative_to(root) for root in self.dirs):
            raise Forbidden(f"{uri}: not accepted: {self._why_not('path')}")
        if not real.is_file():
            raise InvalidScene(f"{uri}: no such file under the input roots")
        return real

    def _why_not(self, kind: str) -> str:
        if not self.dirs and not self.urls:
            return "no input roots are configured (SPIKESCAN_INPUT_ROOTS)"
        return f"this {kind} is outside the server's input roots"
