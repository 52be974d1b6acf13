"""The report's HTML (a Jinja2 template) and what turns numbers and frames into table cells.

One self-contained file: styles inline, charts as data URIs, so the uploaded copy shows the same page.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import jinja2
import pandas as pd

DASH = "–"  # a missing cell

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}h3{margin-bottom:.3em}
nav a{margin-right:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;white-space:nowrap}
th{background:#f4f6f8}td.num{text-align:right}thead th{text-align:center}
tr.winner td{font-weight:bold;background:#eef8f0}
.na{color:#888;font-style:italic}.ok{color:#1e8449;font-weight:bold}.bad{color:#c0392b;font-weight:bold}
.muted{color:#666;font-size:.9em}.verdict{font-size:1.1em;background:#f7f9fb;border-left:4px solid #2e86c1;padding:.5em .8em}
.pair{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}.pair>div{min-width:0}
.scroll{overflow-x:auto;max-width:100%}
dl.glossary{font-size:.85em;max-width:26em;margin:.5em 0}dl.glossary dt{font-weight:bold;font-family:monospace}
dl.glossary dd{margin:0 0 .4em 0;color:#444}
img{max-width:100%}
"""


@dataclass
class Cell:
    text: str
    cls: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)  # a header row above: (title, column span)
    row_cls: list[str] = field(default_factory=list)


def missing(v) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def number(v, kind: str = "float") -> str:
    """A number as people read it: counts as integers, rates and scores with 3 decimals, '–' when missing."""
    if missing(v):
        return DASH
    if isinstance(v, str):
        return v
    if kind == "int":
        return f"{int(round(float(v))):,}"
    v = float(v)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if kind == "signed":
        return f"{v:+.3f}"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def column_kind(name: str, values: pd.Series) -> str:
    """How a column's numbers print: integer counts as integers, gains signed, the rest as floats."""
    if str(name).startswith("gain"):
        return "signed"
    present = pd.to_numeric(values, errors="coerce").dropna()
    if len(present) and (present == present.round()).all() and present.abs().max() >= 2:
        return "int"
    return "float"


def frame_table(df: pd.DataFrame, *, first: str | None = None, bold_rows: set | None = None) -> Table | None:
    """A frame (index = row label) as a table; empty rows and columns dropped, missing cells as '–'."""
    df = df.dropna(axis=1, how="all").dropna(axis=0, how="all")
    if df.empty:
        return None
    kinds = {c: column_kind(c, df[c]) if pd.api.types.is_numeric_dtype(df[c]) else "text" for c in df.columns}
    rows, cls = [], []
    for label, r in df.iterrows():
        rows.append([Cell(str(label))] + [Cell(number(r[c], kinds[c]), "num") if kinds[c] != "text" else
                                          Cell(DASH if missing(r[c]) else str(r[c])) for c in df.columns])
        cls.append("winner" if bold_rows and label in bold_rows else "")
    return Table([first if first is not None else (df.index.name or "")] + [str(c) for c in df.columns], rows,
                 row_cls=cls)


def grouped_table(df: pd.DataFrame, *, first: str, bold_rows: set | None = None) -> Table | None:
    """A frame with two column levels (metric, segment): the metrics as a header row above their segments."""
    df = df.dropna(axis=1, how="all").dropna(axis=0, how="all")
    if df.empty:
        return None
    flat = df.copy()
    flat.columns = [f"{a}\x00{b}" for a, b in df.columns]
    t = frame_table(flat, first=first, bold_rows=bold_rows)
    groups: list[tuple[str, int]] = [("", 1)]
    for top, _ in df.columns:
        if groups[-1][0] == top and len(groups) > 1:
            groups[-1] = (top, groups[-1][1] + 1)
        else:
            groups.append((top, 1))
    t.header = [first] + [str(b) for _, b in df.columns]
    t.groups = groups
    return t


