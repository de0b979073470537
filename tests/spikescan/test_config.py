"""SPIKESCAN_INPUT_ROOTS as operators write it: commas (documented) or a ``:`` path list like $PATH; a
relative root stops the server at start-up with one line naming the variable, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikescan.config import Settings


@pytest.mark.parametrize(
    ("raw", "roots"),
    [
        ("/data/a,/data/b", ["/data/a", "/data/b"]),
        ("/data/a:/data/b", ["/data/a", "/data/b"]),
        ("/data/a: /data/b;/data/c", ["/data/a", "/data/b", "/data/c"]),
        ("/data/a:s3://bucket/scenes/", ["/data/a", "s3://bucket/scenes/"]),
        ("http://127.0.0.1:8080/x/:/data/a", ["http://127.0.0.1:8080/x/", "/data/a"]),  # a port: no split
        ("https://h:443/s/,/data/a:https://h/t/", ["https://h:443/s/", "/data/a", "https://h/t/"]),
    ],
)
def test_input_roots_split_on_commas_and_the_path_separator(
    raw: str, roots: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIKESCAN_INPUT_ROOTS", raw)
    assert [str(p) for p in Settings().input_roots] == roots


def test_a_relative_root_is_a_one_line_start_up_error(tmp_path: Path) -> None:
    env = {**os.environ, "SPIKESCAN_INPUT_ROOTS": "scenes:/data/b", "SPIKESCAN_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "SPIKESCAN_INPUT_ROOTS" in lines[0] and "scenes" in lines[0], done.stderr


def test_the_public_url_is_kept_without_its_trailing_slash_and_must_be_absolute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPIKESCAN_PUBLIC_URL", "https://scan.example.org/api/")
    assert Settings().public_url == "https://scan.example.org/api"
    monkeypatch.setenv("SPIKESCAN_PUBLIC_URL", "")
    assert Settings().public_url is None
    monkeypatch.setenv("SPIKESCAN_PUBLIC_URL", "scan.example.org")
    with pytest.raises(ValueError, match="SPIKESCAN_PUBLIC_URL"):
        Settings()
