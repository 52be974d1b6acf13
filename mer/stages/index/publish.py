"""Stage 7: publish a run to object storage (``mer publish`` / ``mer rollback``).

Layout under ``s3://<bucket>/<prefix>/<ds>/<run_id>/``: ``index/<model>/shard-*.{faiss,ids.npy,json}``,
``index/<model>/index.json``, ``index/recall.json``, ``users/<model>.parquet`` (user-tower
export: every user's embeddings, importance, topics), ``models/<model>/*`` (model config and
weights), ``metrics/*``, ``quality/*``; then ``manifest.json`` (sha256 of every file) last.
The version is verified (listed, sizes and checksums) before ``<prefix>/LATEST`` names it, so a
reader following LATEST never sees a half-written version. Re-running a completed publish is a
no-op; a half-done one (no manifest) is completed, skipping files already uploaded intact.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq

from mer.base.config import MerConfig
from mer.base.errors import (
    GateError,
    MerError,
    StorageError,
    validate_ds,
    validate_run_id,
)
from mer.base.io import atomic_path, list_partitions, partition_dir, read_json
from mer.stages.index import layout, towers
from mer.stages.index.queries import users_table
from mer.stages.index.storage import Store, s3_checksum_matches, sha256_file

MANIFEST = "manifest.json"
LATEST = "LATEST"
FORMAT_VERSION = 1


# ---------------------------------------------------------------- what goes into a version
def export_users(cfg: MerConfig, ds: str, model: str) -> Path | None:
    """Every user's embeddings from the served user tower, as the serving side loads them."""
    path = layout.users_export_path(cfg, ds, model)
    if path.exists():
        return path
    srv = towers.serving(cfg)
    if not hasattr(srv, "user_embeddings"):
        return None
    table = users_table(srv.user_embeddings(cfg, ds, model, user_ids=None))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def collect_files(cfg: MerConfig, ds: str, models: list[str]) -> dict[str, Path]:
    """Relative object key -> local file, data files only (the manifest is made afterwards)."""
    files: dict[str, Path] = {}
    for model in models:
        folder = layout.model_index_dir(cfg, ds, model)
        for p in sorted(folder.glob("shard-*")) + [folder / "index.json"]:
            if not p.name.startswith("."):
                files[f"index/{model}/{p.name}"] = p
        users = export_users(cfg, ds, model)
        if users is not None:
            files[f"users/{model}.parquet"] = users
        mdir = Path(towers.serving(cfg).model_dir(cfg, ds, model))
        for p in sorted(mdir.rglob("*")) if mdir.is_dir() else []:
            if p.is_file() and not p.name.startswith("."):
                files[f"models/{model}/{p.relative_to(mdir).as_posix()}"] = p
    files["index/recall.json"] = layout.recall_path(cfg, ds)
    inference = cfg.run_dir(ds) / "item_inference.json"
    if inference.exists():
        files["metrics/item_inference.json"] = inference
    if ds in list_partitions(cfg.table("eval_metrics")):
        for p in sorted(partition_dir(cfg.table("eval_metrics"), ds).glob("*.parquet")):
            files[f"metrics/eval_metrics/{p.name}"] = p
    for p in sorted(cfg.quality_dir.rglob("*")) if cfg.quality_dir.is_dir() else []:
        rel = p.relative_to(cfg.quality_dir).as_posix()
        if p.is_file() and ds in rel and not p.name.startswith("."):
            files[f"quality/{rel}"] = p
    missing = [k for k, p in files.items() if not p.exists()]
    if missing:
        raise MerError(f"publish ds={ds}: missing local file(s) {missing[:3]}; run build-index and recall-gate first")
    return files


