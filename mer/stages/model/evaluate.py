"""Stage 4: evaluate every model trained for ds (`mer evaluate`): towers and simple baselines alike.

Two days are scored, each written with its `split` in eval_metrics:
- val (the day before the eval day), its "select" users only (data.validation_part: the users early
  stopping did not read, so every tower and baseline is scored on records none was chosen on); bless decides
  on it, so the eval day never selects anything;
- eval (ds): scored once per trained model, the figures we report.
Per model: HR@K (max over a user's embeddings, exact search over the eval corpus) on all records and on
*novel* records (the target is not in the user's own history), per segment; CR: HR@K and filtered
HR@K with the logged condition, plus HR with K_ex sampled followed topics; served merge HR at
cfg.eval.serve_budget; topic diversity; mean pairwise cosine of a user's embeddings; implicit (DCM) /
explicit (CR) overlap and their merged union. Paired bootstrap intervals of every model's HR ratio vs
single and vs the strongest simple baseline (picked on the val day) -> eval_intervals.
-> eval_metrics, eval_intervals, eval_summary.md.
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

from mer.base.config import MerConfig
from mer.base.contract import EVAL_INTERVALS, EVAL_METRICS
from mer.base.errors import MerError, validate_ds
from mer.base.io import write_partition, write_text_atomic
from mer.stages.model.data import (
    Batch,
    Catalog,
    corpus_rows,
    item_probabilities,
    load_catalog,
    make_batch,
    read_eval,
)
from mer.stages.model.intervals import paired_bootstrap_ratio, verdict
from mer.stages.model.merge import served_merge_rows
from mer.stages.model.metrics import (
    corpus_columns,
    hit_rate,
    mean_pairwise_cosine,
    overlap,
    positive_ranks,
    topic_diversity,
)
from mer.stages.model.names import IMPLICIT_COMPARATORS
from mer.stages.model.scoring import active_of, encode_items, encode_users

log = logging.getLogger(__name__)
SEGMENTS = ("all", "core", "non_core")
SPLITS = ("val", "eval")
INTERVAL_K = 100  # the HR@K the intervals and the bless decision use (cfg.eval.ks[0] by default)


@dataclass
class ModelEval:
    name: str
    model: str
    variant: str
    metrics: list[tuple[str, str, float]] = field(default_factory=list)  # (metric, segment, value)
    # per eval record: each served embedding's candidate list and importance (what the merge takes), so the
    # dcm+cr union is one served merge over both models' embeddings, as the reader runs it
    candidates: Candidates | None = None
    top: np.ndarray | None = None  # [eval records, diversity_k]: each record's merged top (-1 pads)
    records: np.ndarray | None = None  # indexes of the scored records (CR: those with a logged condition)
    ranks: np.ndarray | None = None  # rank of the positive for each of `records` (0 = best)
    filtered_ranks: np.ndarray | None = None  # explicit models: the same records, candidates with the condition

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


@dataclass
class Candidates:
    """Each record's candidates per served embedding, what the reader gets from the index (k = budget per embedding):
    items [R, K, L] (catalog rows, best first; -1 where a list is shorter or the embedding is inactive), importance
    [R, K] and active [R, K] (an inactive embedding is not served)."""
    items: np.ndarray
    importance: np.ndarray
    active: np.ndarray


@torch.no_grad()
def embedding_lists(user: torch.Tensor, importance: torch.Tensor, active: torch.Tensor, corpus_emb: torch.Tensor,
                    corpus: np.ndarray, budget: int, allowed: torch.Tensor | None = None,
                    chunk: int = 256) -> Candidates:
    """Each active embedding's top-`budget` corpus rows (best first) and its importance, per record.

    allowed [B, K, N] optionally restricts each embedding's candidates (CR relevance post-filter).
    """
    n = min(budget, corpus_emb.shape[0])
    items = np.full((user.shape[0], user.shape[1], n), -1, dtype=np.int64)
    corpus = np.asarray(corpus, dtype=np.int64)
    for s in range(0, user.shape[0], chunk):
        scores = torch.einsum("bkd,nd->bkn", user[s:s + chunk], corpus_emb)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[s:s + chunk], float("-inf"))
        vals, idx = scores.topk(n, dim=-1)
        ok = (torch.isfinite(vals) & active[s:s + chunk].unsqueeze(-1)).numpy()
        items[s:s + chunk] = np.where(ok, corpus[idx.numpy()], -1)
    return Candidates(items, importance.double().numpy(), active.numpy().astype(bool))


def served(sources: list[tuple[str, bool, Candidates]], budget: int) -> np.ndarray:
    """[R, budget] catalog rows (-1 past a shorter list): per record, the served merge (mer.stages.model.merge, the
    reader's) over the embeddings of every source (model name, explicit?, embedding_lists of that model)."""
    width = max(c.items.shape[2] for _, _, c in sources)
    items = [np.pad(c.items, ((0, 0), (0, 0), (0, width - c.items.shape[2])), constant_values=-1)
             if c.items.shape[2] < width else c.items for _, _, c in sources]
    items = items[0] if len(items) == 1 else np.concatenate(items, axis=1)
    models = [name for name, _, c in sources for _ in range(c.items.shape[1])]
    explicit = [exp for _, exp, c in sources for _ in range(c.items.shape[1])]
    return served_merge_rows(items, models, np.concatenate([c.importance for _, _, c in sources], axis=1), explicit,
                             np.concatenate([c.active for _, _, c in sources], axis=1), budget)[0]


def served_hits(lists: np.ndarray, pos_rows: np.ndarray, k: int) -> np.ndarray:
    """Per record: is its target among the first k of its served list ([R, >= k], -1 pads)?"""
    return (np.asarray(lists)[:, :k] == np.asarray(pos_rows, dtype=np.int64)[:, None]).any(1)


def _hr_metrics(ev: ModelEval, ranks: np.ndarray, segments: np.ndarray, ks: list[int], prefix: str = "hr",
                novel: np.ndarray | None = None) -> None:
    """HR@K per segment; with `novel`, also hr_novel@K (records whose target is not in the history)."""
    for k in ks:
        ev.add(f"{prefix}@{k}", ranks, segments, lambda w, k=k: hit_rate(ranks, k, w))
        if novel is not None:
            ev.add(f"{prefix}_novel@{k}", ranks, segments,
                   lambda w, k=k: hit_rate(ranks, k, novel if w is None else (novel & w)))


def _scored(ev: ModelEval, ranks: np.ndarray, batch: Batch, ks: list[int], records: np.ndarray | None = None) -> None:
    """The model's main HR figures on `records` (default: all) and the per-record ranks kept for the intervals."""
    records = np.arange(len(batch)) if records is None else records
    _hr_metrics(ev, ranks, batch.segments[records], ks, novel=batch.novel()[records])
    ev.records, ev.ranks = records, ranks


def _served_metrics(ev: ModelEval, cfg: MerConfig, lists, batch: Batch, catalog: Catalog) -> None:
    pos = batch.target_rows.numpy()
    hits = served_hits(lists, pos, cfg.eval.serve_budget)
    ev.add(f"hr_served@{cfg.eval.serve_budget}", hits, batch.segments,
           lambda w: float(np.mean(hits if w is None else hits[w])) if (w is None or w.any()) else float("nan"))
    dk = cfg.eval.diversity_k
    ev.top = np.asarray(lists)[:, :dk]
    topics = np.where(ev.top >= 0, catalog.topic[np.maximum(ev.top, 0)], 0)  # 0: no item, or an item without a topic
    for seg in SEGMENTS:
        distinct, ent = topic_diversity(topics if seg == "all" else topics[batch.segments == seg])
        ev.metrics.append((f"topic_distinct@{dk}", seg, distinct))
        ev.metrics.append((f"topic_entropy@{dk}", seg, ent))


def _conditioned_hr(ev: ModelEval, ranks: np.ndarray, batch: Batch, ks: list[int]) -> None:
    """HR@K on the records CR is scored on (a logged source interest): the like-for-like baseline for CR."""
    has = (batch.cond > 0).numpy()
    for k in ks:
        for seg in SEGMENTS:
            w = has if seg == "all" else has & (batch.segments == seg)
            ev.metrics.append((f"hr_cond@{k}", seg, hit_rate(ranks, k, w)))


def evaluate_implicit(net, name: str, conf: dict, cfg: MerConfig, batch: Batch, catalog: Catalog,
                      corpus: np.ndarray, full: bool = True) -> ModelEval:
    ev = ModelEval(name, conf["model"], conf.get("variant") or "")
    corpus_emb = encode_items(net, catalog, corpus)
    user, imp = encode_users(net, batch.inputs)
    active = active_of(net, imp)
    pos = encode_items(net, catalog, batch.target_rows.numpy())
    ranks = positive_ranks(user, active, pos, corpus_emb, corpus_columns(batch.target_rows.numpy(), corpus))
    _scored(ev, ranks, batch, cfg.eval.ks)
    _conditioned_hr(ev, ranks, batch, cfg.eval.ks)
    if not full:
        return ev
    if user.shape[1] > 1:
        k = net.c.k  # how alike the interests are (collapse); DCM's recent-item embeddings follow them
        for seg in SEGMENTS:
            w = np.ones(len(batch), bool) if seg == "all" else batch.segments == seg
            wt = torch.from_numpy(w)
            ev.metrics.append(("mean_pairwise_cos", seg,
                               mean_pairwise_cosine(user[wt, :k], active[wt, :k]) if w.any() else float("nan")))
        ev.metrics.append(("active_embeddings", "all", float(active.sum(1).float().mean())))
    ev.candidates = embedding_lists(user, imp * active, active, corpus_emb, corpus, cfg.eval.serve_budget)
    _served_metrics(ev, cfg, served([(name, False, ev.candidates)], cfg.eval.serve_budget), batch, catalog)
    return ev


def evaluate_pinnersage(conf: dict, cfg: MerConfig, batch: Batch, catalog: Catalog, corpus: np.ndarray,
                        full: bool = True) -> ModelEval:
    from mer.stages.model.pinnersage import embed_batch, item_space

    ev = ModelEval("pinnersage", "pinnersage", "")
    space = item_space(catalog)
    user, imp = embed_batch(batch, catalog, int(conf["max_clusters"]), float(conf["decay_per_day"]))
    active = imp > 0
    active[:, 0] |= ~active.any(1)
    corpus_emb = space[torch.from_numpy(corpus)]
    ranks = positive_ranks(user, active, space[batch.target_rows], corpus_emb,
                           corpus_columns(batch.target_rows.numpy(), corpus))
    _scored(ev, ranks, batch, cfg.eval.ks)
    _conditioned_hr(ev, ranks, batch, cfg.eval.ks)
    if not full:
        return ev
    for seg in SEGMENTS:
        w = torch.from_numpy(np.ones(len(batch), bool) if seg == "all" else batch.segments == seg)
        ev.metrics.append(("mean_pairwise_cos", seg, mean_pairwise_cosine(user[w], active[w]) if w.any() else float("nan")))
    ev.metrics.append(("active_embeddings", "all", float(active.sum(1).float().mean())))
    ev.candidates = embedding_lists(user, imp, active, corpus_emb, corpus, cfg.eval.serve_budget)
    _served_metrics(ev, cfg, served([(ev.name, False, ev.candidates)], cfg.eval.serve_budget), batch, catalog)
    return ev


def evaluate_baseline(name: str, conf: dict, cfg: MerConfig, ds: str, batch: Batch, catalog: Catalog,
                      corpus: np.ndarray, tiebreak: np.ndarray, full: bool = True) -> ModelEval:
    """A simple baseline (mer/stages/model/baselines.py) scored on the same records, corpus and HR rule as the towers.

    Its scores tie often (a kNN score of 0), so ranks break ties by train popularity, never in the positive's
    favour. The inverted index (explicit control) is scored like CR: with each record's logged condition on
    the conditioned records (its candidates all carry the condition, so its HR is also its filtered HR), and
    with the user's sampled followed topics (as CR serves) on all records.
    """
    from mer.stages.model.baselines import (
        Records,
        bind,
        load_baseline,
        ranks_from_scores,
        top_lists,
    )

    ev = ModelEval(name, conf["model"], conf.get("variant") or "")
    scorer = load_baseline(cfg.model_dir(ds, name), catalog)
    pos = batch.target_rows.numpy()
    records = Records.from_batch(batch)
    if conf["model"] == "inverted":
        has = np.flatnonzero(records.cond > 0)
        sub = Records(cond=records.cond[has])
        ranks = ranks_from_scores(bind(scorer, sub), len(has), pos[has], corpus, tiebreak)
        _scored(ev, ranks, batch, cfg.eval.ks, records=has)
        _hr_metrics(ev, ranks, batch.segments[has], cfg.eval.ks, prefix="filtered_hr")
        ev.filtered_ranks = ranks
        ev.metrics.append(("conditioned_records", "all", float(len(has))))
        if full:
            from mer.stages.model.serving import followed_topics, sample_conditions

            conds = sample_conditions(followed_topics(cfg, ds, catalog.topic_vocab), batch.user_ids, cfg.train.k_ex,
                                      cfg.eval.seed)
            fol = Records(followed=[catalog.topic_index(c) for c in conds])
            granks = ranks_from_scores(bind(scorer, fol), len(batch), pos, corpus, tiebreak)
            _hr_metrics(ev, granks, batch.segments, cfg.eval.ks, prefix="hr_followed")
            _served_metrics(ev, cfg, top_lists(bind(scorer, fol), len(batch), corpus, tiebreak, cfg.eval.serve_budget),
                            batch, catalog)
        return ev
    fn = bind(scorer, records)
    ranks = ranks_from_scores(fn, len(batch), pos, corpus, tiebreak)
    _scored(ev, ranks, batch, cfg.eval.ks)
    _conditioned_hr(ev, ranks, batch, cfg.eval.ks)
    if full:
        _served_metrics(ev, cfg, top_lists(fn, len(batch), corpus, tiebreak, cfg.eval.serve_budget), batch, catalog)
    return ev


def evaluate_cr(net, name: str, conf: dict, cfg: MerConfig, ds: str, batch: Batch, eval_table: pa.Table,
                catalog: Catalog, corpus: np.ndarray, full: bool = True) -> ModelEval:
    from mer.stages.model.serving import (
        embed_with_conditions,
        followed_topics,
        sample_conditions,
    )

    ev = ModelEval(name, conf["model"], conf.get("variant") or "")
    corpus_emb = encode_items(net, catalog, corpus)
    topic_mask = corpus_topic_mask(catalog, corpus)  # [N, T+1]
    pos = encode_items(net, catalog, batch.target_rows.numpy())
    cols = corpus_columns(batch.target_rows.numpy(), corpus)

    # 1) the logged condition (source interest) of each conditioned eval record
    cond = batch.cond
    has = (cond > 0).numpy()
    if has.any():
        sel = torch.from_numpy(has)
        inputs = tuple(x[sel] for x in batch.inputs)
        user, _ = encode_users(net, inputs)
        active = torch.ones(user.shape[:2], dtype=torch.bool)
        ranks = positive_ranks(user, active, pos[sel], corpus_emb, cols[has])
        _scored(ev, ranks, batch, cfg.eval.ks, records=np.flatnonzero(has))
        allowed = topic_mask[:, cond[sel]].T  # [b, N]: items whose topics contain the condition
        franks = positive_ranks(user, active, pos[sel], corpus_emb, cols[has], allowed=allowed)
        _hr_metrics(ev, franks, batch.segments[has], cfg.eval.ks, prefix="filtered_hr")
        ev.filtered_ranks = franks
    ev.metrics.append(("conditioned_records", "all", float(has.sum())))
    if not full:
        return ev

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
    # a user who follows nothing has no active embedding: no explicit candidates (rank N)
    ranks = positive_ranks(user, active, pos, corpus_emb, cols)
    _hr_metrics(ev, ranks, batch.segments, cfg.eval.ks, prefix="hr_followed")
    ev.candidates = embedding_lists(user, active.float(), active, corpus_emb, corpus, cfg.eval.serve_budget,
                                    allowed=allowed)
    _served_metrics(ev, cfg, served([(name, True, ev.candidates)], cfg.eval.serve_budget), batch, catalog)
    return ev


def combined(dcm: ModelEval, cr: ModelEval, cfg: MerConfig, batch: Batch) -> ModelEval:
    """Implicit + explicit served together as the reader serves them (3.4-3.5): one served merge over all of the
    user's DCM and CR embeddings; each model an equal share of the budget (all of it when the user follows
    nothing), DCM's split by importance, CR's equally; round-robin, de-duplicated."""
    ev = ModelEval("dcm+cr", "dcm+cr", "")
    budget = cfg.eval.serve_budget
    lists = served([(dcm.name, False, dcm.candidates), (cr.name, True, cr.candidates)], budget)
    hits = served_hits(lists, batch.target_rows.numpy(), budget)
    ev.add(f"hr_served@{budget}", hits, batch.segments,
           lambda w: float(np.mean(hits if w is None else hits[w])) if (w is None or w.any()) else float("nan"))
    for seg in SEGMENTS:
        w = np.ones(len(batch), bool) if seg == "all" else batch.segments == seg
        ev.metrics.append((f"overlap@{cfg.eval.diversity_k}", seg, overlap(dcm.top[w], cr.top[w])))
        gain = ev.value(f"hr_served@{budget}", seg) - dcm.value(f"hr_served@{budget}", seg)
        ev.metrics.append((f"gain_vs_dcm_served@{budget}", seg, gain))
    return ev


def eval_table(cfg: MerConfig, ds: str, split: str, catalog: Catalog) -> pa.Table:
    # The validation day's "select" users: the ones no tower was early-stopped on (data.validation_part).
    table = read_eval(cfg, ds, cfg.eval.max_eval_records, cfg.eval.seed, split=split,
                      part="select" if split == "val" else None)
    keep = catalog.rows(table.column("item_id").to_numpy().astype(np.int64)) > 0
    table = table.filter(pa.array(keep))
    if table.num_rows == 0:
        raise MerError(f"table training_examples: no {split} rows with a known item in ds={ds}"
                       + (" (the validation day: see build.val_days)" if split == "val" else ""))
    return table


class Evaluator:
    """Scores models one at a time on both days' records, then writes the tables once every model is in.

    `mer evaluate` adds every trained model and finishes; `mer compare` adds each tower as its worker saves it,
    while the others still train, so the evaluation overlaps the training instead of following it. A model's
    figures do not depend on when it was added: each reads only its own folder and the shared records.
    """

    def __init__(self, cfg: MerConfig, ds: str):
        self.cfg, self.ds = cfg, validate_ds(ds)
        self.catalog = load_catalog(cfg, ds)
        self.corpus = corpus_rows(cfg, ds, self.catalog)
        prob = item_probabilities(cfg, ds, self.catalog)
        self.tiebreak = np.zeros(self.catalog.n_rows) if prob is None else prob  # baselines' ties: popularity first
        self.tables = {split: eval_table(cfg, ds, split, self.catalog) for split in SPLITS}
        self._batches: dict[tuple[str, int], Batch] = {}
        self.by_split: dict[str, dict[str, ModelEval]] = {split: {} for split in SPLITS}
        self.added: set[str] = set()

    def batch(self, split: str, length: int | None = None) -> Batch:
        """One split's records at a history length (default the configured one), built once."""
        key = (split, self.cfg.build.history_len if length is None else length)
        if key not in self._batches:
            self._batches[key] = make_batch(self.tables[split], self.catalog, key[1])
        return self._batches[key]

    def add(self, name: str, conf: dict) -> None:
        """Score one model: the val day for the HR figures bless and the baseline choice need, the eval day in full
        (once). A model already added is not scored again."""
        if name in self.added:
            return
        self.added.add(name)
        for split in SPLITS:
            ev = self._score(name, conf, split, full=split == "eval")
            if ev is not None:
                self.by_split[split][name] = ev
        log.info("evaluated %s", name)

    def _score(self, name: str, conf: dict, split: str, full: bool) -> ModelEval | None:
        from mer.stages.model.train import load_model

        cfg, ds, catalog, corpus = self.cfg, self.ds, self.catalog, self.corpus
        if conf.get("kind") == "baseline":
            return evaluate_baseline(name, conf, cfg, ds, self.batch(split), catalog, corpus, self.tiebreak, full)
        if conf["model"] == "pinnersage":
            return evaluate_pinnersage(conf, cfg, self.batch(split), catalog, corpus, full)
        net, conf = load_model(cfg.model_dir(ds, name))
        if list(net.c.topic_vocab) != catalog.topic_vocab.tolist():
            log.warning("model %s was trained with another topic vocabulary; skipped", name)
            return None
        b = self.batch(split, net.c.history_len)
        if conf["model"] == "cr":
            return evaluate_cr(net, name, conf, cfg, ds, b, self.tables[split], catalog, corpus, full)
        return evaluate_implicit(net, name, conf, cfg, b, catalog, corpus, full)

    def finish(self, order: list[str]) -> dict:
        """The served dcm+cr union, the strongest baseline (val day), the intervals; writes eval_metrics,
        eval_intervals and eval_summary.md. `order`: the models' names as the tables list them."""
        cfg, ds = self.cfg, self.ds
        by_split = {split: {n: res[n] for n in order if n in res} for split, res in self.by_split.items()}
        results = by_split["eval"]
        if "dcm" in results and "cr" in results:
            results["dcm+cr"] = combined(results["dcm"], results["cr"], cfg, self.batch("eval"))
        k = cfg.eval.ks[0]
        best = best_baseline(by_split["val"], k, cfg.eval.simple_baselines)
        eb = self.batch("eval")
        iv = intervals(results, eb.novel(), eb.segments, eb.user_ids, best, k, cfg.eval.seed,
                       cfg.eval.bootstrap_samples, candidate=cfg.eval.candidate_model)
        rows = [{"model": ev.model, "variant": ev.variant, "split": split, "metric": m, "segment": s, "value": float(v)}
                for split, res in by_split.items() for ev in res.values() for m, s, v in ev.metrics]
        write_partition(cfg.table("eval_metrics"), ds, pa.Table.from_pylist(rows, schema=EVAL_METRICS))
        write_partition(cfg.table("eval_intervals"), ds, pa.Table.from_pylist(
            [{k_: r[k_] for k_ in EVAL_INTERVALS.names} for r in iv], schema=EVAL_INTERVALS))
        n_records = self.tables["eval"].num_rows
        summary = write_summary(cfg, ds, results, by_split["val"], iv, best, n_records, len(self.corpus))
        return {"ds": ds, "records": n_records, "val_records": self.tables["val"].num_rows,
                "users": int(len(np.unique(eb.user_ids))),  # the intervals' resampling unit
                "corpus": len(self.corpus), "models": list(results), "best_baseline": best, "summary": str(summary),
                "metrics": {n: {f"{m}/{s}": (None if math.isnan(v) else round(v, 4)) for m, s, v in ev.metrics
                                if s == "all"} for n, ev in results.items()}}


def best_baseline(results: dict[str, ModelEval], k: int, names: list[str]) -> str | None:
    """The strongest simple baseline by HR@k on the split given (the val day: chosen before the eval day is read)."""
    scores = {n: results[n].value(f"hr@{k}") for n in names if n in results}
    scores = {n: v for n, v in scores.items() if not math.isnan(v)}
    return max(scores, key=lambda n: (scores[n], n)) if scores else None


def comparisons(results: dict[str, ModelEval], best: str | None,
                candidate: str | None = None) -> list[tuple[str, str, str, str]]:
    """(model, reference label, reference model, which ranks) pairs to put an interval on.

    Implicit towers and baselines: vs single and vs the strongest simple baseline, on HR; the candidate (DCM)
    also vs each implicit comparator (MIND, SA, interest-token), so "DCM above them" carries an interval too.
    The explicit models (CR, the inverted index) are scored on the conditioned records: vs single on HR there,
    and on filtered HR vs the explicit control (inverted) and CR-source vs CR-item (the association the paper
    argues for).
    """
    out = []
    for name, ev in results.items():
        if ev.ranks is None:
            continue
        if ev.model in ("cr", "inverted"):
            out.append((name, "single", "single", "ranks"))
            out += [(name, ref, ref, "filtered") for ref in ("inverted", "cr-item") if ref != name
                    and not (ref == "cr-item" and ev.model == "inverted")]
        else:
            out += [(name, "single", "single", "ranks")] + ([(name, "best_baseline", best, "ranks")] if best else [])
            if name == candidate:
                out += [(name, ref, ref, "ranks") for ref in IMPLICIT_COMPARATORS]
    return [c for c in out if c[2] in results and c[2] != c[0]]


def intervals(results: dict[str, ModelEval], novel: np.ndarray, segments: np.ndarray, users: np.ndarray,
              best: str | None, k: int, seed: int, n_boot: int, candidate: str | None = None) -> list[dict]:
    """Paired bootstrap 95% intervals of HR@k(model) / HR@k(reference), over the records both were scored on,
    on all and novel records, per segment; the resamples draw users (all of a user's records together)."""
    rows = []
    for name, ref_label, ref, kind in comparisons(results, best, candidate):
        ev, other = results[name], results[ref]
        ra, rb = (ev.ranks, other.ranks) if kind == "ranks" else (ev.filtered_ranks, other.filtered_ranks)
        if ra is None or rb is None:
            continue
        common, ia, ib = np.intersect1d(ev.records, other.records, return_indices=True)
        a, b = ra[ia] < k, rb[ib] < k
        for subset in ("all", "novel"):
            for seg in SEGMENTS:
                w = np.ones(len(common), bool) if seg == "all" else segments[common] == seg
                if subset == "novel":
                    w &= novel[common]
                who = users[common][w]
                ratio, lo, hi = paired_bootstrap_ratio(a[w], b[w], n_boot=n_boot, seed=seed, groups=who)
                rows.append({"name": name, "model": ev.model, "variant": ev.variant, "reference": ref_label,
                             "reference_model": ref, "metric": f"{'hr' if kind == 'ranks' else 'filtered_hr'}@{k}",
                             "records": subset, "segment": seg, "n": int(w.sum()),
                             "users": int(len(np.unique(who))),
                             "value": float(a[w].mean()) if w.any() else float("nan"),
                             "reference_value": float(b[w].mean()) if w.any() else float("nan"),
                             "ratio": ratio, "lo": lo, "hi": hi})
    return rows


def run(cfg: MerConfig, ds: str) -> dict:
    from mer.stages.model.train import set_threads

    validate_ds(ds)
    set_threads(cfg)
    models = trained_models(cfg, ds)
    if not models:
        raise MerError(f"no trained model under {cfg.run_dir(ds) / 'models'}: run `mer train` first")
    ev = Evaluator(cfg, ds)
    for name, conf in models:
        ev.add(name, conf)
    return ev.finish([name for name, _ in models])


def summary_table(results: dict[str, ModelEval], cfg: MerConfig) -> tuple[list[str], list[list[str]]]:
    ks, b, dk = cfg.eval.ks, cfg.eval.serve_budget, cfg.eval.diversity_k
    cols = ([f"hr@{k}" for k in ks] + [f"hr_novel@{ks[0]}", f"hr@{ks[0]} core", f"hr@{ks[0]} non_core",
            f"filtered_hr@{ks[0]}", f"hr_followed@{ks[0]}", f"hr_served@{b}", f"topic_distinct@{dk}",
            "mean_pairwise_cos"])
    rows = []
    for name, ev in results.items():
        vals = []
        for c in cols:
            metric, _, seg = c.partition(" ")
            v = ev.value(metric, seg or "all")
            vals.append("" if math.isnan(v) else f"{v:.4f}")
        rows.append([name] + vals)
    return ["model"] + cols, rows


def interval_lines(iv: list[dict], segment: str = "all") -> list[str]:
    lines = ["| model | vs | records | n | HR | reference HR | ratio [95% CI]: verdict |", "|---|---|---|---|---|---|---|"]
    for r in iv:
        if r["segment"] != segment:
            continue
        lines.append(f"| {r['name']} | {r['reference']} ({r['reference_model']}) | {r['records']} | {r['n']} | "
                     f"{r['value']:.4f} | {r['reference_value']:.4f} | {verdict(r['ratio'], r['lo'], r['hi'])} |")
    return lines


def write_summary(cfg: MerConfig, ds: str, results: dict[str, ModelEval], val: dict[str, ModelEval],
                  iv: list[dict], best: str | None, n_records: int, n_corpus: int) -> Path:
    head, rows = summary_table(results, cfg)
    k = cfg.eval.ks[0]
    lines = [f"# Evaluation ds={ds}", "", f"{n_records} eval records (the eval day, scored once), corpus of {n_corpus} "
             "items; HR scores an item by the max over the user's embeddings; hr_novel: records whose target is not "
             "in the user's own history. CR / inverted HR and filtered HR: records with a logged source interest, "
             "scored with that condition; hr_followed: K_ex sampled followed topics.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"## Who won (HR@{k}, eval day, paired bootstrap over users, {cfg.eval.bootstrap_samples} resamples)",
              "", f"Strongest simple baseline on the validation day: **{best or 'none trained'}**. Ratios of HR@{k}; "
              "an interval that excludes 1 is a difference; one that contains 1 is not shown to be.", ""]
    lines += interval_lines(iv)
    lines += ["", f"Validation day HR@{k} (what bless decided on): " + ", ".join(
        f"{n} {ev.value(f'hr@{k}'):.4f}" for n, ev in val.items() if not math.isnan(ev.value(f"hr@{k}")))]
    if "dcm+cr" in results:
        ev = results["dcm+cr"]
        b, dk = cfg.eval.serve_budget, cfg.eval.diversity_k
        lines += ["", "## Implicit + explicit", "", "| segment | hr_served (dcm+cr) | gain vs dcm alone | overlap |",
                  "|---|---|---|---|"]
        for seg in SEGMENTS:
            lines.append(f"| {seg} | {ev.value(f'hr_served@{b}', seg):.4f} | "
                         f"{ev.value(f'gain_vs_dcm_served@{b}', seg):+.4f} | {ev.value(f'overlap@{dk}', seg):.4f} |")
    path = cfg.run_dir(ds) / "eval_summary.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