# One line per metric, by the metric's name without its @K (K in the name is filled in).
GLOSSARY = {
    "hr": "hit rate: share of eval records whose engaged item is in the model's top {k} "
          "(exact search over the eval corpus; a user's best embedding counts)",
    "hr_novel": "HR@{k} on novel records only: the engaged item is not already in the user's history",
    "hr_served": "HR of the list the reader serves: the served merge of the model's per-embedding lists "
                 "cut to a budget of {k} items",
    "hr_cond": "HR@{k} on the records CR is scored on (those with a logged source interest): "
               "the like-for-like reference for CR",
    "filtered_hr": "filtered HR@{k}: on records with a logged source interest, candidates restricted to items "
                   "of that interest's topic (CR, inverted index)",
    "hr_followed": "HR@{k} when CR is conditioned on the user's sampled followed topics, as it serves",
    "overlap": "implicit/explicit overlap: share of DCM's top {k} also in CR's top {k}, per user, averaged",
    "gain_vs_dcm_served": "served HR of DCM+CR merged minus DCM alone at a budget of {k} (positive: adding CR helps)",
    "topic_distinct": "distinct topics among a user's top {k} served items (diversity)",
    "topic_entropy": "entropy (nats) of the topics in a user's top {k} served items (higher = more varied)",
    "mean_pairwise_cos": "mean cosine between a user's embeddings (1 = collapsed into one interest)",
    "active_embeddings": "embeddings per user that take part in retrieval",
    "conditioned_records": "eval records with a logged source interest (what CR is scored on)",
    "ratio": "the model's HR divided by the reference's HR on the same eval records",
    "interval": ("paired bootstrap 95% interval of the ratio, resampling users (a user's records together); one "
                 "that excludes 1 shows a difference"),
}
METRIC_RE = re.compile(r"^(?P<base>[a-z_+]+?)(?:@(?P<k>\d+))?$", re.IGNORECASE)


def explain(metric: str) -> str | None:
    m = METRIC_RE.match(metric)
    if not m or m["base"] not in GLOSSARY:
        return None
    return GLOSSARY[m["base"]].format(k=m["k"] or "K")


def glossary(metrics) -> list[tuple[str, str]]:
    """(metric, one line) for the metrics shown, one entry per metric family."""
    out, seen = [], set()
    for metric in metrics:
        m = METRIC_RE.match(str(metric))
        base = m["base"] if m else str(metric)
        text = explain(str(metric))
        if text and base not in seen:
            seen.add(base)
            out.append((f"{base}@K" if m and m["k"] else base, GLOSSARY[base].format(k="K")))
    return out


TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MER run {{ ds }}</title><style>{{ css }}</style></head>
<body>
{%- macro na(why) -%}<p class="na">not available{% if why %}: {{ why }}{% endif %}</p>{%- endmacro -%}
{%- macro table(t) -%}
{%- if t -%}
<div class="scroll"><table>
<thead>
{%- if t.groups %}<tr>{% for g, span in t.groups %}<th colspan="{{ span }}">{{ g }}</th>{% endfor %}</tr>{% endif %}
<tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{%- for r in t.rows %}<tr class="{{ t.row_cls[loop.index0] if t.row_cls else '' }}">
{%- for c in r %}<td{% if c.cls %} class="{{ c.cls }}"{% endif %}>{{ c.text }}</td>{% endfor %}</tr>
{%- endfor %}
</tbody></table></div>
{%- endif -%}
{%- endmacro -%}
{%- macro gloss(items) -%}
{%- if items %}<dl class="glossary">{% for term, text in items %}<dt>{{ term }}</dt><dd>{{ text }}</dd>{% endfor %}</dl>{% endif -%}
{%- endmacro -%}
{%- macro img(b64, alt) -%}<img alt="{{ alt }}" src="data:image/png;base64,{{ b64 }}">{%- endmacro -%}

