"""``run(cfg, ds)``: render ``<run_dir>/report.html`` for one run from what the stages left behind.

Sections: verdict (blessed? published where?), who won (metric, split and interval named), HR per model
(model x metric, segments side by side, each metric explained), HR across the runs' ds, overlap and
diversity, interests per user, index recall per shard, data quality (gates, quarantine, where the GX Data
Docs are), stage timings. The page is one file (charts as data URIs) so the uploaded copy reads the same.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mer.app.report import charts, inputs, page
from mer.app.report.page import Cell, Table, frame_table, glossary, grouped_table, number, render_page
from mer.base.config import MerConfig
from mer.base.errors import validate_ds
from mer.base.io import write_text_atomic
from mer.stages.model.intervals import verdict
from mer.stages.model.names import IMPLICIT_COMPARATORS

SEGMENT_ORDER = ("all", "core", "non_core")
# Column order of the per-model table: HR families in reading order, each by K.
HR_FAMILIES = ("hr", "hr_novel", "hr_served", "hr_cond", "filtered_hr", "hr_followed")


def _parts(metric: str) -> tuple[str, int]:
    m = page.METRIC_RE.match(metric)
    return (m["base"], int(m["k"])) if m and m["k"] else (metric, 0)


def _metric_order(metrics) -> list[str]:
    def key(m: str):
        base, k = _parts(m)
        return (HR_FAMILIES.index(base) if base in HR_FAMILIES else len(HR_FAMILIES), base, k)

    return sorted(set(metrics), key=key)


def _headline(metrics: pd.DataFrame) -> str | None:
    """The metric to lead with when no interval names one: HR at the largest K evaluated."""
    ks = [_parts(m)[1] for m in metrics["metric"].unique() if _parts(m)[0] == "hr"]
    return f"hr@{max(ks)}" if ks else None


def _label(metric: str) -> str:
    base, k = _parts(metric)
    names = {"hr": "HR", "filtered_hr": "filtered HR"}
    return f"{names.get(base, base)}@{k}" if k else names.get(base, base)


def _explained(table: Table | None) -> list[tuple[str, str]]:
    """One line per metric the table shows (its empty columns were dropped)."""
    return glossary(table.header[1:]) if table else []


def section_verdict(st: dict[str, dict]) -> dict:
    bless, publish = st.get("bless"), st.get("publish")
    out: dict[str, Any] = {}
    if bless is None:
        out["na"] = "the bless stage did not run"
    else:
        s = bless.get("summary") or {}
        out |= {"blessed": bool(s.get("blessed")), "reason": str(s.get("reason", bless.get("error") or ""))}
    if publish is not None and publish.get("status") == "success":
        s = publish.get("summary") or {}
        out["published"] = {k: str(s.get(k, "")) for k in ("status", "version", "url")}
    elif publish is not None:
        out["publish_error"] = str(publish.get("error"))
    return out


def _interval_cls(r: dict) -> str:
    """Green when the interval is above 1, red when below, plain when it contains 1."""
    return "ok" if r["lo"] > 1 else ("bad" if r["hi"] < 1 else "")


def _interval(r: dict) -> Cell:
    if r["ratio"] != r["ratio"]:
        return Cell("–", "num")
    return Cell(f"{r['ratio']:.2f}× [{r['lo']:.2f}, {r['hi']:.2f}]", f"num {_interval_cls(r)}")


def section_winner(cfg: MerConfig, ds: str) -> dict:
    """Which model won on the eval day, by which metric, and whether its intervals exclude 1."""
    iv = inputs.eval_intervals(cfg, ds)
    if iv is None:
        return {"na": "no eval_intervals partition for this ds"}
    top = iv[(iv["segment"] == "all") & (iv["records"] == "all")]
    hr = top[top["metric"].str.startswith("hr@")]
    if hr.empty:
        return {"na": "no HR interval in eval_intervals"}
    metric = hr["metric"].iloc[0]
    hr = hr[hr["metric"] == metric]
    # CR and the inverted index are scored on the conditioned records only: their HR is on another set of
    # records, so the winner is picked among the models scored on every eval record.
    full = hr[hr["n"] == hr["n"].max()]
    win = full.loc[full["value"].idxmax()]
    best = hr.loc[hr["reference"] == "best_baseline", "reference_model"]
    best_name = str(best.iloc[0]) if len(best) else None
    n = int(win["n"])
    sentence = (f"Winner: {win['name']}, {_label(metric)} = {number(win['value'])} on the eval day "
                f"(split eval, ds={ds}, {n:,} records, all users).")
    lines = []
    for r in top[(top["name"] == win["name"])].to_dict("records"):
        ref = (f"the strongest simple baseline ({r['reference_model']}, picked on the validation day)"
               if r["reference"] == "best_baseline" else r["reference_model"])
        lines.append({"text": f"{_label(r['metric'])} vs {ref}: {verdict(r['ratio'], r['lo'], r['hi'])}",
                      "cls": _interval_cls(r)})
    # The candidate vs each implicit comparator (MIND, SA, interest-token): one row each, so they are lines, not
    # table columns that every other model would leave empty.
    for r in top[top["reference"].isin(IMPLICIT_COMPARATORS) & (top["name"] != win["name"])].to_dict("records"):
        lines.append({"text": f"{r['name']}: {_label(r['metric'])} vs {r['reference_model']}: "
                              f"{verdict(r['ratio'], r['lo'], r['hi'])}", "cls": _interval_cls(r)})
    # Every model against each of its references, on all records and users.
    table_rows = top[~top["reference"].isin(IMPLICIT_COMPARATORS)]
    refs = list(dict.fromkeys(f"{r['reference']}\x00{r['metric']}" for r in table_rows.to_dict("records")))
    header = ["model", "records", "HR"]
    for key in refs:
        ref, m = key.split("\x00")
        header.append(f"vs {best_name} (best baseline), {_label(m)}" if ref == "best_baseline" and best_name
                      else f"vs {ref}, {_label(m)}")
    rows, cls = [], []
    for name, g in sorted(table_rows.groupby("name"), key=lambda t: -t[1]["value"].max()):
        by = {f"{r['reference']}\x00{r['metric']}": r for r in g.to_dict("records")}
        first = g[g["metric"].str.startswith("hr@")]
        first = first.iloc[0] if len(first) else g.iloc[0]
        rows.append([Cell(str(name)), Cell(number(first["n"], "int"), "num"), Cell(number(first["value"]), "num")]
                    + [_interval(by[k]) if k in by else Cell("–", "num") for k in refs])
        cls.append("winner" if name == win["name"] else "")
    return {
        "sentence": sentence,
        "lines": lines,
        "note": ("Ratios are the model's HR over the reference's on the same eval records (all users); the "
                 "interval is a paired bootstrap 95% interval over users (a user's records resampled together): "
                 "one that excludes 1 shows a difference. CR and the "
                 "inverted index are scored on the records with a logged source interest. Intervals on novel "
                 "records and per segment are in the eval_intervals table."),
        "table": Table(header, rows, row_cls=cls),
        "glossary": glossary([metric, "filtered_hr@1", "ratio", "interval"]),
        "winner": str(win["name"]),
        "metric": metric,
    }


def section_models(cfg: MerConfig, ds: str, winner: str | None, lead: str | None) -> dict:
    metrics = inputs.eval_metrics(cfg, ds)
    curves = inputs.hr_curves(metrics)
    if metrics is None or curves is None:
        return {"na": "no eval_metrics partition for this ds"}
    charts_ = []
    if (curves["segment"] == "all").any():
        charts_.append((charts.hr_curves(curves, "all"), "HR@K, all users"))
    hr = curves[curves["kind"] == "hr"]
    if hr["segment"].nunique() > 1:
        charts_.append((charts.segment_bars(curves, int(hr["k"].max())), "HR per segment"))
    fams = metrics[metrics["metric"].map(lambda m: _parts(m)[0] in HR_FAMILIES)]
    allu = fams[fams["segment"] == "all"].pivot_table(index="label", columns="metric", values="value", aggfunc="first")
    allu = allu[_metric_order(allu.columns)]
    head = lead or _headline(metrics)
    if head in allu.columns:
        allu = allu.sort_values(head, ascending=False)
    bold = {winner} if winner else set()
    table = frame_table(allu, first="model", bold_rows=bold)
    # HR@K with the segments side by side.
    seg = fams[fams["metric"].map(lambda m: _parts(m)[0] == "hr")]
    segments = None
    if seg["segment"].nunique() > 1:
        wide = seg.pivot_table(index="label", columns=["metric", "segment"], values="value", aggfunc="first")
        order = [(m, s) for m in _metric_order(seg["metric"]) for s in
                 sorted(seg["segment"].unique(), key=lambda s: (SEGMENT_ORDER + (s,)).index(s))
                 if (m, s) in wide.columns]
        wide = wide[order].reindex(allu.index.intersection(wide.index, sort=False))
        segments = grouped_table(wide, first="model", bold_rows=bold)
    return {"charts": charts_, "table": table, "segments": segments, "glossary": _explained(table)}


def section_history(cfg: MerConfig, ds: str, lead: str | None) -> dict:
    hist = inputs.eval_history(cfg, ds)
    metric = (lead if lead in set(hist["metric"]) else _headline(hist)) if hist is not None else None
    if metric is None:
        return {"na": "no eval_metrics partition up to this ds"}
    rows = hist[(hist["metric"] == metric) & (hist["segment"] == "all")].dropna(subset=["value"])
    if rows.empty:
        return {"na": f"no {metric} in eval_metrics"}
    days = sorted(rows["ds"].unique())
    wide = rows.pivot_table(index="label", columns="ds", values="value", aggfunc="first")
    wide = wide[days[-8:]].sort_values(days[-1], ascending=False)  # the last 8 days; the chart has them all
    return {"metric": _label(metric), "days": len(days), "chart": charts.history(rows, _label(metric)),
            "table": frame_table(wide, first="model")}


def section_other_metrics(cfg: MerConfig, ds: str) -> dict:
    metrics = inputs.eval_metrics(cfg, ds)
    if metrics is None:
        return {"na": "no eval_metrics partition for this ds"}
    rest = metrics[~metrics["metric"].map(lambda m: _parts(m)[0] in HR_FAMILIES) & (metrics["segment"] == "all")]
    if rest.empty:
        return {"na": "no overlap / diversity metrics in eval_metrics"}
    wide = rest.pivot_table(index="label", columns="metric", values="value", aggfunc="first", dropna=False)
    table = frame_table(wide[sorted(wide.columns, key=lambda m: (not m.startswith(("overlap", "gain")), m))],
                        first="model")
    if table is None:
        return {"na": "overlap / diversity metrics are all empty"}
    return {"table": table, "glossary": _explained(table)}


def section_interests(cfg: MerConfig, ds: str) -> dict:
    per_model = inputs.user_interests(cfg, ds)
    if not per_model:
        return {"na": "no user-tower export under the run's index/users/"}
    items = []
    for model, df in per_model.items():
        if df.empty:
            continue
        per_user = df.groupby("user_id").size()
        imp = df["importance"] if "importance" in df.columns else None
        items.append((charts.interests(per_user, imp, model), f"interests {model}",
                      f"{model}: {len(per_user):,} users, mean {per_user.mean():.2f} embeddings per user"))
    return {"charts": items} if items else {"na": "user-tower exports are empty"}


def section_recall(cfg: MerConfig, ds: str) -> dict:
    rec = inputs.recall(cfg, ds)
    if not rec or not rec.get("models"):
        return {"na": "the recall gate did not run"}
    rows = []
    for model, r in rec["models"].items():
        for shard, s in r.get("shards", {}).items():
            rows.append({"model": model, "shard": shard, "recall": s.get("recall")})
        rows.append({"model": model, "shard": "merged", "recall": r.get("merged")})
    df = pd.DataFrame(rows)
    wide = df.pivot_table(index="model", columns="shard", values="recall", aggfunc="first")
    wide = wide[[c for c in wide.columns if c != "merged"] + (["merged"] if "merged" in wide.columns else [])]
    return {"k": next(iter(rec["models"].values())).get("k"), "target": rec.get("target"),
            "passed": bool(rec.get("passed")), "chart": charts.recall_bars(df, rec.get("target")),
            "table": frame_table(wide, first="model")}


def _detail(rec: dict) -> str:
    if rec.get("error"):
        return str(rec["error"])[:400]
    s = rec.get("summary") or {}
    return ", ".join(f"{k}={number(v, 'int') if isinstance(v, int) and not isinstance(v, bool) else (number(v) if isinstance(v, float) else v)}"
                     for k, v in s.items() if isinstance(v, (int, float, str, bool)) and k != "ds")[:400]


def section_data(cfg: MerConfig, ds: str, st: dict[str, dict]) -> dict:
    rows = []
    for name in ("validate_raw", "gate_raw", "gate_training", "gate_embeddings"):
        rec = st.get(name)
        status = "not run" if rec is None else str(rec.get("status"))
        cls = "ok" if status == "success" else ("bad" if status == "failed" else "")
        rows.append([Cell(name), Cell(status, cls), Cell("" if rec is None else _detail(rec))])
    out: dict[str, Any] = {"gates": Table(["check", "status", "detail"], rows)}
    q = inputs.quarantine_counts(cfg, ds)
    if q is None:
        out["quarantine_na"] = "no quarantine partition"
    elif len(q):
        out["quarantine"] = frame_table(q.set_index("source_table"), first="table")
    docs = inputs.data_docs(cfg)
    # The uploaded copy travels alone: a file:// link would point into the reader's own disk, so the path is text.
    out["docs"] = str(docs) if docs else None
    return out


def section_timings(st: dict[str, dict]) -> dict:
    rows = [{"task": name, "status": r.get("status"), "seconds": float(r.get("seconds") or 0),
             "started": r.get("started") or 0} for name, r in st.items()]
    if not rows:
        return {"na": "no stage records"}
    df = pd.DataFrame(rows)
    table = [[Cell(r["task"]), Cell(str(r["status"]), "bad" if r["status"] == "failed" else ""),
              Cell(f"{r['seconds']:.1f}", "num")] for r in df.sort_values("started").to_dict("records")]
    return {"chart": charts.timings(df), "total": f"{df['seconds'].sum():.1f}",
            "table": Table(["task", "status", "seconds"], table)}


TOC = [("verdict", "Verdict"), ("winner", "Who won"), ("quality", "Retrieval quality"), ("history", "Across runs"),
       ("other", "Other metrics"), ("interests", "Interests"), ("recall", "Recall"), ("data", "Data quality"),
       ("timings", "Timings")]


def render(cfg: MerConfig, ds: str) -> str:
    st = inputs.stages(cfg, ds)
    winner = section_winner(cfg, ds)
    return render_page(
        ds=ds, toc=TOC,
        verdict=section_verdict(st),
        winner=winner,
        models=section_models(cfg, ds, winner.get("winner"), winner.get("metric")),
        history=section_history(cfg, ds, winner.get("metric")),
        other=section_other_metrics(cfg, ds),
        interests=section_interests(cfg, ds),
        recall=section_recall(cfg, ds),
        data=section_data(cfg, ds, st),
        timings=section_timings(st),
    )


def run(cfg: MerConfig, ds: str) -> dict[str, Any]:
    validate_ds(ds)
    page = render(cfg, ds)
    path = cfg.run_dir(ds) / "report.html"
    write_text_atomic(path, page)
    uploaded = upload(cfg, ds, path)
    return {"ds": ds, "report": str(path), "bytes": len(page.encode()), "uploaded": uploaded}


REPORTS = "reports"


def report_key(store, version: str) -> str:
    """``<prefix>/reports/<ds>/<run_id>/report.html``: outside the version folder, under the publisher's prefix."""
    return store.key(REPORTS, *version.split("/"), "report.html")


def upload(cfg: MerConfig, ds: str, path: Path) -> str | None:
    """Upload the report of the run that published ``version``, never into the version itself.

    A version is complete when its manifest is written and readers verify it against that manifest; the
    report is rendered after publish (it reports the publish), so it goes under ``reports/`` instead.
    """
    publish = inputs.stages(cfg, ds).get("publish")
    version = ((publish or {}).get("summary") or {}).get("version")
    if not publish or publish.get("status") != "success" or not version:
        return None
    from mer.stages.index.storage import Store, sha256_file

    store = Store(cfg)
    key = report_key(store, version)
    store.upload_file(path, key, sha256_file(path))
    return store.url(key)
