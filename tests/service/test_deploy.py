"""Deployment files, checked offline: they cannot be built or applied here, so every part that can be
validated is (YAML, the Compose specification, the Kubernetes schemas, and their agreement with the code)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from spikescan.config import REPO_ROOT, Settings
from workers.queue import stream_key

K8S_VERSION = "1.33.0"
YAML_FILES = sorted([REPO_ROOT / "docker-compose.yml", *(REPO_ROOT / "deploy").glob("*.yaml")])
APP_SERVICES = ("api", "chipper", "inference", "mosaicker")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _settings_env(names: list[str]) -> list[str]:
    """Variables that are not fields of Settings (a typo would be silently ignored by pydantic-settings)."""
    fields = set(Settings.model_fields)
    return [
        n
        for n in names
        if not n.startswith("SPIKESCAN_") or n.removeprefix("SPIKESCAN_").lower() not in fields
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_every_yaml_file_parses(path: Path) -> None:
    assert _docs(path), path


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the `<<:` merge keys, giving the file exactly as docker compose sees it.
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    parsed = PyCompose.from_json(json.dumps(compose))  # raises ValueError on anything off-spec
    assert set(parsed.service_names()) == {"redis", *APP_SERVICES}


def test_compose_services_share_one_image_volume_and_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"]
    for name in APP_SERVICES:
        s = services[name]
        assert s["image"] == "spikescan:latest" and s["volumes"] == ["spikescan-data:/data"]
        assert s["environment"]["SPIKESCAN_REDIS_URL"] == "redis://redis:6379/0"
        assert _settings_env(list(s["environment"])) == []
    for role, name in (("chip", "chipper"), ("infer", "inference"), ("mosaic", "mosaicker")):
        assert services[name]["command"] == ["worker", "--role", role]
    # --scale needs services without fixed names or host ports.
    assert not {"container_name", "ports"} & set(services["inference"])
    assert services["api"]["environment"]["SPIKESCAN_API_KEYS"].startswith("${SPIKESCAN_API_KEYS:?")


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for p in sorted((REPO_ROOT / "deploy").glob("*.yaml")) for d in _docs(p)]


@pytest.mark.parametrize(
    "doc",
    [
        d
        for d in _k8s_docs()
        if "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].startswith("apps/")
    ],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_kubernetes_manifests_validate_against_the_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_objects_reference_each_other_consistently() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    config = docs[("ConfigMap", "spikescan-config")]["data"]
    assert _settings_env(list(config)) == []
    assert config["SPIKESCAN_REDIS_URL"].startswith("redis://spikescan-redis:")
    assert ("Service", "spikescan-redis") in docs and ("PersistentVolumeClaim", "spikescan-data") in docs
    assert docs[("PersistentVolumeClaim", "spikescan-data")]["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("spikescan-api", "spikescan-chipper", "spikescan-inference", "spikescan-mosaicker"):
        pod = docs[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        ]
        assert claims == ["spikescan-data"]
        refs = [r.get("configMapRef", r.get("secretRef"))["name"] for r in pod["containers"][0]["envFrom"]]
        assert all(("ConfigMap", r) in docs or ("Secret", r) in docs for r in refs)
    keda = docs[("ScaledObject", "spikescan-inference")]
    assert keda["spec"]["scaleTargetRef"]["name"] in {n for k, n in docs if k == "Deployment"}
    trigger = keda["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams" and trigger["metadata"]["stream"] == stream_key("infer")


def test_dockerfile_is_slim_non_root_and_copies_what_exists() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    assert re.search(r'^ENTRYPOINT \["spikescan"\]', text, re.M)
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for part in src.split():
            assert (REPO_ROOT / part).exists(), part