def build_manifest(cfg: MerConfig, ds: str, run_id: str, files: dict[str, Path], shas: dict[str, str], recall: dict) -> dict:
    models = {}
    for model in recall["models"]:
        info = read_json(layout.model_index_dir(cfg, ds, model) / "index.json")
        shards = []
        for s in range(info["shards"]):
            meta = read_json(layout.shard_paths(layout.model_index_dir(cfg, ds, model), s)["meta"])
            name = layout.shard_stem(s)
            shards.append(
                {
                    "name": name,
                    "file": f"index/{model}/{meta['index_file']}",
                    "ids_file": f"index/{model}/{meta['ids_file']}",
                    "key": meta["key"],
                    "n": meta["n"],
                    "params": meta["params"],
                    "recall": recall["models"][model]["shards"][name]["recall"],
                }
            )
        users = f"users/{model}.parquet"
        models[model] = {
            "model_version": info["model_version"],
            "dim": info["dim"],
            "metric": info["metric"],
            "n_items": info["n_items"],
            "shards": shards,
            "users_file": users if users in files else None,
            "n_users": pq.read_metadata(files[users]).num_rows if users in files else 0,
            "recall_merged": recall["models"][model]["merged"],
            "recall_k": recall["models"][model]["k"],
        }
    return {
        "format_version": FORMAT_VERSION,
        "ds": ds,
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "metric": layout.METRIC,
        "models": models,
        "recall": {"target": recall["target"], "passed": recall["passed"]},
        "counts": {"files": len(files), "bytes": sum(p.stat().st_size for p in files.values())},
        "files": {rel: {"sha256": shas[rel], "size": files[rel].stat().st_size} for rel in sorted(files)},
    }


# ---------------------------------------------------------------- remote checks
def verify_version(store: Store, vkey: str, manifest: dict) -> None:
    """Every manifest file listed under the version with its size and SHA-256 (ours and S3's)."""
    listing = store.list(vkey)
    for rel, f in manifest["files"].items():
        key = f"{vkey}/{rel}"
        if key not in listing:
            raise StorageError(f"publish verify: {store.url(key)} is missing")
        if listing[key]["size"] != f["size"]:
            raise StorageError(f"publish verify: {store.url(key)} has {listing[key]['size']} bytes, manifest says {f['size']}")
        head = store.head(key) or {}
        if head.get("Metadata", {}).get("sha256") != f["sha256"] or s3_checksum_matches(head, f["sha256"]) is False:
            raise StorageError(f"publish verify: {store.url(key)} sha256 does not match the manifest")


def remote_intact(store: Store, key: str, size: int, sha: str, listing: dict) -> bool:
    if key not in listing or listing[key]["size"] != size:
        return False
    head = store.head(key) or {}
    return head.get("Metadata", {}).get("sha256") == sha and s3_checksum_matches(head, sha) is not False


def list_versions(store: Store) -> list[dict]:
    """Published (manifest present) versions, oldest first: by ds, then manifest upload time."""
    out = []
    for key, obj in store.list(store.prefix).items():
        parts = key[len(store.prefix) + 1 :].split("/")
        if len(parts) == 3 and parts[2] == MANIFEST:
            out.append({"ds": parts[0], "run_id": parts[1], "last_modified": obj["last_modified"]})
    return sorted(out, key=lambda v: (v["ds"], v["last_modified"]))


def version_name(pointer: dict | None) -> str | None:
    return f"{pointer['ds']}/{pointer['run_id']}" if pointer else None


def read_latest(store: Store) -> dict | None:
    """The LATEST pointer ({ds, run_id, manifest, ...}) or None before the first publish."""
    return store.get_json(store.key(LATEST))


def point_latest(store: Store, ds: str, run_id: str, **extra) -> dict:
    pointer = {"ds": ds, "run_id": run_id, "manifest": store.key(ds, run_id, MANIFEST), **extra}
    store.put_json(store.key(LATEST), pointer)
    return pointer


def behind_latest(latest: dict | None, ds: str) -> bool:
    """True when LATEST already names a newer date: a backfill (or a late re-run) of an older ds publishes
    its version but must not move readers back in time. `mer rollback` is the way to point LATEST back."""
    return bool(latest) and str(latest.get("ds", "")) > ds


def apply_retention(store: Store, keep: int, latest: dict) -> list[str]:
    """Delete the oldest published versions beyond ``keep``; never the one LATEST names."""
    versions = list_versions(store)
    doomed = versions[: max(len(versions) - max(keep, 1), 0)]
    deleted = []
    for v in doomed:
        if (v["ds"], v["run_id"]) == (latest["ds"], latest["run_id"]):
            continue
        store.delete_prefix(store.key(v["ds"], v["run_id"]))
        deleted.append(f"{v['ds']}/{v['run_id']}")
    return deleted


