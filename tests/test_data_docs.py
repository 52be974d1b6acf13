"""GX Data Docs from the file-backed context under the data root: results of every gate run and ds
accumulate in one site, a re-run of a ds replaces its result, and the site reads offline (nothing it
loads comes from the network; everything it loads exists in the site)."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pytest

from mer.base.contract import ITEM_EMBEDDINGS
from mer.base.errors import DataQualityError
from mer.base.io import write_partition
from tests.raw_fixture import write_snapshots

DAYS = ("2026-01-15", "2026-01-16")


class _Loads(HTMLParser):
    """What a browser fetches to show the page: stylesheets, scripts, images, frames; and the table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.rows: list[str] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link" and a.get("href"):
            self.loads.append(a["href"])
        elif tag in ("script", "img", "iframe", "embed", "source") and a.get("src"):
            self.loads.append(a["src"])
        elif tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(" ".join(" ".join(self._row).split()))
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row.append(data)


def _parse(page: Path) -> _Loads:
    p = _Loads()
    p.feed(page.read_text())
    return p


def _write_embeddings(cfg, ds: str, ids: list[int], *, norm: float = 1.0) -> None:
    v = np.random.default_rng(0).normal(size=(len(ids), 64)).astype(np.float32)
    v = norm * v / np.linalg.norm(v, axis=1, keepdims=True)
    table = pa.table({"model_version": ["dcm-v1"] * len(ids), "item_id": ids,
                      "embedding": [list(map(float, x)) for x in v]}, schema=ITEM_EMBEDDINGS)
    write_partition(cfg.table("item_embeddings"), ds, table)


def test_data_docs_accumulate_every_gate_run_and_read_offline(cfg):
    from mer.stages.quality.gates import data_docs_index, gx_dir, run

    write_snapshots(cfg)  # catalog: items 1..6
    ids = [1, 2, 3, 4, 5, 6]
    _write_embeddings(cfg, DAYS[0], ids)
    assert run(cfg, DAYS[0], "embeddings")["success"]
    _write_embeddings(cfg, DAYS[1], ids, norm=2.0)  # the second day fails its gate
    with pytest.raises(DataQualityError, match="emb_norm"):
        run(cfg, DAYS[1], "embeddings")
    # A re-run of the first day: no "already exists" from GX, and its result is replaced, not added.
    summary = run(cfg, DAYS[0], "embeddings")
    assert summary["data_docs"] == str(data_docs_index(cfg))

    index = data_docs_index(cfg)
    assert index.is_file() and index.is_relative_to(gx_dir(cfg)) and gx_dir(cfg).parent == cfg.root
    rows = [r for r in _parse(index).rows if "embeddings-item_embeddings" in r and "ds=" in r]
    assert len(rows) == 2, rows
    assert any(f"ds={DAYS[0]}" in r and "Success" in r for r in rows), rows
    assert any(f"ds={DAYS[1]}" in r and "Failed" in r for r in rows), rows
    # The validation results themselves are kept by the file context, one per (suite, ds).
    stored = sorted(p.relative_to(gx_dir(cfg) / "uncommitted" / "validations").parts[1]
                    for p in (gx_dir(cfg) / "uncommitted" / "validations").rglob("*.json"))
    assert stored == [f"ds={DAYS[0]}", f"ds={DAYS[1]}"]

    pages = sorted(index.parent.rglob("*.html"))
    assert len(pages) >= 4  # index, the suite, two validation results
    for page in pages:
        for ref in _parse(page).loads:
            url = urlparse(ref)
            assert not url.scheme and not url.netloc, f"{page.name} loads {ref} from the network"
            target = (page.parent / unquote(url.path)).resolve()
            assert target.is_file(), f"{page.relative_to(index.parent)} loads {ref}: no such file"
        assert "cdn." not in page.read_text() and "unpkg.com" not in page.read_text()
