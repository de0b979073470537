"""The S3 client libraries ``spikescan bench objectstore`` compares, each behind the few calls the pipeline
makes of its store (``workers.objectstore.ObjectStore``): PUT and GET of whole small objects, HEAD, a
ranged GET, listing a prefix and deleting one.

obstore is measured through the project's own ``S3Store`` (its retry and timeout configuration included),
so its column is what production runs. boto3 (what ``S3Store`` used before this measurement) and s3fs get
a thin adapter each, configured the way a production store would be: credentials and endpoint from the
standard ``AWS_*`` environment, boto3 with standard-mode retries, s3fs with its listing cache off (the
mosaicker must see objects another host wrote a moment ago).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Any, Protocol


class Client(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def size(self, key: str) -> int | None: ...
    def get_range(self, key: str, start: int, end: int) -> bytes: ...
    def names(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...


class Obstore:
    """The project's ``S3Store`` as it is."""

    def __init__(self, bucket: str, prefix: str) -> None:
        from workers.objectstore import S3Store

        self.store = S3Store(bucket, prefix)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.store.put_bytes(key, data)

    def get_bytes(self, key: str) -> bytes | None:
        return self.store.get_bytes(key)

    def size(self, key: str) -> int | None:
        return self.store.size(key)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        return b"".join(self.store.read_range(key, start, end))

    def names(self, prefix: str) -> list[str]:
        return self.store.names(prefix)

    def delete_prefix(self, prefix: str) -> None:
        self.store.delete_prefix(prefix)


class Boto3:
    """boto3's S3 client, one per process (thread-safe), standard retries as a production store would."""

    def __init__(self, bucket: str, prefix: str) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/") + "/"
        config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10, read_timeout=60)
        self.client: Any = boto3.client("s3", config=config)

    def _missing(self, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        got = self._missing(self.client.get_object, Key=self.prefix + key)
        return None if got is None else bytes(got["Body"].read())

    def size(self, key: str) -> int | None:
        got = self._missing(self.client.head_object, Key=self.prefix + key)
        return None if got is None else int(got["ContentLength"])

    def get_range(self, key: str, start: int, end: int) -> bytes:
        got = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes={start}-{end}")
        return bytes(got["Body"].read())

    def names(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                     Prefix=self.prefix + prefix)
        return sorted(o["Key"][len(self.prefix):] for page in pages for o in page.get("Contents", []))

    def delete_prefix(self, prefix: str) -> None:
        keys = [self.prefix + k for k in self.names(prefix)]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys a request
            batch = {"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            self.client.delete_objects(Bucket=self.bucket, Delete=batch)


class S3fs:
    """fsspec's s3fs (aiobotocore under a private event-loop thread)."""

    def __init__(self, bucket: str, prefix: str) -> None:
        import s3fs

        self.root = f"{bucket}/{prefix.strip('/')}"
        self.fs: Any = s3fs.S3FileSystem(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
            use_listings_cache=False,
            skip_instance_cache=True,
        )

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put_bytes(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None

    def size(self, key: str) -> int | None:
        try:
            return int(self.fs.info(self._path(key))["size"])
        except FileNotFoundError:
            return None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        return bytes(self.fs.cat_file(self._path(key), start=start, end=end + 1))

    def names(self, prefix: str) -> list[str]:
        base = self.root + "/"
        return sorted(p[len(base):] for p in self.fs.find(self._path(prefix)))

    def delete_prefix(self, prefix: str) -> None:
        paths = self.fs.find(self._path(prefix))
        if paths:
            self.fs.rm(paths)


# name -> (adapter, the distribution it needs)
LIBRARIES: dict[str, tuple[type[Obstore] | type[Boto3] | type[S3fs], str]] = {
    "obstore": (Obstore, "obstore"),
    "boto3": (Boto3, "boto3"),
    "s3fs": (S3fs, "s3fs"),
}


def available() -> dict[str, str | None]:
    """Each library's installed version, None where it is not installed here."""
    found: dict[str, str | None] = {}
    for name, (_, dist) in LIBRARIES.items():
        found[name] = importlib.metadata.version(dist) if importlib.util.find_spec(dist) else None
    return found


def open_client(name: str, bucket: str, prefix: str) -> Client:
    adapter, _ = LIBRARIES[name]
    client: Client = adapter(bucket, prefix)
    return client