# ---------------------------------------------------------------- entry points
def run(cfg: MerConfig, ds: str, run_id: str, *, store: Store | None = None) -> dict:
    validate_ds(ds)
    validate_run_id(run_id)
    recall_file = layout.recall_path(cfg, ds)
    if not recall_file.exists():
        raise GateError(f"publish ds={ds}: no recall report at {recall_file}; run `mer recall-gate --ds {ds}` first")
    recall = read_json(recall_file)
    if not recall.get("passed"):
        raise GateError(f"publish ds={ds}: recall gate did not pass ({'; '.join(recall.get('failures', []))})")

    store = store or Store(cfg)
    store.ensure_bucket()
    vkey = store.key(ds, run_id)
    manifest_key = f"{vkey}/{MANIFEST}"
    latest = read_latest(store)

    existing = store.get_json(manifest_key)
    if existing is not None:
        verify_version(store, vkey, existing)
        if latest and (latest.get("ds"), latest.get("run_id")) == (ds, run_id):
            return {"status": "unchanged", "version": f"{ds}/{run_id}", "url": store.url(vkey)}
        if behind_latest(latest, ds):
            return {"status": "published_behind_latest", "version": f"{ds}/{run_id}", "latest": latest}
        pointer = point_latest(store, ds, run_id, previous=version_name(latest))
        return {"status": "pointer_updated", "version": f"{ds}/{run_id}", "latest": pointer}

    files = collect_files(cfg, ds, list(recall["models"]))
    shas = {rel: sha256_file(p) for rel, p in files.items()}
    listing = store.list(vkey)
    uploaded, skipped = 0, 0
    for rel, path in files.items():
        key = f"{vkey}/{rel}"
        if remote_intact(store, key, path.stat().st_size, shas[rel], listing):
            skipped += 1  # left by an interrupted publish of this same run
            continue
        store.upload_file(path, key, shas[rel])
        uploaded += 1

    manifest = build_manifest(cfg, ds, run_id, files, shas, recall)
    store.put_json(manifest_key, manifest)
    verify_version(store, vkey, manifest)
    behind = behind_latest(latest, ds)
    pointer = latest if behind else point_latest(store, ds, run_id, previous=version_name(latest))
    deleted = apply_retention(store, cfg.publish.retention, pointer)
    return {
        "status": "published_behind_latest" if behind else "published",
        "latest": version_name(pointer),
        "version": f"{ds}/{run_id}",
        "url": store.url(vkey),
        "files": len(files),
        "uploaded": uploaded,
        "resumed_skipped": skipped,
        "bytes": manifest["counts"]["bytes"],
        "deleted_versions": deleted,
    }


def rollback(cfg: MerConfig, *, store: Store | None = None) -> dict:
    """Point LATEST at the newest verified version older than the current one."""
    store = store or Store(cfg)
    latest = read_latest(store)
    if latest is None:
        raise MerError(f"rollback: nothing published under {store.url(store.prefix)} (no LATEST)")
    versions = list_versions(store)
    current = next((i for i, v in enumerate(versions) if (v["ds"], v["run_id"]) == (latest["ds"], latest["run_id"])), len(versions))
    for v in reversed(versions[:current]):
        vkey = store.key(v["ds"], v["run_id"])
        manifest = store.get_json(f"{vkey}/{MANIFEST}")
        try:
            verify_version(store, vkey, manifest)
        except StorageError:
            continue  # not a good version: keep looking further back
        pointer = point_latest(store, v["ds"], v["run_id"], rolled_back_from=f"{latest['ds']}/{latest['run_id']}")
        return {"status": "rolled_back", "from": f"{latest['ds']}/{latest['run_id']}", "to": f"{v['ds']}/{v['run_id']}", "latest": pointer}
    raise MerError(f"rollback: no verified version older than {latest['ds']}/{latest['run_id']} under {store.url(store.prefix)}")
