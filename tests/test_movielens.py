"""MovieLens adapter: the real ml-latest-small (skipped when absent) in the raw contract, plus bad-input errors."""
from __future__ import annotations

from datetime import timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from mer.base.config import MerConfig
from mer.base.contract import RAW_TABLES
from mer.base.errors import ContractError
from mer.base.io import list_partitions, read_partition
from mer.stages.datagen.movielens import ingest, rating_action
from tests.conftest import MOVIELENS

needs_movielens = pytest.mark.skipif(not (MOVIELENS / "ratings.csv").is_file(), reason=f"MovieLens not at {MOVIELENS}")


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    if not (MOVIELENS / "ratings.csv").is_file():
        pytest.skip(f"MovieLens not at {MOVIELENS}")
    cfg = MerConfig(root=tmp_path_factory.mktemp("ml") / "var")
    summary = ingest(cfg, MOVIELENS)
    con = duckdb.connect()
    for name in RAW_TABLES:
        con.sql(
            f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{cfg.raw_table(name)}/*/*.parquet', hive_partitioning=true)"
        )
    return cfg, summary, con


def one(con, sql):
    return con.execute(sql).fetchone()


def test_rating_to_action_mapping():
    assert rating_action(np.array([5.0, 4.0, 3.5, 3.0, 2.5, 0.5])).tolist() == ["save", "save", "click", "click", "hide", "hide"]


@needs_movielens
def test_contract_schemas_and_fifteen_partitions(ml):
    cfg, summary, _ = ml
    end = cfg.generate.end_ds
    days = [(end - timedelta(days=i)).isoformat() for i in range(14, -1, -1)]
    for name, schema in RAW_TABLES.items():
        assert list_partitions(cfg.raw_table(name)) == days, name
        assert read_partition(cfg.raw_table(name), days[-1]).schema.equals(schema), name
    ratings = pd.read_csv(MOVIELENS / "ratings.csv")
    assert summary["rows"]["engagement_log"] == 2 * len(ratings)  # an impression + one action per rating
    assert summary["rows"]["source_interest_log"] == len(ratings)


@needs_movielens
def test_days_have_equal_counts_and_events_stay_inside_their_day_in_time_order(ml):
    _, _, con = ml
    counts = [r[0] for r in con.execute("SELECT count(*) FROM engagement_log GROUP BY ds ORDER BY ds").fetchall()]
    assert max(counts) - min(counts) <= 2
    assert one(con, "SELECT count(*) FROM engagement_log WHERE CAST(event_ts AS DATE) <> CAST(ds AS DATE)")[0] == 0
    # the original global order survives the remapping: sort by original timestamp, mapped times never go back
    ratings = pd.read_csv(MOVIELENS / "ratings.csv").sort_values(["timestamp", "userId", "movieId"], kind="stable")
    mapped = con.execute(
        "SELECT user_id, item_id, event_ts FROM engagement_log WHERE action = 'impression'"
    ).df().set_index(["user_id", "item_id"])
    ts = mapped.loc[list(zip(ratings.userId, ratings.movieId)), "event_ts"].to_numpy()
    assert (np.diff(ts.astype("int64")) >= 0).all()
    assert one(con, "SELECT count(DISTINCT event_id) = count(*) FROM engagement_log")[0]


@needs_movielens
def test_known_ratings_become_the_expected_actions(ml):
    _, _, con = ml
    ratings = pd.read_csv(MOVIELENS / "ratings.csv")
    picks = [ratings[ratings.rating == v].iloc[0] for v in (5.0, 4.0, 3.5, 3.0, 2.5, 1.0)]
    for r in picks:
        rows = con.execute(
            f"SELECT action, event_ts, request_id FROM engagement_log WHERE user_id = {int(r.userId)} "
            f"AND item_id = {int(r.movieId)} ORDER BY event_ts"
        ).fetchall()
        expected = rating_action(np.array([r.rating]))[0]
        assert [a for a, _, _ in rows] == ["impression", expected], (r.userId, r.movieId, r.rating)
        assert rows[1][1] - rows[0][1] == timedelta(seconds=1) and rows[0][2] == rows[1][2]
    # user 1 rated movie 1 (Toy Story, 1995) 4.0: a save; its features say decade 1990 and its genres
    assert one(con, "SELECT action FROM engagement_log WHERE user_id = 1 AND item_id = 1 AND action <> 'impression'")[0] == "save"
    cat, topics = one(
        con, "SELECT category_id, topic_ids FROM item_features WHERE item_id = 1 AND ds = '2026-01-15'"
    )
    names = dict(con.execute("SELECT topic_id, name FROM topics WHERE ds = '2026-01-15'").fetchall())
    assert cat == 1990
    assert sorted(names[t] for t in topics) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]


@needs_movielens
def test_topic_ids_are_sorted_genre_names(ml):
    _, summary, con = ml
    rows = con.execute("SELECT topic_id, name FROM topics WHERE ds = '2026-01-15' ORDER BY topic_id").fetchall()
    assert [t for t, _ in rows] == list(range(1, len(rows) + 1))
    assert [n for _, n in rows] == sorted(n for _, n in rows) and "(no genres listed)" not in [n for _, n in rows]
    assert summary["topics"] == len(rows) >= 18


@needs_movielens
def test_followed_topic_rows_name_a_genre_of_the_movie_the_user_already_follows(ml):
    _, summary, con = ml
    n, ok = one(
        con,
        """SELECT count(*), count(f.topic_id) FROM source_interest_log s
           JOIN (SELECT DISTINCT request_id, user_id, item_id, ds, min(event_ts) AS ts FROM engagement_log GROUP BY ALL) e
             USING (request_id, item_id, ds)
           JOIN item_features i ON i.item_id = s.item_id AND i.ds = s.ds
           LEFT JOIN user_follows f ON f.user_id = e.user_id AND f.topic_id = s.source_interest_id AND f.ds = s.ds
             AND f.followed_ts <= e.ts AND list_contains(i.topic_ids, s.source_interest_id)
           WHERE s.retriever = 'followed_topic'""",
    )
    assert n > 0 and ok == n
    assert one(
        con,
        "SELECT count(*) FROM source_interest_log WHERE (retriever = 'followed_topic') <> (source_interest_id IS NOT NULL)",
    )[0] == 0
    assert 0.05 < summary["followed_topic_share"] < 0.9
    # follows come from the earliest 20 %: at most 3 per user, and a later snapshot only adds follows
    assert one(con, "SELECT max(n) FROM (SELECT count(*) AS n FROM user_follows WHERE ds = '2026-01-15' GROUP BY user_id)")[0] <= 3
    first, last = (one(con, f"SELECT count(*) FROM user_follows WHERE ds = '{d}'")[0] for d in ("2026-01-01", "2026-01-15"))
    assert 0 < first <= last == summary["follows"]


def test_missing_folder_or_file_is_a_clear_error(tmp_path):
    cfg = MerConfig(root=tmp_path / "var")
    with pytest.raises(ContractError, match="does not exist"):
        ingest(cfg, tmp_path / "nowhere")
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "movies.csv").write_text("movieId,title,genres\n1,A (2001),Drama\n")
    with pytest.raises(ContractError, match="ratings.csv is missing"):
        ingest(cfg, tmp_path / "ml")


def test_bad_rating_names_file_column_and_value(tmp_path):
    d = tmp_path / "ml"
    d.mkdir()
    (d / "movies.csv").write_text("movieId,title,genres\n1,A (2001),Drama\n2,B,(no genres listed)\n")
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,7.5,20\n")
    with pytest.raises(ContractError, match=r"ratings.csv column rating has value 7.5"):
        ingest(MerConfig(root=tmp_path / "var"), d)
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,10\n1,99,3.0,20\n")
    with pytest.raises(ContractError, match=r"column movieId has value 99"):
        ingest(MerConfig(root=tmp_path / "var"), d)


def test_tiny_folder_ingests_with_a_featureless_movie_invalid(tmp_path):
    d = tmp_path / "ml"
    d.mkdir()
    (d / "movies.csv").write_text("movieId,title,genres\n1,A (2001),Drama|Comedy\n2,B,(no genres listed)\n")
    rows = "\n".join(f"{u},{m},{r},{t}" for t, (u, m, r) in enumerate([(1, 1, 4.0), (2, 2, 2.0)] * 1 + [(3, 1, 3.0)] * 1))
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + rows + "\n")
    cfg = MerConfig(root=tmp_path / "var")
    cfg.generate = cfg.generate.model_copy(update={"days": 3})
    out = ingest(cfg, d)
    assert out["invalid_items"] == 1 and out["rows"]["engagement_log"] == 6
    feats = read_partition(cfg.raw_table("item_features"), "2026-01-15").to_pylist()
    by_id = {r["item_id"]: r for r in feats}
    assert by_id[2]["pretrained_embedding"] is None and by_id[2]["topic_ids"] == []
    assert len(by_id[1]["pretrained_embedding"]) == cfg.generate.pretrained_dim
    assert by_id[1]["topic_ids"] == [1, 2] and by_id[1]["category_id"] == 2000  # Comedy, Drama; 2001 -> 2000s
