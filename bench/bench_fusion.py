"""Benchmark: a trained tower's score plus beta x a simple baseline's score, beta chosen on the validation day.

    .venv/bin/python bench/bench_fusion.py ROOT [--model dcm] [--baseline pretrained-max] [--betas 0,0.1,...,4] [--ds D]

ROOT is a root `mer compare` (or bench/bench_quality.py --keep) has run on: it reads the trained tower's folder,
the baseline's and PinnerSage's, nothing is trained. A record's fused score of a corpus item c is

    tower(u, c) + beta * baseline(u, c)     tower: its score as it ranks (the max over its embeddings); baseline:
                                            its score (mer/stages/model/baselines.py), by default pretrained-max,
                                            max_h cos(p_h, p_c) over the valid history items h

i.e. the tower ensembled with a simple baseline, both ranking the same 5,000-item corpus by the project's rank
rule (ties by train popularity, never in the positive's favour). beta is the grid's best on the validation
day's "select" users (the ones the tower was not early-stopped on); the eval day is then scored once with it.
Prints, per segment, HR@100 of the tower, the fused score, the baseline and PinnerSage, and the ratios with
their paired bootstrap 95% intervals (users resampled, as `mer evaluate`'s), then one JSON line.

Why a bench and not a model: the fused score is not one inner product per user embedding, so the published
FAISS index cannot serve it as is (a reader would query the tower index and a pretrained-embedding index and
rescore the union). This measures whether that serving is worth building (bench/RESULTS.md, session 26).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

K = 100


class Scores:
    """One split's records: the tower's and the baseline's score of any columns, cached per chunk (every beta
    of the grid ranks the same records against the same columns)."""

    def __init__(self, net, batch, catalog, baseline, corpus: np.ndarray):
        from mer.stages.model.baselines import Records
        from mer.stages.model.scoring import active_of, encode_items, encode_users

        self.user, imp = encode_users(net, batch.inputs)
        self.active = active_of(net, imp)
        self.records = Records.from_batch(batch)
        self.baseline = baseline
        # every column a chunk can ask for (the corpus and the records' positives), encoded once
        self.rows = np.union1d(corpus, batch.target_rows.numpy())
        self.emb = encode_items(net, catalog, self.rows)
        self.cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def parts(self, sl: slice, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (sl.start, sl.stop)
        if key not in self.cache:
            import torch

            from mer.stages.model.metrics import max_rule_scores

            emb = self.emb[torch.from_numpy(np.searchsorted(self.rows, cols))]
            with torch.no_grad():
                tower = max_rule_scores(self.user[sl], self.active[sl], emb).double().numpy()
            self.cache[key] = (tower, np.asarray(self.baseline.score(self.records[sl], cols), dtype=np.float64))
        return self.cache[key]

    def ranks(self, beta: float, pos: np.ndarray, corpus: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
        from mer.stages.model.baselines import ranks_from_scores

        def fn(sl: slice, cols: np.ndarray) -> np.ndarray:
            tower, base = self.parts(sl, cols)
            if beta == float("inf"):  # the baseline alone, its own tie rule
                return base
            return tower + beta * base if beta else tower

        return ranks_from_scores(fn, len(pos), pos, corpus, tiebreak)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--model", default="dcm")
    ap.add_argument("--baseline", default="pretrained-max")
    ap.add_argument("--betas", default="0,0.1,0.2,0.3,0.5,1,2,4")
    ap.add_argument("--ds")
    a = ap.parse_args(argv)

    from mer.base.config import MerConfig
    from mer.stages.model.baselines import load_baseline
    from mer.stages.model.evaluate import Evaluator, evaluate_pinnersage
    from mer.stages.model.intervals import paired_bootstrap_ratio, verdict
    from mer.stages.model.train import load_model

    cfg = MerConfig(root=Path(a.root))
    ds = a.ds or cfg.generate.end_ds.isoformat()
    betas = sorted({float(b) for b in a.betas.split(",")} | {0.0})
    folder = cfg.model_dir(ds, a.model)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"bench_fusion: no trained {a.model} in {folder} (run `mer compare --root {a.root}` first)")
    base_folder = cfg.model_dir(ds, a.baseline)
    if not (base_folder / "config.json").is_file():
        raise SystemExit(f"bench_fusion: no fitted {a.baseline} in {base_folder} (run `mer compare --root {a.root}`)")
    ps_folder = cfg.model_dir(ds, "pinnersage")
    net, _ = load_model(folder)
    ev = Evaluator(cfg, ds)  # the records, corpus and tie-break `mer evaluate` scores every model on
    baseline = load_baseline(base_folder, ev.catalog)
    out: dict = {"bench": "fusion", "root": a.root, "ds": ds, "model": a.model, "baseline": a.baseline}

    def scored(split: str):
        b = ev.batch(split, net.c.history_len)
        return b, b.target_rows.numpy(), Scores(net, b, ev.catalog, baseline, ev.corpus)

    # beta: the grid's best on the validation day (ties: the smaller beta)
    b, pos, sc = scored("val")
    hr = {beta: float(np.mean(sc.ranks(beta, pos, ev.corpus, ev.tiebreak) < K)) for beta in betas}
    best = max(betas, key=lambda x: (round(hr[x], 6), -x))
    out["val"] = {"hr": {str(k): round(v, 4) for k, v in hr.items()}, "beta": best}
    print(f"{a.model} + beta x {a.baseline} on {a.root} ds={ds}: validation HR@{K} by beta "
          + ", ".join(f"{k:g}: {v:.4f}" for k, v in hr.items()) + f" -> beta {best:g}")

    # the eval day, scored once with it
    b, pos, sc = scored("eval")
    ranks = {"tower": sc.ranks(0.0, pos, ev.corpus, ev.tiebreak),
             "fused": sc.ranks(best, pos, ev.corpus, ev.tiebreak),
             a.baseline: sc.ranks(float("inf"), pos, ev.corpus, ev.tiebreak)}
    if (ps_folder / "config.json").is_file():
        ps_conf = json.loads((ps_folder / "config.json").read_text())
        ranks["pinnersage"] = evaluate_pinnersage(ps_conf, cfg, ev.batch("eval"), ev.catalog, ev.corpus,
                                                  full=False).ranks
    segs = ["all"] + sorted(set(b.segments.tolist()))
    where = {s: np.ones(len(b), bool) if s == "all" else b.segments == s for s in segs}
    print(f"eval day, {len(b)} records, beta {best:g}")
    print(f"{'HR@100':<16}" + "".join(f"{s:>10}" for s in segs))
    for name, r in ranks.items():
        print(f"{name:<16}" + "".join(f"{np.mean(r[where[s]] < K):>10.4f}" for s in segs))
    out["eval"] = {name: {s: round(float(np.mean(r[where[s]] < K)), 4) for s in segs} for name, r in ranks.items()}
    out["ratios"] = {}

    def ratio(name: str, label: str, ref: str, s: str) -> None:
        w = where[s]
        r, lo, hi = paired_bootstrap_ratio(ranks[name][w] < K, ranks[ref][w] < K, n_boot=cfg.eval.bootstrap_samples,
                                           seed=cfg.eval.seed, groups=b.user_ids[w])
        out["ratios"][f"{name}/{ref}/{s}"] = [round(r, 4), round(lo, 4), round(hi, 4)]
        print(f"{label} vs {ref} ({s}): {verdict(r, lo, hi)}")

    for ref in [r for r in ranks if r != "fused"]:
        for s in segs:
            ratio("fused", "fused", ref, s)
    if "pinnersage" in ranks:
        ratio("tower", a.model, "pinnersage", "all")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
