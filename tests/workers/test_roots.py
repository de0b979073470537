"""The API's allow-list (workers.roots): URL prefixes compared as parts, never as strings; local roots with
symlinks resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikescan.errors import Forbidden, InvalidInput, InvalidScene
from workers.roots import InputRoots

ROOTS = InputRoots(["https://data.example.org/scenes/", "s3://bucket/prefix", "http://127.0.0.1:8123/www"])


@pytest.mark.parametrize(
    "uri",
    [
        "https://data.example.org/scenes/a.tif",
        "https://DATA.example.org:443/scenes/sub/a.tif",  # host case and the default port do not matter
        "https://data.example.org/scenes/a.tif?X-Amz-Signature=abc",  # a presigned URL keeps its query
        "s3://bucket/prefix/a.tif",
        "s3://bucket/prefix/deep/er/a.tif",
        "http://127.0.0.1:8123/www/a.tif",
    ],
)
def test_urls_under_a_prefix_are_admitted_as_given(uri: str) -> None:
    assert ROOTS.admit(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://data.example.org.evil.com/scenes/a.tif",  # a string prefix would pass this one
        "https://data.example.org:8443/scenes/a.tif",  # another port is another server
        "https://data.example.org/scenes-private/a.tif",  # segment by segment, not characters
        "https://data.example.org/a.tif",
        "http://data.example.org/scenes/a.tif",  # plain http only where a root says http
        "s3://bucket/prefixed/a.tif",
        "s3://bucket2/prefix/a.tif",
        "https://127.0.0.1:8123/www/a.tif",
    ],
)
def test_urls_beside_a_prefix_are_forbidden(uri: str) -> None:
    with pytest.raises(Forbidden, match="outside the server's input roots"):
        ROOTS.admit(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("https://data.example.org/scenes/../secret/a.tif", "'.' and '..' path segments"),
        ("https://data.example.org/scenes/%2e%2e/secret/a.tif", "'.' and '..' path segments"),
        ("s3://bucket/prefix/..%2F..%2Fother/a.tif", "'.' and '..' path segments"),
        ("https://data.example.org@evil.com/scenes/a.tif", "user information"),
        ("https://data.example.org/scenes/a.tif%00.png", "NUL byte"),
        ("https://data.example.org/scenes/a.tif#x", "fragment"),
        ("ftp://data.example.org/scenes/a.tif", "unsupported scheme 'ftp'"),
        ("gs://bucket/prefix/a.tif", "unsupported scheme 'gs'"),
        ("s3:///a.tif", "no host"),
    ],
)
def test_urls_the_list_cannot_judge_are_bad_input(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        ROOTS.admit(uri)
    assert not isinstance(err.value, Forbidden)


def test_local_roots_resolve_symlinks_and_sit_beside_url_roots(tmp_path: Path) -> None:
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "a.tif").write_bytes(b"II*\x00")
    (tmp_path / "b.tif").write_bytes(b"II*\x00")
    (inside / "link.tif").symlink_to(tmp_path / "b.tif")
    roots = InputRoots([str(inside), "s3://bucket/prefix/"])
    assert roots.admit(str(inside / "a.tif")) == str((inside / "a.tif").resolve())
    assert roots.admit(f"file://{inside}/a.tif") == str((inside / "a.tif").resolve())
    with pytest.raises(Forbidden):
        roots.admit(str(inside / "link.tif"))
    with pytest.raises(InvalidScene, match="no such file"):
        roots.admit(str(inside / "missing.tif"))
    with pytest.raises(Forbidden, match="no input roots are configured"):
        InputRoots([]).admit("s3://bucket/prefix/a.tif")
