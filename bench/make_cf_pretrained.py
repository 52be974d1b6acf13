"""A raw root like SRC whose items' pretrained embeddings carry co-engagement (a robustness check for issue 10).

    .venv/bin/python bench/make_cf_pretrained.py SRC DST     # SRC: a root with raw/ (e.g. a kept MovieLens bench root)
    .venv/bin/python bench/bench_quality.py DST --root DST_RUN --keep --no-ablations

Why: the issue's third data set (another domain, kept out of the repo) had pretrained embeddings good enough that
the mean of a user's history beat every tower. MovieLens's pretrained embeddings are content vectors (genres,
year, tags) and weak; this replaces them with what a platform's graph-trained embeddings carry: a truncated SVD
(dimension unchanged) of the user x item matrix of positive engagements (not impressions, not hides) on days
before the validation day, so nothing of the validation or eval day leaks into them. Items without such an
engagement get a least-squares map of their content vector into that space; every vector is L2-normalised.
Everything else in raw/ is copied unchanged.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
from derived_root import source_and_destination, write_derived  # bench/ (the script's folder)
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds


def main() -> None:
    src, dst = source_and_destination("make_cf_pretrained", __doc__, ("engagement_log", "item_features"))

    log = pds.dataset(src / "engagement_log", partitioning="hive").to_table(
        columns=["user_id", "item_id", "action", "ds"]).to_pandas()
    days = sorted(log.ds.unique())
    if len(days) < 3:
        raise SystemExit(f"make_cf_pretrained: {src / 'engagement_log'} has {len(days)} day(s); need train days, "
                         "a validation day and an eval day")
    val_day = days[-2]  # the eval day is the last, the validation day the one before
    log = log[~log.action.isin(["impression", "hide"]) & (log.ds < val_day)]

    items = pds.dataset(src / "item_features", partitioning="hive").to_table(
        columns=["item_id", "pretrained_embedding"]).to_pandas().drop_duplicates("item_id")
    ids = np.sort(items.item_id.to_numpy())
    col = {int(i): n for n, i in enumerate(ids)}
    users = {int(u): n for n, u in enumerate(np.unique(log.user_id))}
    m = csr_matrix((np.ones(len(log)), ([users[int(u)] for u in log.user_id], [col[int(i)] for i in log.item_id])),
                   shape=(len(users), len(ids)))
    m.data[:] = 1.0  # repeats count once
    m = csr_matrix(m.multiply(1 / np.sqrt(np.asarray(m.sum(1)).ravel() + 1)[:, None]))  # heavy users count less

    content_by_id = dict(zip(items.item_id.astype(int), items.pretrained_embedding))
    dim = len(next(v for v in content_by_id.values() if v is not None))
    _, s, vt = svds(m, k=dim, random_state=0)
    factors = vt.T * np.sqrt(s)
    seen = np.asarray((m != 0).sum(0)).ravel() > 0
    content = np.stack([np.zeros(dim) if content_by_id[int(i)] is None else np.asarray(content_by_id[int(i)])
                        for i in ids])
    w, *_ = np.linalg.lstsq(content[seen], factors[seen], rcond=None)
    factors[~seen] = content[~seen] @ w
    factors /= np.linalg.norm(factors, axis=1, keepdims=True) + 1e-12
    print(f"{len(ids)} items, {int(seen.sum())} with engagement before {val_day}, dim {dim}")

    def with_factors(t: pa.Table) -> pa.Table:
        field = t.schema.get_field_index("pretrained_embedding")
        vec = pa.array([factors[col[int(i)]].astype(np.float32).tolist()
                        for i in t.column("item_id").to_pylist()], type=t.schema.field(field).type)
        return t.set_column(field, "pretrained_embedding", vec)

    write_derived(src, dst, {"item_features": with_factors})


if __name__ == "__main__":
    main()
