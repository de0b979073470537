"""/docs and /redoc work offline: every script, style and icon they load comes from this server."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.service.conftest import Stack


PAGES = [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]


@pytest.mark.parametrize(("page", "script"), PAGES)
def test_api_docs_pages_load_only_local_assets(stack: Stack, page: str, script: str) -> None:
    with stack.client(key=None) as http:
        html = http.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        refs = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html.text) + re.findall(
            r"url: ['\"]([^'\"]+)['\"]", html.text
        )
        assert refs and not [r for r in refs if r.startswith(("http:", "https:", "//"))], refs
        assert f"/apidocs/{script}" in refs
        for ref in refs:
            got = http.get(ref)
            assert got.status_code == 200 and got.content, ref
        assert http.get("/openapi.json").json()["info"]["title"] == "spikescan"
