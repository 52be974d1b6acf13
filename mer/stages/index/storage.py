"""The one place a boto3 S3 client is built, and the few object operations publish/reader need.

Endpoint: ``cfg.publish.endpoint_url`` or ``AWS_ENDPOINT_URL``. Credentials come only from the
boto chain (environment, profile, instance role; an Airflow connection exports them as env).
Retries: botocore ``standard`` mode with ``cfg.publish.max_attempts`` (5xx, throttling, resets).
Every key is built by ``Store.key`` and must stay under the configured prefix.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path, PurePosixPath

from mer.base.config import MerConfig
from mer.base.errors import StorageError

CHUNK = 8 * 2**20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def endpoint_url(cfg: MerConfig) -> str | None:
    return cfg.publish.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(cfg: MerConfig, retry_mode: str = "standard"):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=cfg.publish.region)
    if session.get_credentials() is None:
        raise StorageError(
            "object storage: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE, or export the Airflow connection to the environment)"
        )
    endpoint = endpoint_url(cfg)
    config = Config(
        retries={"mode": retry_mode, "max_attempts": cfg.publish.max_attempts},
        # Path-style works on every S3-compatible server (MinIO, moto, Ceph); AWS accepts it too.
        s3={"addressing_style": "path"} if endpoint else {},
        connect_timeout=10,
        read_timeout=60,
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


class Store:
    """A bucket + prefix; every operation maps botocore failures to StorageError naming the key."""

    def __init__(self, cfg: MerConfig, client=None):
        self.cfg = cfg
        self.bucket = cfg.publish.bucket
        self.prefix = cfg.publish.prefix.strip("/")
        self.client = client if client is not None else make_client(cfg)

    # ---- keys
    def key(self, *parts: str) -> str:
        rel = PurePosixPath(*[p.strip("/") for p in parts if p])
        if any(seg in ("..", ".") for seg in rel.parts) or rel.is_absolute():
            raise StorageError(f"object storage: refusing key {str(rel)!r} outside prefix {self.prefix!r}")
        return f"{self.prefix}/{rel}" if self.prefix else str(rel)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _call(self, what: str, key: str, fn, *args, **kwargs):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            raise StorageError(f"object storage: {what} {self.url(key)} failed: {_error_code(exc)} {exc}") from None
        except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: the transfer manager's S3UploadFailedError
            raise StorageError(f"object storage: {what} {self.url(key)} failed: {exc}") from None

    # ---- bucket
    def ensure_bucket(self) -> None:
        """Check the bucket by listing one key under our prefix (create it only where that is allowed).

        Not HeadBucket: AWS authorises HeadBucket as ``s3:ListBucket`` with no ``s3:prefix``, which the
        least-privilege policy (listing only under the prefix, docker/iam-policy.json) denies."""
        from botocore.exceptions import ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/", MaxKeys=1)
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"object storage: bucket {self.bucket} not usable under {self.prefix!r}: "
                                   f"{_error_code(exc)} (check the credentials' policy)") from None
            kwargs = {}
            if self.cfg.publish.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.cfg.publish.region}
            self._call("create bucket", "", self.client.create_bucket, Bucket=self.bucket, **kwargs)
        except Exception as exc:  # endpoint down, DNS: say which endpoint
            raise StorageError(f"object storage: endpoint {endpoint_url(self.cfg) or 'AWS'} unreachable: {exc}") from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists, by listing (allowed under the prefix) rather than by a GET/HEAD that
        AWS answers 403, not 404, for a missing key when the caller lacks an unconditioned ListBucket."""
        resp = self._call("list", key, self.client.list_objects_v2, Bucket=self.bucket, Prefix=key, MaxKeys=1)
        return any(o["Key"] == key for o in resp.get("Contents", []))

    # ---- objects
    def upload_file(self, path: Path, key: str, sha256: str) -> None:
        """Transfer manager (multipart above the threshold) with S3-side SHA-256 and ours in metadata."""
        from boto3.s3.transfer import TransferConfig

        mb = 2**20
        transfer = TransferConfig(
            multipart_threshold=self.cfg.publish.multipart_threshold_mb * mb,
            multipart_chunksize=max(self.cfg.publish.multipart_threshold_mb, 5) * mb,
        )
        extra = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256}}
        self._call("upload", key, self.client.upload_file, str(path), self.bucket, key, ExtraArgs=extra, Config=transfer)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        sha = hashlib.sha256(data).hexdigest()
        self._call(
            "put", key, self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
            ContentType=content_type, ChecksumAlgorithm="SHA256", Metadata={"sha256": sha},
        )

    def put_json(self, key: str, obj: object) -> None:
        self.put_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            if _error_code(exc) in ("AccessDenied", "403") and not self.exists(key):
                return None  # AWS says 403 for a missing key to callers without bucket-wide listing
            raise StorageError(f"object storage: get {self.url(key)} failed: {exc}") from None

    def get_json(self, key: str) -> dict | None:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            if _error_code(exc) in ("AccessDenied", "403") and not self.exists(key):
                return None
            raise StorageError(f"object storage: head {self.url(key)} failed: {exc}") from None

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._call("download", key, self.client.download_file, self.bucket, key, str(path))

    def list(self, prefix: str) -> dict[str, dict]:
        """key -> {size, last_modified} for every object under ``prefix/``."""
        out = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/")
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = {"size": obj["Size"], "last_modified": obj["LastModified"]}
        except Exception as exc:
            raise StorageError(f"object storage: list {self.url(prefix)} failed: {exc}") from None
        return out

    def delete_prefix(self, prefix: str) -> int:
        if not prefix.startswith(self.prefix + "/") or prefix.rstrip("/") == self.prefix:
            raise StorageError(f"object storage: refusing to delete {prefix!r} (not a version under {self.prefix!r})")
        keys = list(self.list(prefix))
        # One DeleteObject per key: each is authorised against the key's own ARN (the policy grants
        # s3:DeleteObject under the prefix only); a batch DeleteObjects answers 200 with per-key errors,
        # which some servers (moto) authorise against the bucket ARN and would silently not delete.
        for key in keys:
            self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=key)
        left = self.list(prefix)
        if left:
            raise StorageError(f"object storage: delete {self.url(prefix)} left {len(left)} object(s), e.g. {next(iter(left))}")
        return len(keys)


def s3_checksum_matches(head: dict, sha256_hex: str) -> bool | None:
    """Compare S3's own SHA-256 (single-part uploads) with ours; None when S3 has a composite/no checksum.

    A multipart upload's checksum is a checksum of the parts' checksums. AWS marks it (``-N`` suffix,
    ``ChecksumType: COMPOSITE``); some S3-compatible servers (moto) return it bare, so the multipart
    ETag (``"<md5>-<parts>"``) is the reliable sign. Those objects are checked by our own SHA-256 in
    the metadata and by the reader hashing what it downloads.
    """
    value = head.get("ChecksumSHA256")
    multipart = "-" in str(head.get("ETag", "")).strip('"')
    if not value or multipart or "-" in value or head.get("ChecksumType") == "COMPOSITE":
        return None
    return base64.b64decode(value).hex() == sha256_hex
