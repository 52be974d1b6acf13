"""Stage 4: evaluate every model trained for ds on the eval split (`mer evaluate`).

Per model: HR@K (max over a user's embeddings, exact search over the eval corpus), per segment;
CR: HR@K and filtered HR@K with the logged condition, plus HR with K_ex sampled followed topics;
served merge HR at cfg.eval.serve_budget (per-embedding budgets, round-robin, de-duplication);
topic diversity of the served top diversity_k; mean pairwise cosine of a user's embeddings;
implicit (DCM) / explicit (CR) overlap and their merged union. -> eval_metrics + eval_summary.md.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from mer.config import MerConfig
from mer.contract import EVAL_METRICS
from mer.errors import MerError, validate_ds
from mer.tables import write_partition
from model.data import Batch, Catalog, corpus_rows, load_catalog, make_batch, read_eval
from model.merge import importance_budgets, round_robin_merge
from model.metrics import hit_rate, mean_pairwise_cosine, overlap, positive_ranks, topic_diversity
from model.scoring import active_of, encode_items, encode_users

log = logging.getLogger(__name__)
SEGMENTS = ("all", "core", "non_core")


@dataclass
class ModelEval:
    name: str
    model: str
    variant: str
    metrics: list[tuple[str, str, float]] = field(default_factory=list)  # (metric, segment, value)
    served: list[list[int]] | None = None  # per eval record: merged candidate item rows (serve_budget)
    top: list[list[int]] | None = None  # per eval record: merged top diversity_k

    def add(self, metric: str, values: np.ndarray | None, segments: np.ndarray, fn) -> None:
        for seg in SEGMENTS:
            where = None if seg == "all" else segments == seg
            self.metrics.append((metric, seg, fn(where)))

    def value(self, metric: str, segment: str = "all") -> float:
        for m, s, v in self.metrics:
            if m == metric and s == segment:
                return v
        return float("nan")


def trained_models(cfg: MerConfig, ds: str) -> list[tuple[str, dict]]:
    root = cfg.run_dir(ds) / "models"
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and (d / "config.json").is_file():
            out.append((d.name, json.loads((d / "config.json").read_text())))
    return out


def corpus_topic_mask(catalog: Catalog, corpus: np.ndarray) -> torch.Tensor:
    """[N, n_topics + 1] bool: corpus item n has topic index t (the explicit relevance filter, 3.3.3)."""
    n_t = len(catalog.topic_vocab) + 1
    m = np.zeros((len(corpus), n_t), dtype=bool)
    for i, r in enumerate(corpus):
        m[i, catalog.topics_of(r)] = True
    m[:, 0] = False
    return torch.from_numpy(m)


@torch.no_grad()
def served_lists(user: torch.Tensor, importance: torch.Tensor, active: torch.Tensor, corpus_emb: torch.Tensor,
                 corpus: np.ndarray, budget: int, allowed: torch.Tensor | None = None, chunk: int = 256) -> list[list[int]]:
    """Per record: per-embedding top-`budget` lists merged round-robin with importance budgets (3.5).

    allowed [B, K, N] optionally restricts each embedding's candidates (CR relevance post-filter).
    """
    out: list[list[int]] = []
    n = min(budget, corpus_emb.shape[0])
    for s in range(0, user.shape[0], chunk):
        scores = torch.einsum("bkd,nd->bkn", user[s:s + chunk], corpus_emb)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[s:s + chunk], float("-inf"))
        vals, idx = scores.topk(n, dim=-1)
        idx, ok = idx.numpy(), torch.isfinite(vals).numpy()
        for b in range(idx.shape[0]):
            act = active[s + b].numpy()
            ks = np.flatnonzero(act)
            imp = importance[s + b].numpy()[ks]
            lists = [corpus[idx[b, k][ok[b, k]]].tolist() for k in ks]
            out.append(round_robin_merge(lists, importance_budgets(imp, budget), budget))
    return out


def served_hits(lists: list[list[int]], pos_rows: np.ndarray, k: int) -> np.ndarray:
    return np.array([int(p) in set(lst[:k]) for lst, p in zip(lists, pos_rows)], dtype=bool)


def _hr_metrics(ev: ModelEval, ranks: np.ndarray, segments: np.ndarray, ks: list[int], prefix: str = "hr") -> None:
    for k in ks:
        ev.add(f"{prefix}@{k}", ranks, segments, lambda w, k=k: hit_rate(ranks, k, w))


def _served_metrics(ev: ModelEval, cfg: MerConfig, lists, batch: Batch, catalog: Catalog) -> None:
    pos = batch.target_rows.numpy()
    hits = served_hits(lists, pos, cfg.eval.serve_budget)
    ev.add(f"hr_served@{cfg.eval.serve_budget}", hits, batch.segments,
           lambda w: float(np.mean(hits if w is None else hits[w])) if (w is None or w.any()) else float("nan"))
    dk = cfg.eval.diversity_k
    ev.top = [lst[:dk] for lst in lists]
    ev.served = lists
    topic_of = {int(r): int(catalog.topic[r]) for r in np.unique(np.concatenate([np.asarray(x, dtype=np.int64) for x in ev.top] or [np.zeros(0, np.int64)]))}
    for seg in SEGMENTS:
        sel = [t for t, s in zip(ev.top, batch.segments) if seg == "all" or s == seg]
        distinct, ent = topic_diversity(sel, topic_of)
        ev.metrics.append((f"topic_distinct@{dk}", seg, distinct))
        ev.metrics.append((f"topic_entropy@{dk}", seg, ent))


def _conditioned_hr(ev: ModelEval, ranks: np.ndarray, batch: Batch, ks: list[int]) -> None:
    """HR@K on the records CR is scored on (a logged source interest): the like-for-like baseline for CR."""
    has = (batch.inputs[7] > 0).numpy()
    for k in ks:
        for seg in SEGMENTS:
            w = has if seg == "all" else has & (batch.segments == seg)
            ev.metrics.append((f"hr_cond@{k}", seg, hit_rate(ranks, k, w)))


def evaluate_implicit(net, name: str, conf: dict, cfg: MerConfig, batch: Batch, catalog: Catalog,
                      corpus: np.ndarray) -> ModelEval:
    ev = ModelEval(name, conf["model"], conf.get("variant") or "")
    corpus_emb = encode_items(net, catalog, corpus)
    user, imp = encode_users(net, batch.inputs)
    active = active_of(net, imp)
    pos = encode_items(net, catalog, batch.target_rows.numpy())
    ranks = positive_ranks(user, active, pos, corpus_emb)
    _hr_metrics(ev, ranks, batch.segments, cfg.eval.ks)
    _conditioned_hr(ev, ranks, batch, cfg.eval.ks)
    if user.shape[1] > 1:
        for seg in SEGMENTS:
            w = np.ones(len(batch), bool) if seg == "all" else batch.segments == seg
            wt = torch.from_numpy(w)
            ev.metrics.append(("mean_pairwise_cos", seg, mean_pairwise_cosine(user[wt], active[wt]) if w.any() else float("nan")))
        ev.metrics.append(("active_embeddings", "all", float(active.sum(1).float().mean())))
    lists = served_lists(user, imp * active, active, corpus_emb, corpus, cfg.eval.serve_budget)
    _served_metrics(ev, cfg, lists, batch, catalog)
    return ev


def evaluate_pinnersage(conf: dict, cfg: MerConfig, batch: Batch, catalog: Catalog, corpus: np.ndarray) -> ModelEval:
    from model.pinnersage import embed_batch, item_space

    ev = ModelEval("pinnersage", "pinnersage", "")
    space = item_space(catalog)
    user, imp = embed_batch(batch, catalog, int(conf["max_clusters"]), float(conf["decay_per_day"]))
    active = imp > 0
    active[:, 0] |= ~active.any(1)
    corpus_emb = space[torch.from_numpy(corpus)]
    ranks = positive_ranks(user, active, space[batch.target_rows], corpus_emb)
    _hr_metrics(ev, ranks, batch.segments, cfg.eval.ks)
    _conditioned_hr(ev, ranks, batch, cfg.eval.ks)
    for seg in SEGMENTS:
        w = torch.from_numpy(np.ones(len(batch), bool) if seg == "all" else batch.segments == seg)
        ev.metrics.append(("mean_pairwise_cos", seg, mean_pairwise_cosine(user[w], active[w]) if w.any() else float("nan")))
    ev.metrics.append(("active_embeddings", "all", float(active.sum(1).float().mean())))
    lists = served_lists(user, imp, active, corpus_emb, corpus, cfg.eval.serve_budget)
    _served_metrics(ev, cfg, lists, batch, catalog)
    return ev


def evaluate_cr(net, name: str, conf: dict, cfg: MerConfig, ds: str, batch: Batch, eval_table: pa.Table,
                catalog: Catalog, corpus: np.ndarray) -> ModelEval:
    from model.serving import embed_with_conditions, followed_topics, sample_conditions

    ev = ModelEval(name, conf["model"], conf.get("variant") or "")
    corpus_emb = encode_items(net, catalog, corpus)
    topic_mask = corpus_topic_mask(catalog, corpus)  # [N, T+1]
    pos = encode_items(net, catalog, batch.target_rows.numpy())

    # 1) the logged condition (source interest) of each conditioned eval record
    cond = batch.inputs[7]
    has = (cond > 0).numpy()
    if has.any():
        sel = torch.from_numpy(has)
        inputs = tuple(x[sel] for x in batch.inputs)
        user, _ = encode_users(net, inputs)
        active = torch.ones(user.shape[:2], dtype=torch.bool)
        segs = batch.segments[has]
        ranks = positive_ranks(user, active, pos[sel], corpus_emb)
        _hr_metrics(ev, ranks, segs, cfg.eval.ks)
        allowed = topic_mask[:, cond[sel]].T  # [b, N]: items whose topics contain the condition
        franks = positive_ranks(user, active, pos[sel], corpus_emb, allowed=allowed)
        _hr_metrics(ev, franks, segs, cfg.eval.ks, prefix="filtered_hr")
    ev.metrics.append(("conditioned_records", "all", float(has.sum())))

    # 2) serving: K_ex sampled followed topics per user, equal budgets, relevance post-filter
    vocab = catalog.topic_vocab
    conds = sample_conditions(followed_topics(cfg, ds, vocab), batch.user_ids, cfg.train.k_ex,
                              cfg.eval.seed)
    per_user = embed_with_conditions(net, catalog, eval_table, conds)
    K = max(1, max((len(c) for c in conds), default=1))
    user = torch.zeros(len(batch), K, net.c.dim)
    active = torch.zeros(len(batch), K, dtype=torch.bool)
    allowed = torch.zeros(len(batch), K, len(corpus), dtype=torch.bool)
    for b, (c, e) in enumerate(zip(conds, per_user)):
        user[b, : len(c)] = torch.from_numpy(e)
        active[b, : len(c)] = True
        if len(c):
            allowed[b, : len(c)] = topic_mask[:, torch.from_numpy(catalog.topic_index(c))].T
    ranks = positive_ranks(user, active, pos, corpus_emb)
    ranks[~active.any(1).numpy()] = len(corpus)  # a user who follows nothing gets no explicit candidates
    _hr_metrics(ev, ranks, batch.segments, cfg.eval.ks, prefix="hr_followed")
    lists = served_lists(user, active.float(), active, corpus_emb, corpus, cfg.eval.serve_budget, allowed=allowed)
    _served_metrics(ev, cfg, lists, batch, catalog)
    return ev


def combined(dcm: ModelEval, cr: ModelEval, cfg: MerConfig, batch: Batch) -> ModelEval:
    """Implicit + explicit served together: half the budget each, round-robin, de-duplicated (3.4-3.5)."""
    ev = ModelEval("dcm+cr", "dcm+cr", "")
    budget = cfg.eval.serve_budget
    half = [budget - budget // 2, budget // 2]
    lists = [round_robin_merge([a, b], half, budget) for a, b in zip(dcm.served, cr.served)]
    hits = served_hits(lists, batch.target_rows.numpy(), budget)
    ev.add(f"hr_served@{budget}", hits, batch.segments,
           lambda w: float(np.mean(hits if w is None else hits[w])) if (w is None or w.any()) else float("nan"))
    for seg in SEGMENTS:
        w = [seg == "all" or s == seg for s in batch.segments]
        a = [x for x, keep in zip(dcm.top, w) if keep]
        b = [x for x, keep in zip(cr.top, w) if keep]
        ev.metrics.append((f"overlap@{cfg.eval.diversity_k}", seg, overlap(a, b)))
        gain = ev.value(f"hr_served@{budget}", seg) - dcm.value(f"hr_served@{budget}", seg)
        ev.metrics.append((f"gain_vs_dcm_served@{budget}", seg, gain))
    return ev


def run(cfg: MerConfig, ds: str) -> dict:
    from model.train import load_model, model_dir, set_threads

    validate_ds(ds)
    set_threads(cfg)
    models = trained_models(cfg, ds)
    if not models:
        raise MerError(f"no trained model under {cfg.run_dir(ds) / 'models'}: run `mer train` first")
    catalog = load_catalog(cfg, ds)
    corpus = corpus_rows(cfg, ds, catalog)
    table = read_eval(cfg, ds, cfg.eval.max_eval_records, cfg.eval.seed)
    keep = catalog.rows(table.column("item_id").to_numpy().astype(np.int64)) > 0
    table = table.filter(pa.array(keep))
    if table.num_rows == 0:
        raise MerError(f"table training_examples: no eval rows with a known item in ds={ds}")
    batches: dict[int, Batch] = {}

    def batch_for(length: int) -> Batch:
        if length not in batches:
            batches[length] = make_batch(table, catalog, length)
        return batches[length]

    results: dict[str, ModelEval] = {}
    for name, conf in models:
        if conf["model"] == "pinnersage":
            results[name] = evaluate_pinnersage(conf, cfg, batch_for(cfg.train.history_len), catalog, corpus)
            continue
        net, conf = load_model(model_dir(cfg, ds, name))
        if list(net.c.topic_vocab) != catalog.topic_vocab.tolist():
            log.warning("model %s was trained with another topic vocabulary; skipped", name)
            continue
        b = batch_for(net.c.history_len)
        if conf["model"] == "cr":
            results[name] = evaluate_cr(net, name, conf, cfg, ds, b, table, catalog, corpus)
        else:
            results[name] = evaluate_implicit(net, name, conf, cfg, b, catalog, corpus)
        log.info("evaluated %s", name)
    if "dcm" in results and "cr" in results:
        results["dcm+cr"] = combined(results["dcm"], results["cr"], cfg, batch_for(cfg.train.history_len))

    rows = [{"model": ev.model, "variant": ev.variant, "metric": m, "segment": s, "value": float(v)}
            for ev in results.values() for m, s, v in ev.metrics]
    rows.append({"model": "_eval", "variant": "", "metric": "records", "segment": "all", "value": float(table.num_rows)})
    write_partition(cfg.table("eval_metrics"), ds, pa.Table.from_pylist(rows, schema=EVAL_METRICS))
    summary = write_summary(cfg, ds, results, table.num_rows, len(corpus))
    return {"ds": ds, "records": table.num_rows, "corpus": len(corpus), "models": list(results),
            "summary": str(summary),
            "metrics": {n: {f"{m}/{s}": (None if math.isnan(v) else round(v, 4)) for m, s, v in ev.metrics
                            if s == "all"} for n, ev in results.items()}}


def summary_table(results: dict[str, ModelEval], cfg: MerConfig) -> tuple[list[str], list[list[str]]]:
    ks, b, dk = cfg.eval.ks, cfg.eval.serve_budget, cfg.eval.diversity_k
    cols = ([f"hr@{k}" for k in ks] + [f"hr@{ks[0]} core", f"hr@{ks[0]} non_core", f"filtered_hr@{ks[0]}",
            f"hr_followed@{ks[0]}", f"hr_served@{b}", f"topic_distinct@{dk}", "mean_pairwise_cos"])
    rows = []
    for name, ev in results.items():
        vals = []
        for c in cols:
            metric, _, seg = c.partition(" ")
            v = ev.value(metric, seg or "all")
            vals.append("" if math.isnan(v) else f"{v:.4f}")
        rows.append([name] + vals)
    return ["model"] + cols, rows


def write_summary(cfg: MerConfig, ds: str, results: dict[str, ModelEval], n_records: int, n_corpus: int) -> Path:
    head, rows = summary_table(results, cfg)
    lines = [f"# Evaluation ds={ds}", "", f"{n_records} eval records, corpus of {n_corpus} items; HR scores an item "
             "by the max over the user's embeddings. CR HR / filtered HR: records with a logged source interest, "
             "scored with that condition; hr_followed: K_ex sampled followed topics.", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if "dcm+cr" in results:
        ev = results["dcm+cr"]
        b, dk = cfg.eval.serve_budget, cfg.eval.diversity_k
        lines += ["", "## Implicit + explicit", "", "| segment | hr_served (dcm+cr) | gain vs dcm alone | overlap |",
                  "|---|---|---|---|"]
        for seg in SEGMENTS:
            lines.append(f"| {seg} | {ev.value(f'hr_served@{b}', seg):.4f} | "
                         f"{ev.value(f'gain_vs_dcm_served@{b}', seg):+.4f} | {ev.value(f'overlap@{dk}', seg):.4f} |")
    path = cfg.run_dir(ds) / "eval_summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
