"""Data Docs that read offline: GX's pages without anything fetched from the network.

GX 1.x's page templates load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from CDNs and its
navbar logo from S3; offline the pages render unstyled and the index's tables (filled in by bootstrap-table
in the browser) are empty. Workers and the people reading a copy of the site may have no network, so the
site is rendered with these views: the same GX pages with the CDN tags dropped, a small inline stylesheet
instead of Bootstrap's, tables written out as plain HTML, and the logo/favicon from the site's own
``static/`` folder (which GX copies there). The site's config names these classes
(``mer.stages.quality.gates.site_config``); GX instantiates them when it builds the docs.
"""
from __future__ import annotations

from jinja2 import ChoiceLoader, DictLoader

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView

# How far a page is below the site root: validation pages live at
# validations/<suite>/<run_name>/<run_time>/<batch>.html, suite pages at expectations/<suite>.html
# (a dot in a suite name is one more folder). GX's favicon template miscounts this for validation pages.
_ROOT = """{%- set dots = expectation_suite_name.count(".") if expectation_suite_name else 0 -%}
{%- if "ValidationResults" in renderer_type or "ProfilingResults" in renderer_type -%}
  {%- set root = (dots + 4) * "../" -%}
{%- elif "ExpectationSuite" in renderer_type -%}
  {%- set root = (dots + 1) * "../" -%}
{%- else -%}
  {%- set root = "./" -%}
{%- endif -%}"""

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#212529;font-size:15px;line-height:1.4}
a{color:#0b5cad}nav.mer-nav{padding:.6em 2em;border-bottom:1px solid #ddd;display:flex;gap:1em;align-items:center}
nav.mer-nav img{height:36px}.container-fluid{padding:1em 2em}
.row{display:flex;flex-wrap:wrap;gap:1.5em}.col-lg-2{flex:0 0 230px}.col-lg-10{flex:1 1 600px;min-width:0}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f6f8}.table-responsive{overflow-x:auto}.d-none{display:none}
.card{border:1px solid #ddd;border-radius:4px;margin-bottom:1em}.card-header{background:#f4f6f8;padding:.4em .6em}
.card-body{padding:.6em}.alert{padding:.3em .6em;background:#f4f6f8;border-radius:4px}
.badge{background:#6c757d;color:#fff;border-radius:3px;padding:0 .3em;font-size:.85em}
.nav{list-style:none;padding-left:0}.nav-tabs{display:none}.tab-pane{margin-bottom:1.5em}
.text-success{color:#1e8449}.text-danger{color:#c0392b}.text-warning{color:#b9770e}.text-muted{color:#6c757d}
.fas::before,.fa::before{font-style:normal;font-weight:bold}
.fa-check-circle::before{content:"\\2714"}.fa-times::before,.fa-times-circle::before{content:"\\2718"}
.fa-exclamation-triangle::before{content:"!"}.fa-question-circle::before,.fa-info-circle::before{content:"?"}
"""

_HEAD = _ROOT + """<!DOCTYPE html>
<html>
  <head>
    <title>Data Docs (Great Expectations){% if page_title %}: {{ page_title }}{% endif %}</title>
    <meta name="viewport" content="width=device-width, initial-scale=1.0" />
    <meta charset="UTF-8">
    <link rel="shortcut icon" href="{{ root }}static/images/favicon.ico" type="image/x-icon"/>
    <style>{% include 'data_docs_default_styles.css' %}</style>
    <style>{% include 'mer_offline.css' %}</style>
    <style>{% include 'data_docs_custom_styles.css' ignore missing %}</style>
  </head>
  <body>
    <nav class="mer-nav">
      <a href="{{ root }}index.html"><img src="{{ root }}static/images/logo-long.png" alt="Great Expectations"></a>
      <a href="{{ root }}index.html">Data Docs home</a>{% if page_title %} / <span>{{ page_title }}</span>{% endif %}
    </nav>
    <div class="container-fluid">
      <div class="row">
        {% include 'sidebar.j2' %}
        <div class="col-md-10 col-lg-10 col-xs-12">
          {% for section in sections %}
            {% set section_loop = loop -%}
            {% include 'section.j2' %}
          {% endfor %}
        </div>
      </div>
    </div>
  </body>
</html>
"""

# bootstrap-table fills its table from JSON in the browser; write the rows out instead. A row that
# links to a page (the index's validation results) gets an "open" link.
_TABLE = """{% include 'content_block_header.j2' %}
{%- set cols = content_block["table_columns"] -%}
{%- set rows = content_block["table_data"] | render_bootstrap_table_data -%}
{%- set linked = rows and "_table_row_link_path" in rows[0] -%}
<div class="table-responsive">
<table class="table table-sm mer-static-table">
  <thead><tr>{% for c in cols %}<th>{{ c.get("title", c["field"]) }}</th>{% endfor %}{% if linked %}<th>page</th>{% endif %}</tr></thead>
  <tbody>
  {% for row in rows %}
    <tr>{% for c in cols %}<td>{{ row.get(c["field"], "") }}
      {%- if c["field"] == "validation_success" %} {{ row.get("_validation_success_text", "") }}{% endif %}</td>{% endfor %}
    {%- if linked %}<td><a href="{{ row["_table_row_link_path"] }}">open</a></td>{% endif %}</tr>
  {% endfor %}
  </tbody>
</table>
</div>
"""

TEMPLATES = {
    "page.j2": _HEAD,
    "index_page.j2": _HEAD,
    "mer_offline.css": CSS,
    "bootstrap_table.j2": _TABLE,
    "js_script_imports.j2": "",
    # The action card's show/hide filter is jQuery code; Vega charts need Vega from a CDN.
    "page_action_card.j2": "",
    "graph.j2": '{% include \'content_block_header.j2\' %}<p class="text-muted">(chart left out: offline Data Docs)</p>',
}


class _Offline:
    def __init__(self, custom_styles_directory=None, custom_views_directory=None) -> None:
        super().__init__(custom_styles_directory, custom_views_directory)  # type: ignore[call-arg]
        # GX's loader looks in its package first, so its templates cannot be overridden by the
        # plugins folder; ours go in front.
        self.env.loader = ChoiceLoader([DictLoader(TEMPLATES), self.env.loader])


class OfflinePageView(_Offline, DefaultJinjaPageView):
    """Validation-result and suite pages."""


class OfflineIndexPageView(_Offline, DefaultJinjaIndexPageView):
    """The site's index page."""
