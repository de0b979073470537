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


# Variables that are not spikescan's settings but are meant: the AWS SDK's and GDAL's (the bucket), the
# BLAS/OpenMP runtimes' thread counts, and the Redis password the manifests build the Redis URL from.
OTHER_ENV = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "REDIS_PASSWORD", "REDISCLI_AUTH",
}
THREAD_ENV = ("SPIKESCAN_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
NAMESPACE = "spikescan"
README = (REPO_ROOT / "deploy" / "README.md").read_text()


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _settings_env(names: list[str]) -> list[str]:
    """Variables that are not fields of Settings (a typo would be silently ignored by pydantic-settings) nor
    one of the others we mean (OTHER_ENV)."""
    fields = set(Settings.model_fields)
    return [
        n
        for n in names
        if n not in OTHER_ENV
        and (not n.startswith("SPIKESCAN_") or n.removeprefix("SPIKESCAN_").lower() not in fields)
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
    assert set(parsed.service_names()) == {"redis", "minio", "bucket", *APP_SERVICES}


def _redis_flags(command: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in zip(command, command[1:], strict=False) if flag.startswith("--")}


def test_compose_services_share_only_redis_and_the_bucket(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis_flags = _redis_flags(services["redis"]["command"])
    assert redis_flags["--appendonly"] == "yes" and redis_flags["--maxmemory-policy"] == "noeviction"
    assert redis_flags["--maxmemory"] and redis_flags["--requirepass"].startswith("${REDIS_PASSWORD:?")
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == redis_flags["--requirepass"]  # healthcheck
    # The bucket the store URL names is the one the one-shot `bucket` service creates, on the minio service.
    made = re.search(r"mc mb --ignore-existing local/(\S+)", services["bucket"]["command"][0])
    assert made is not None
    for name in APP_SERVICES:
        s = services[name]
        env = s["environment"]
        assert s["image"] == "spikescan:latest" and "volumes" not in s  # no shared volume: the bucket
        assert env["SPIKESCAN_REDIS_URL"] == "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0"
        assert env["SPIKESCAN_STORAGE_URL"].startswith(f"s3://{made[1]}/")
        assert env["SPIKESCAN_INPUT_ROOTS"].startswith(f"s3://{made[1]}/")
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and "minio" in services
        assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
        assert {env[t] for t in THREAD_ENV} == {"1"}
        assert s["depends_on"]["bucket"]["condition"] == "service_completed_successfully"
        assert _settings_env(list(env)) == []
    for role, name in (("chip", "chipper"), ("infer", "inference"), ("mosaic", "mosaicker")):
        assert services[name]["command"] == ["worker", "--role", role]
        alive = services["inference"]["environment"]["SPIKESCAN_WORKER_ALIVE_FILE"]
        assert alive in " ".join(services[name]["healthcheck"]["test"])
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


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}


def _pods(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = ("Deployment", "StatefulSet")
    return {name: d["spec"]["template"]["spec"] for (kind, name), d in k8s.items() if kind in kinds}


def _app_containers(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: pod["containers"][0]
        for name, pod in _pods(k8s).items()
        if pod["containers"][0]["image"].startswith("spikescan:")
    }


def _secret_refs(k8s: dict[tuple[str, str], dict[str, Any]]) -> set[tuple[str, str | None]]:
    """(Secret, key) pairs the manifests read; key None for a whole Secret as environment (envFrom)."""
    refs: set[tuple[str, str | None]] = set()
    for pod in _pods(k8s).values():
        for c in pod["containers"]:
            refs |= {(r["secretRef"]["name"], None) for r in c.get("envFrom", []) if "secretRef" in r}
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    for (kind, _), d in k8s.items():
        if kind == "TriggerAuthentication":
            refs |= {(t["name"], t["key"]) for t in d["spec"]["secretTargetRef"]}
    return refs


def test_secrets_are_created_once_by_hand_never_applied(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    # `kubectl apply -f deploy/` must not overwrite the operator's keys and passwords: no Secret is applied,
    # and every Secret (and key) the manifests read is made by a `kubectl create secret` line of the README.
    assert not [name for kind, name in k8s if kind == "Secret"]
    created: dict[str, set[str]] = {}
    for line in re.findall(r"kubectl -n spikescan create secret generic .+", README):
        name = line.split("generic ")[1].split()[0]
        created.setdefault(name, set()).update(re.findall(r"--from-literal=([A-Za-z_]+)=", line))
    refs = _secret_refs(k8s)
    assert {name for name, _ in refs} == set(created)
    for name, key in refs:
        assert key is None or key in created[name], (name, key)
    assert created["spikescan-api-keys"] == {"SPIKESCAN_API_KEYS"}
    assert created["spikescan-s3"] == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert _settings_env(sorted(k for keys in created.values() for k in keys if k.isupper())) == []


def test_no_shared_volume_the_bucket_instead(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = k8s[("ConfigMap", "spikescan-config")]["data"]
    assert config["SPIKESCAN_STORAGE_URL"].startswith("s3://")
    assert not [name for kind, name in k8s if kind == "PersistentVolumeClaim"]
    for name, container in _app_containers(k8s).items():
        pod = _pods(k8s)[name]
        assert all("emptyDir" in v for v in pod["volumes"]), name  # private scratch only
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert config["SPIKESCAN_DATA_DIR"] in mounts and "/tmp" in mounts, name


def test_redis_has_a_password_a_memory_cap_that_refuses_writes_and_aof(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    redis = k8s[("StatefulSet", "spikescan-redis")]["spec"]["template"]["spec"]["containers"][0]
    flags = _redis_flags(redis["args"])
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "always"
    assert flags["--maxmemory-policy"] == "noeviction"
    env = {v["name"]: v for v in redis["env"]}
    assert flags["--requirepass"] == "$(REDIS_PASSWORD)"
    assert "secretKeyRef" in env["REDIS_PASSWORD"]["valueFrom"]
    assert env["REDISCLI_AUTH"]["valueFrom"] == env["REDIS_PASSWORD"]["valueFrom"]  # the probe authenticates
    # The cap leaves the container room for an AOF rewrite's fork and the client buffers.
    cap = _bytes(flags["--maxmemory"])
    assert 0 < cap <= _bytes(redis["resources"]["limits"]["memory"]) // 2


def _bytes(size: str) -> int:
    """A Redis (1gb, 512mb) or Kubernetes (2Gi, 512Mi) memory size in bytes."""
    m = re.fullmatch(r"(\d+)\s*([kKmMgG])(i|b|B)?", size)
    assert m is not None, size
    return int(m[1]) << {"k": 10, "m": 20, "g": 30}[m[2].lower()]


def _redis_service_fqdn(k8s: dict[tuple[str, str], dict[str, Any]]) -> str:
    service = k8s[("Service", "spikescan-redis")]
    port = service["spec"]["ports"][0]["port"]
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port}"


def test_every_pod_reaches_redis_with_the_password_at_its_full_address(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    config = k8s[("ConfigMap", "spikescan-config")]["data"]
    assert _settings_env(list(config)) == [] and "SPIKESCAN_REDIS_URL" not in config  # it holds the password
    assert not [v for v in config.values() if re.search(r"change-me|placeholder|TODO|<[a-z]", v)]
    for (kind, _), d in k8s.items():
        if kind != "Namespace":
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]
    assert ("Namespace", NAMESPACE) in k8s
    for name, container in _app_containers(k8s).items():
        env = [v["name"] for v in container["env"]]
        url = next(v["value"] for v in container["env"] if v["name"] == "SPIKESCAN_REDIS_URL")
        # Kubernetes expands $(REDIS_PASSWORD) only from a variable defined before it in the same list.
        assert url == f"redis://:$(REDIS_PASSWORD)@{_redis_service_fqdn(k8s)}/0", name
        assert env.index("REDIS_PASSWORD") < env.index("SPIKESCAN_REDIS_URL"), name
        assert _settings_env(env) == [], name
        refs = [r.get("configMapRef", r.get("secretRef"))["name"] for r in container["envFrom"]]
        assert refs[0] == "spikescan-config" and ("ConfigMap", refs[0]) in k8s


def test_keda_scales_inference_on_the_infer_stream_with_auth_from_its_own_namespace(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    keda = k8s[("ScaledObject", "spikescan-inference")]
    target = keda["spec"]["scaleTargetRef"]["name"]
    assert ("Deployment", target) in k8s
    # The autoscaler owns the replica count: re-applying workers.yaml must not reset it.
    assert "replicas" not in k8s[("Deployment", target)]["spec"]
    trigger = keda["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams" and trigger["metadata"]["stream"] == stream_key("infer")
    assert trigger["metadata"]["address"] == _redis_service_fqdn(k8s)
    auth = k8s[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert auth["metadata"]["namespace"] == keda["metadata"]["namespace"]
    redis = k8s[("StatefulSet", "spikescan-redis")]["spec"]["template"]["spec"]["containers"][0]
    secret = next(v for v in redis["env"] if v["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", **secret}]


def _cpus(request: str) -> int:
    """Whole CPUs a request gives (at least one): "2" -> 2, "500m" -> 1."""
    millis = int(request[:-1]) if request.endswith("m") else int(float(request) * 1000)
    return max(1, -(-millis // 1000))


def test_thread_counts_match_the_cpu_requests(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    for name, container in _app_containers(k8s).items():
        env = {v["name"]: v.get("value") for v in container["env"]}
        cpus = _cpus(str(container["resources"]["requests"]["cpu"]))
        assert {env[t] for t in THREAD_ENV} == {str(cpus)}, name


def test_workers_have_liveness_and_readiness_probes_on_their_alive_file(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    alive = k8s[("ConfigMap", "spikescan-config")]["data"]["SPIKESCAN_WORKER_ALIVE_FILE"]
    assert alive.startswith("/tmp/")  # each pod's own emptyDir, never a shared path
    workers = {n: c for n, c in _app_containers(k8s).items() if c["args"][0] == "worker"}
    assert set(workers) == {"spikescan-chipper", "spikescan-inference", "spikescan-mosaicker"}
    for name, container in workers.items():
        for probe in ("livenessProbe", "readinessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["python", "-c"] and repr(alive) in command[2], (name, probe)
            compile(command[2], probe, "exec")  # the probe is valid Python
        liveness = container["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60  # a slow step is no death


def test_dockerfile_is_slim_non_root_and_copies_what_exists() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    assert re.search(r'^ENTRYPOINT \["spikescan"\]', text, re.M)
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for part in src.split():
            assert (REPO_ROOT / part).exists(), part
