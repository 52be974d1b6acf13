"""A local S3-compatible endpoint for the demo and the tests: moto's server on 127.0.0.1.

Real S3 calls over HTTP (boto3 does not know it is not AWS). The endpoint and throwaway
credentials are put in this process's environment only while the server runs and are
restored afterwards. moto keeps objects in memory, so the bucket is mirrored to a folder
(``<root>/s3/<bucket>/``): loaded on start and saved on stop, a later demo run sees the
versions and the ``LATEST`` pointer an earlier one published. The docker deployment uses
MinIO instead (docker/docker-compose.yaml).
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mer.base.errors import MerError

# Throwaway values moto accepts (it checks no signature); a fresh random secret per process, so
# no credential, not even a dummy one, is written in the code.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "mer-local",
    "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def quiet_access_log() -> None:
    # One werkzeug line per request drowns the run's own log; errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=LOCAL_ENV["AWS_DEFAULT_REGION"])


def load_mirror(endpoint: str, bucket: str, mirror: Path | None) -> int:
    """Create ``bucket`` and upload every file of the mirror folder into it; returns the count."""
    s3 = _client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    n = 0
    if mirror is not None and mirror.is_dir():
        for path in sorted(p for p in mirror.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, path.relative_to(mirror).as_posix())
            n += 1
    return n


def save_mirror(endpoint: str, bucket: str, mirror: Path) -> int:
    """Download the whole bucket into a fresh folder, then swap it in for the mirror."""
    s3 = _client(endpoint)
    tmp = mirror.parent / f".{mirror.name}.{uuid.uuid4().hex[:8]}.tmp"
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            target = tmp / obj["Key"]
            if not target.resolve().is_relative_to(tmp.resolve()):
                continue  # a key like ../x must not escape the mirror
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            n += 1
    tmp.mkdir(parents=True, exist_ok=True)
    old = mirror.parent / f".{mirror.name}.{uuid.uuid4().hex[:8]}.old"
    if mirror.exists():
        os.replace(mirror, old)
    os.replace(tmp, mirror)
    shutil.rmtree(old, ignore_errors=True)
    return n


@contextmanager
def local_s3(bucket: str, mirror: Path | None = None) -> Iterator[str]:
    """Run an S3 endpoint on 127.0.0.1 (free port) with ``bucket``; yields its URL.

    Inside the block ``AWS_ENDPOINT_URL`` and throwaway ``AWS_*`` credentials are set, so boto3
    clients built with defaults talk to it.
    """
    from moto.server import ThreadedMotoServer

    quiet_access_log()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with patched_env({**LOCAL_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}):
            load_mirror(endpoint, bucket, mirror)
            try:
                yield endpoint
            finally:
                # Also after a failed run: the bucket is the truth (a reader only trusts manifests).
                if mirror is not None:
                    save_mirror(endpoint, bucket, mirror)
    finally:
        server.stop()


@contextmanager
def storage_for_cli(cfg) -> Iterator[None]:
    """Object storage for ``mer query`` / ``mer rollback``: the configured endpoint when the environment
    names one (endpoint, credentials or profile); on the embedded default, the local endpoint over the
    bucket mirror ``make demo`` left under ``<root>/s3``, so the demo's published index answers
    right away. Neither configured nor mirrored: a
    "nothing published" error names the data root."""
    import sys

    configured = any(os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"))
    mirror = Path(cfg.root) / "s3" / cfg.publish.bucket
    if configured:
        yield
        return
    if not mirror.is_dir():  # not "no credentials": the real cause is that nothing was published here
        raise MerError(f"nothing published under {cfg.root}: run `mer demo` (or the DAG's publish task) first, "
                       "or set AWS_ENDPOINT_URL and credentials to read a remote index")
    print(f"object storage: local S3 endpoint over {mirror} (set AWS_ENDPOINT_URL to use another)", file=sys.stderr)
    with local_s3(cfg.publish.bucket, mirror=mirror):
        yield


def serve(bucket: str, mirror: Path, port: int) -> None:
    """Foreground endpoint for ``make ui`` (127.0.0.1:port) until SIGTERM/Ctrl-C; the mirror is saved on exit."""
    import signal
    import threading

    from moto.server import ThreadedMotoServer

    quiet_access_log()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with patched_env(LOCAL_ENV):
            print(f"local S3 on {endpoint}: {load_mirror(endpoint, bucket, mirror)} objects loaded from {mirror}", flush=True)
            try:
                while not stop.wait(0.5):  # short waits: signal handlers run between them
                    pass
            except KeyboardInterrupt:
                pass
            print(f"local S3: {save_mirror(endpoint, bucket, mirror)} objects saved to {mirror}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    import argparse

    from mer.base.config import load_config

    cfg = load_config()
    parser = argparse.ArgumentParser(description="local S3 endpoint (moto) mirrored under <root>/s3")
    parser.add_argument("--port", type=int, default=9400)
    args = parser.parse_args()
    serve(cfg.publish.bucket, cfg.root / "s3" / cfg.publish.bucket, args.port)