<h1>MER run report — ds={{ ds }}</h1>
<nav>{% for id, title in toc %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>

<h2 id="verdict">Verdict</h2>
{%- if verdict.na %}{{ na(verdict.na) }}{% else %}
<p>Model: <span class="{{ 'ok' if verdict.blessed else 'bad' }}">{{ 'blessed' if verdict.blessed else 'NOT blessed' }}</span>
 — {{ verdict.reason }}</p>
{%- if not verdict.blessed %}<p>Nothing was published for this run; <code>LATEST</code> was left as it was.</p>{% endif %}
{%- endif %}
{%- if verdict.published %}<p>Published ({{ verdict.published.status }}): <span class="ok">{{ verdict.published.version }}</span>
 <code>{{ verdict.published.url }}</code></p>{% endif %}
{%- if verdict.publish_error %}<p>Publish <span class="bad">failed</span>: {{ verdict.publish_error }}</p>{% endif %}

<h2 id="winner">Who won</h2>
{%- if winner.na %}{{ na(winner.na) }}{% else %}
<p class="verdict" id="winner-sentence">{{ winner.sentence }}</p>
<ul>{% for line in winner.lines %}<li><span class="{{ line.cls }}">{{ line.text }}</span></li>{% endfor %}</ul>
<p class="muted">{{ winner.note }}</p>
<div class="pair"><div>{{ table(winner.table) }}</div><div>{{ gloss(winner.glossary) }}</div></div>
{%- endif %}

<h2 id="quality">Retrieval quality</h2>
{%- if models.na %}{{ na(models.na) }}{% else %}
{% for b64, alt in models.charts %}{{ img(b64, alt) }}{% endfor %}
<h3>Per model (eval day, all users)</h3>
<div class="pair"><div>{{ table(models.table) }}</div><div>{{ gloss(models.glossary) }}</div></div>
{%- if models.segments %}<h3>Per user segment</h3>{{ table(models.segments) }}{% endif %}
{%- endif %}

<h2 id="history">Across runs</h2>
{%- if history.na %}{{ na(history.na) }}{% else %}
<p>{{ history.metric }} per model, eval day of each run under this root ({{ history.days }} day{{ '' if history.days == 1 else 's' }}, up to ds={{ ds }}).</p>
{{ img(history.chart, history.metric ~ " across runs") }}
{{ table(history.table) }}
{%- endif %}

<h2 id="other">Overlap, diversity and other metrics</h2>
{%- if other.na %}{{ na(other.na) }}{% else %}
<div class="pair"><div>{{ table(other.table) }}</div><div>{{ gloss(other.glossary) }}</div></div>
{%- endif %}

<h2 id="interests">Interests per user</h2>
{%- if interests.na %}{{ na(interests.na) }}{% else %}
{% for b64, alt, line in interests.charts %}{{ img(b64, alt) }}<p>{{ line }}</p>{% endfor %}
{%- endif %}

<h2 id="recall">Index recall per shard</h2>
{%- if recall.na %}{{ na(recall.na) }}{% else %}
<p>recall@{{ recall.k }} target {{ recall.target }}: <span class="{{ 'ok' if recall.passed else 'bad' }}">{{ 'passed' if recall.passed else 'failed' }}</span></p>
{{ img(recall.chart, "recall per shard") }}
{{ table(recall.table) }}
{%- endif %}

<h2 id="data">Data quality</h2>
{{ table(data.gates) }}
<h3>Quarantined rows</h3>
{%- if data.quarantine_na %}{{ na(data.quarantine_na) }}{% elif data.quarantine %}{{ table(data.quarantine) }}{% else %}<p>none</p>{% endif %}
{%- if data.docs %}
<p>Great Expectations Data Docs (every gate, run and ds): <code>{{ data.docs }}</code> — on the machine that ran the
pipeline; not shipped with this report.</p>
{%- else %}{{ na("no GX Data Docs built") }}{% endif %}

<h2 id="timings">Stage timings</h2>
{%- if timings.na %}{{ na(timings.na) }}{% else %}
{{ img(timings.chart, "stage timings") }}
<p>sum of stage time: {{ timings.total }}s</p>
{{ table(timings.table) }}
{%- endif %}
</body></html>
"""

_ENV = jinja2.Environment(autoescape=True)  # a section without data gives {"na": why}; other keys unset


def render_page(**context) -> str:
    return _ENV.from_string(TEMPLATE).render(css=CSS, **context)
