"""``run(cfg, ds)``: render ``<run_dir>/report.html`` for one run from what the stages left behind.

Sections: verdict (blessed? published where?), HR@K curves per model and per segment, other
metrics (overlap, diversity), interests per user and their importance, index recall per
shard, data quality (gates, quarantine, a link to the GX Data Docs), stage timings.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from mer.app.report import charts, inputs
from mer.base.config import MerConfig
from mer.base.errors import validate_ds
from mer.base.io import write_text_atomic
from mer.stages.model.intervals import verdict

NA = '<p class="na">not available{}</p>'
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
.na{color:#888;font-style:italic}.ok{color:#1e8449;font-weight:bold}.bad{color:#c0392b;font-weight:bold}
img{max-width:100%}
"""


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _na(why: str = "") -> str:
    return NA.format(f": {html.escape(why)}" if why else "")


def _table(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    return df.to_html(index=False, border=0, float_format=lambda v: floatfmt.format(v), escape=True)


def section_verdict(st: dict[str, dict]) -> str:
    bless = st.get("bless")
    publish = st.get("publish")
    parts = []
    if bless is None:
        parts.append(_na("the bless stage did not run"))
    else:
        s = bless.get("summary") or {}
        ok = bool(s.get("blessed"))
        parts.append(
            f'<p>Model: <span class="{"ok" if ok else "bad"}">{"blessed" if ok else "NOT blessed"}</span>'
            f" — {html.escape(str(s.get('reason', bless.get('error') or '')))}</p>"
        )
        if not ok:
            parts.append("<p>Nothing was published for this run; <code>LATEST</code> was left as it was.</p>")
    if publish is not None and publish.get("status") == "success":
        s = publish.get("summary") or {}
        parts.append(f'<p>Published ({html.escape(str(s.get("status", "")))}): <span class="ok">'
                     f'{html.escape(str(s.get("version", "")))}</span> <code>{html.escape(str(s.get("url", "")))}</code></p>')
    elif publish is not None:
        parts.append(f'<p>Publish <span class="bad">failed</span>: {html.escape(str(publish.get("error")))}</p>')
    return "".join(parts)


def section_winner(cfg: MerConfig, ds: str) -> str:
    """Which model won, by how much, and whether the paired bootstrap interval excludes 1 (eval day, HR@K)."""
    iv = inputs.eval_intervals(cfg, ds)
    if iv is None:
        return _na("no eval_intervals partition for this ds")
    rows = iv[(iv["segment"] == "all")].copy()
    best = rows.loc[rows["reference"] == "best_baseline", "reference_model"]
    lines = [f"<p>Eval day, {html.escape(str(rows['metric'].iloc[0]))}; the strongest simple baseline on the "
             f"validation day: <b>{html.escape(str(best.iloc[0]) if len(best) else 'none trained')}</b>. "
             "Paired bootstrap 95% intervals over eval records; an interval that contains 1 shows no difference.</p>",
             "<ul>"]
    for r in rows[rows["records"] == "all"].to_dict("records"):
        name = r["name"]
        words = verdict(r["ratio"], r["lo"], r["hi"])
        cls = "ok" if r["lo"] > 1 else ("bad" if r["hi"] < 1 else "")
        lines.append(f'<li><span class="{cls}">{html.escape(name)}</span> vs {html.escape(r["reference"])} '
                     f'({html.escape(r["reference_model"])}): {html.escape(words)}</li>')
    lines.append("</ul>")
    lines.append(_table(rows[["name", "reference", "reference_model", "records", "n", "value", "reference_value",
                               "ratio", "lo", "hi"]]))
    return "".join(lines)


def section_models(cfg: MerConfig, ds: str) -> str:
    metrics = inputs.eval_metrics(cfg, ds)
    curves = inputs.hr_curves(metrics)
    if curves is None:
        return _na("no eval_metrics partition for this ds")
    out = []
    segments = list(dict.fromkeys(["all", *sorted(curves["segment"].unique())]))
    for seg in segments:
        if (curves["segment"] == seg).any():
            out.append(_img(charts.hr_curves(curves, seg), f"HR@K {seg}"))
    hr = curves[curves["kind"] == "hr"]
    if hr["segment"].nunique() > 1:
        out.append(_img(charts.segment_bars(curves, int(hr["k"].max())), "HR per segment"))
    table = curves.pivot_table(index=["label", "segment"], columns=["kind", "k"], values="value")
    table.columns = [f"{kind}@{k}" for kind, k in table.columns]
    out.append(_table(table.reset_index()))
    return "".join(out)


def section_other_metrics(cfg: MerConfig, ds: str) -> str:
    rest = inputs.other_metrics(inputs.eval_metrics(cfg, ds))
    if rest is None:
        return _na("no overlap / diversity metrics in eval_metrics")
    overlap = rest[rest["metric"].str.contains("overlap", case=False)]
    out = []
    if not overlap.empty:
        out.append("<h3>Implicit / explicit overlap</h3>" + _table(overlap))
    else:
        out.append("<h3>Implicit / explicit overlap</h3>" + _na("no overlap metric"))
    others = rest[~rest.index.isin(overlap.index)]
    if not others.empty:
        out.append("<h3>Other metrics</h3>" + _table(others))
    return "".join(out)


def section_interests(cfg: MerConfig, ds: str) -> str:
    per_model = inputs.user_interests(cfg, ds)
    if not per_model:
        return _na("no user-tower export under the run's index/users/")
    out = []
    for model, df in per_model.items():
        if df.empty:
            continue
        per_user = df.groupby("user_id").size()
        imp = df["importance"] if "importance" in df.columns else None
        out.append(_img(charts.interests(per_user, imp, model), f"interests {model}"))
        out.append(f"<p>{html.escape(model)}: {len(per_user)} users, mean {per_user.mean():.2f} embeddings per user</p>")
    return "".join(out) or _na("user-tower exports are empty")


def section_recall(cfg: MerConfig, ds: str) -> str:
    rec = inputs.recall(cfg, ds)
    if not rec or not rec.get("models"):
        return _na("the recall gate did not run")
    rows = []
    for model, r in rec["models"].items():
        for shard, s in r.get("shards", {}).items():
            rows.append({"model": model, "shard": shard, "n": s.get("n"), "key": s.get("key"), "recall": s.get("recall")})
        rows.append({"model": model, "shard": "merged", "n": None, "key": "", "recall": r.get("merged")})
    df = pd.DataFrame(rows)
    status = '<span class="ok">passed</span>' if rec.get("passed") else '<span class="bad">failed</span>'
    k = next(iter(rec["models"].values())).get("k")
    head = f"<p>recall@{k} target {rec.get('target')}: {status}</p>"
    return head + _img(charts.recall_bars(df, rec.get("target")), "recall per shard") + _table(df)


def section_quality(cfg: MerConfig, ds: str, st: dict[str, dict]) -> str:
    rows = []
    for name in ("validate_raw", "gate_raw", "gate_training", "gate_embeddings"):
        rec = st.get(name)
        if rec is None:
            rows.append({"check": name, "status": "not run", "detail": ""})
            continue
        s = rec.get("summary") or {}
        detail = rec.get("error") or ", ".join(
            f"{k}={v}" for k, v in s.items() if isinstance(v, (int, float, str, bool)) and k != "ds"
        )
        rows.append({"check": name, "status": rec.get("status"), "detail": detail[:400]})
    out = [_table(pd.DataFrame(rows))]
    q = inputs.quarantine_counts(cfg, ds)
    out.append("<h3>Quarantined rows</h3>")
    out.append(_na("no quarantine partition") if q is None else (_table(q) if len(q) else "<p>none</p>"))
    docs = inputs.data_docs(cfg)
    out.append(
        f'<p>Great Expectations Data Docs: <a href="{html.escape(Path(docs).as_uri())}">{html.escape(str(docs))}</a></p>'
        if docs
        else _na("no GX Data Docs built")
    )
    return "".join(out)


def section_timings(st: dict[str, dict]) -> str:
    rows = [
        {"task": name, "status": r.get("status"), "seconds": float(r.get("seconds") or 0), "started": r.get("started") or 0}
        for name, r in st.items()
    ]
    if not rows:
        return _na("no stage records")
    df = pd.DataFrame(rows)
    total = df["seconds"].sum()
    return (
        _img(charts.timings(df), "stage timings")
        + f"<p>sum of stage time: {total:.1f}s</p>"
        + _table(df.sort_values("started")[["task", "status", "seconds"]], "{:.2f}")
    )


def render(cfg: MerConfig, ds: str) -> str:
    st = inputs.stages(cfg, ds)
    sections = [
        ("Verdict", section_verdict(st)),
        ("Who won (intervals)", section_winner(cfg, ds)),
        ("Retrieval quality (HR@K)", section_models(cfg, ds)),
        ("Overlap and other metrics", section_other_metrics(cfg, ds)),
        ("Interests per user", section_interests(cfg, ds)),
        ("Index recall per shard", section_recall(cfg, ds)),
        ("Data quality", section_quality(cfg, ds, st)),
        ("Stage timings", section_timings(st)),
    ]
    body = "".join(f'<h2 id="{html.escape(t.lower().split()[0])}">{html.escape(t)}</h2>{s}' for t, s in sections)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>MER run {ds}</title><style>{CSS}</style></head>'
        f"<body><h1>MER run report — ds={html.escape(ds)}</h1>{body}</body></html>"
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
