"""Seeded synthetic logs in the raw input contract (``mer generate``), with structure the models can find.

Everything is drawn from ``numpy.random.default_rng`` seeded by ``cfg.generate.seed``: the catalog and the
users from children of ``SeedSequence(seed)``, each day's logs from ``SeedSequence([seed, 1, date])``, so the
same seed gives identical rows, and a day's logs depend only on the world and that day (not on the window
they were generated in). Events are simulated a whole day at a time with array
operations; no Python loop runs per request or per event.

What is planted (ids: user 1..U, item 1..N, topic 1..T; sub-interest s = topic_index * P + j):

- **Topics and sub-interests.** T topics with P sub-interests each. A sub-interest centroid is its
  topic direction plus ``topic_spread`` x its own direction, normalised: siblings are close, topics far apart.
- **Items.** One primary sub-interest each (so one primary topic, score 0.7-1.0) and 0-2 random
  secondary topics with lower scores (0.1-0.45), sorted by score: "a random topic of the item" is a
  noisy condition. ``pretrained_embedding`` = centroid + ``embedding_noise`` noise, normalised.
  ``category_id`` follows the sub-interest (85 %), ``creator_id`` a per-sub-interest pool (60 %).
  Popularity is lognormal (``popularity_sigma``): skewed, so logQ correction matters.
  ``invalid_feature_fraction`` of items have a null, all-zero or wrong-length embedding.
- **Users.** 1-8 interests on distinct topics with Zipf-like weights (a head, a torso and a tail),
  ``core_user_fraction`` core users (more requests, more engagement per impression), followed topics
  mostly from their interests plus, for most users, a *dormant* long-term interest: a followed topic
  that organic retrievers never serve, so it is engaged only through the followed-topic retriever.
- **Serving.** Each request shows a slate: ``followed_slots`` items of one followed topic
  (retriever ``followed_topic``, source_interest_id = that topic; some through an item's secondary
  topic), then collaborative (the user's interests by weight, some sibling sub-interests), popular and
  fresh items. One ``source_interest_log`` row per served (request_id, item_id).
- **Engagement.** An impression per served item, then at most one of save/click (probability x
  relevance: 1 on-interest, 0.3 sibling sub-interest, 0.03 otherwise) or hide (off-interest items).
  ``duplicate_fraction`` of engagement rows are logged twice with the same event_id (at-least-once
  delivery) so validation has something to quarantine.

Ground truth for tests and diagnostics: ``<root>/ground_truth/users.parquet`` and ``items.parquet``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mer.base.config import GenerateConfig, MerConfig
from mer.base.contract import (
    ACTIONS,
    ITEM_FEATURES,
    RAW_TABLES,
    RETRIEVERS,
    SURFACES,
    TOPICS,
    USER_FOLLOWS,
)
from mer.base.errors import MerError
from mer.base.io import atomic_path, partition_dir, write_partition
from mer.stages.datagen.sampling import GroupedSampler

TOPIC_NAMES = (
    "food", "travel", "fashion", "home_decor", "diy", "art", "beauty", "fitness", "gardening", "weddings",
    "cars", "photography", "tattoos", "pets", "kids", "tech", "music", "film", "books", "sports",
    "architecture", "quotes", "hair", "crafts",
)
DAY_US = 86_400_000_000
# Relevance of an item to a user: its sub-interest is one of theirs / a sibling of one / anything else.
REL_INTEREST, REL_SIBLING, REL_OTHER = 1.0, 0.3, 0.03
SURFACE_P = (0.7, 0.15, 0.15)
IMPRESSION, CLICK, SAVE, HIDE = (ACTIONS.index(a) for a in ("impression", "click", "save", "hide"))
FOLLOWED, COLLAB, POPULAR, FRESH = (RETRIEVERS.index(r) for r in ("followed_topic", "collaborative", "popular", "fresh"))


# ------------------------------------------------------------------------------------------ world
@dataclass
class Catalog:
    n_topics: int
    per_topic: int
    centroids: np.ndarray  # [S, dim] unit sub-interest centroids
    sub: np.ndarray  # [N] primary sub-interest per item (item id = index + 1)
    topic: np.ndarray  # [N] primary topic index
    secondary: np.ndarray  # [N, 2] secondary topic indexes, -1 = none
    scores: np.ndarray  # [N, 3] primary, secondary scores (float32), 0 where none
    embedding: np.ndarray  # [N, dim] float32
    invalid_kind: np.ndarray  # [N] 0 valid, 1 null, 2 all-zero, 3 wrong length
    category: np.ndarray
    creator: np.ndarray
    popularity: np.ndarray  # [N] float64, lognormal

    @property
    def n_items(self) -> int:
        return len(self.sub)


@dataclass
class Users:
    interests: np.ndarray  # [U, M] sub-interest ids, -1 = none; column 0 is the head
    weights: np.ndarray  # [U, M] float64, rows sum to 1
    dormant: np.ndarray  # [U] sub-interest id of the followed long-term interest, -1 = none
    follows: np.ndarray  # [U, T] bool: user follows topic index
    core: np.ndarray  # [U] bool
    followed_ts: np.ndarray  # [U, T] int64 microseconds since epoch (meaningful where follows)

    @property
    def n_users(self) -> int:
        return len(self.core)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def build_catalog(g: GenerateConfig, n_items: int, rng: np.random.Generator) -> Catalog:
    T, P, dim = g.n_topics, g.subinterests_per_topic, g.pretrained_dim
    S = T * P
    topic_dir = _unit(rng.standard_normal((T, dim)))
    own_dir = _unit(rng.standard_normal((S, dim)))
    centroids = _unit(np.repeat(topic_dir, P, axis=0) + g.topic_spread * own_dir)

    # Every sub-interest gets at least a fair share's half; the rest follows a mild Dirichlet.
    base = n_items // (2 * S)
    sizes = base + rng.multinomial(n_items - base * S, rng.dirichlet(np.full(S, 5.0)))
    sub = rng.permutation(np.repeat(np.arange(S), sizes))
    topic = sub // P

    n_sec = rng.choice(3, size=n_items, p=(0.4, 0.35, 0.25))
    o1 = rng.integers(1, T, size=n_items)
    o2 = rng.integers(1, max(T - 1, 2), size=n_items)
    o2 = np.where(o2 >= o1, o2 + 1, o2)  # distinct from o1 and from 0 (the primary)
    secondary = np.stack([(topic + o1) % T, (topic + o2) % T], axis=1)
    secondary[n_sec < 1, 0] = -1
    secondary[n_sec < 2, 1] = -1
    if T < 3:
        secondary[:, 1] = -1
    if T < 2:
        secondary[:, 0] = -1
    prim_score = rng.uniform(0.7, 1.0, n_items)
    sec_scores = np.sort(rng.uniform(0.1, 0.45, (n_items, 2)), axis=1)[:, ::-1]
    scores = np.concatenate([prim_score[:, None], sec_scores], axis=1).astype(np.float32)
    scores[:, 1:][secondary < 0] = 0.0

    noise = rng.standard_normal((n_items, dim)) * (g.embedding_noise / np.sqrt(dim))
    embedding = _unit(centroids[sub] + noise).astype(np.float32)

    invalid = rng.permutation(n_items)[: int(round(g.invalid_feature_fraction * n_items))]
    invalid_kind = np.zeros(n_items, dtype=np.int8)
    invalid_kind[invalid] = rng.choice(np.array([1, 2, 3], dtype=np.int8), size=len(invalid), p=(0.4, 0.3, 0.3))

    n_cat, n_cre = g.n_categories, g.n_creators
    category = np.where(rng.random(n_items) < 0.85, (sub * n_cat) // S, rng.integers(0, n_cat, n_items))
    pool = max(n_cre // S, 1)
    creator = np.where(
        rng.random(n_items) < 0.6, (sub * pool + rng.integers(0, pool, n_items)) % n_cre, rng.integers(0, n_cre, n_items)
    )
    popularity = rng.lognormal(0.0, g.popularity_sigma, n_items)
    return Catalog(T, P, centroids, sub, topic, secondary, scores, embedding, invalid_kind,
                   category.astype(np.int64), creator.astype(np.int64), popularity)


def build_users(g: GenerateConfig, n_users: int, cat: Catalog, start_us: int, rng: np.random.Generator) -> Users:
    T, P = cat.n_topics, cat.per_topic
    M = min(g.max_interests, T - 1)  # one topic stays free for the dormant interest
    lo = min(g.min_interests, M)
    n_int = lo + rng.binomial(M - lo, 0.45, n_users)
    # Interests sit on distinct topics (random permutation per user), so their items are far apart.
    perm = np.argsort(rng.random((n_users, T)), axis=1)
    cols = np.arange(M)[None, :]
    has = cols < n_int[:, None]
    interests = np.where(has, perm[:, :M] * P + rng.integers(0, P, (n_users, M)), -1)
    raw = (cols + 1.0) ** -g.interest_zipf * rng.gamma(4.0, 0.25, (n_users, M)) * has
    weights = -np.sort(-raw, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)

    has_dormant = rng.random(n_users) < g.dormant_follow_prob
    dormant_topic = perm[np.arange(n_users), n_int]
    dormant = np.where(has_dormant, dormant_topic * P + rng.integers(0, P, n_users), -1)

    follow_p = np.where(cols == 0, 0.8, 0.35) * has
    follow_interest = rng.random((n_users, M)) < follow_p
    follows = np.zeros((n_users, T), dtype=bool)
    rows = np.repeat(np.arange(n_users), M)
    follows[rows[follow_interest.ravel()], perm[:, :M].ravel()[follow_interest.ravel()]] = True
    follows[np.arange(n_users)[has_dormant], dormant_topic[has_dormant]] = True
    nobody = ~follows.any(axis=1)
    follows[np.arange(n_users)[nobody], perm[nobody, 0]] = True  # everyone follows something: the head topic

    core = rng.random(n_users) < g.core_user_fraction
    # Follows predate the window by 1-400 days (long-term interests are old follows).
    followed_ts = start_us - rng.integers(DAY_US, 400 * DAY_US, (n_users, T))
    return Users(interests, weights, dormant, follows, core, followed_ts)


@dataclass
class World:
    cfg: GenerateConfig
    cat: Catalog
    users: Users
    by_sub: GroupedSampler  # items of a sub-interest by popularity
    by_topic: GroupedSampler  # items whose primary topic is t
    by_secondary: GroupedSampler  # items with t as a secondary topic
    global_pop: GroupedSampler  # all items, popularity^1.5 (the popular retriever)
    user_interest: GroupedSampler  # (user, interest slot) rows by weight
    user_follow: GroupedSampler  # (user, followed topic) rows, uniform
    relevance_sub: np.ndarray  # [U, S] bool: sub-interest is an interest (organic or dormant)
    relevance_topic: np.ndarray  # [U, T] bool: a topic of those interests


def build_world(g: GenerateConfig, n_users: int, n_items: int) -> World:
    if g.n_topics < 2 or g.subinterests_per_topic < 1 or g.max_interests < 1 or g.slate_size < 1:
        raise MerError(
            f"generate config: need n_topics >= 2, subinterests_per_topic >= 1, max_interests >= 1, slate_size >= 1 "
            f"(got {g.n_topics}, {g.subinterests_per_topic}, {g.max_interests}, {g.slate_size})"
        )
    S = g.n_topics * g.subinterests_per_topic
    if n_items < 2 * S or n_users < 1:
        raise MerError(f"generate config: n_items={n_items} must be >= 2 x {S} sub-interests and n_users >= 1")
    seeds = np.random.SeedSequence(g.seed).spawn(2)
    cat = build_catalog(g, n_items, np.random.default_rng(seeds[0]))
    users = build_users(g, n_users, cat, _day_start_us(g.start_ds()), np.random.default_rng(seeds[1]))
    T, N, U = g.n_topics, n_items, n_users
    sec_items = np.repeat(np.arange(N), 2)[cat.secondary.ravel() >= 0]
    sec_topics = cat.secondary.ravel()[cat.secondary.ravel() >= 0]
    slot_user = np.repeat(np.arange(U), users.interests.shape[1])
    slot_ok = users.interests.ravel() >= 0
    fu, ft = np.nonzero(users.follows)
    rel_sub = np.zeros((U, S), dtype=bool)
    iu, ik = np.nonzero(users.interests >= 0)
    rel_sub[iu, users.interests[iu, ik]] = True
    du = np.nonzero(users.dormant >= 0)[0]
    rel_sub[du, users.dormant[du]] = True
    rel_topic = rel_sub.reshape(U, T, g.subinterests_per_topic).any(axis=2)
    return World(
        cfg=g, cat=cat, users=users,
        by_sub=GroupedSampler.build(cat.sub, cat.popularity, S),
        by_topic=GroupedSampler.build(cat.topic, cat.popularity, T),
        by_secondary=GroupedSampler.build(sec_topics, cat.popularity[sec_items], T, rows=sec_items),
        global_pop=GroupedSampler.build(np.zeros(N, np.int64), cat.popularity**1.5, 1),
        user_interest=GroupedSampler.build(slot_user[slot_ok], users.weights.ravel()[slot_ok], U,
                                           rows=np.nonzero(slot_ok)[0]),
        user_follow=GroupedSampler.build(fu, np.ones(len(fu)), U, rows=ft),
        relevance_sub=rel_sub,
        relevance_topic=rel_topic,
    )


# ------------------------------------------------------------------------------------------ one day
def _day_start_us(d: date) -> int:
    return int((datetime(d.year, d.month, d.day) - datetime(1970, 1, 1)).total_seconds()) * 1_000_000


def _ids(prefix: str, seq: np.ndarray, width: int = 9) -> pa.Array:
    """'<prefix><zero-padded seq>': string order = numeric order within a day."""
    digits = pc.utf8_lpad(pc.cast(pa.array(seq, type=pa.int64()), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def _slot_plan(g: GenerateConfig) -> np.ndarray:
    """Retriever of each slate position: followed-topic slots first, the rest split by retriever_mix."""
    f = min(g.followed_slots, g.slate_size)
    rest = g.slate_size - f
    mix = np.asarray(g.retriever_mix, dtype=np.float64)
    if mix.shape != (3,) or (mix < 0).any() or mix.sum() <= 0:
        raise MerError(f"generate config: retriever_mix must be 3 non-negative weights, got {g.retriever_mix}")
    n_col = int(round(rest * mix[0] / mix.sum()))
    n_pop = int(round(rest * mix[1] / mix.sum()))
    n_pop = min(n_pop, rest - n_col)
    return np.array([FOLLOWED] * f + [COLLAB] * n_col + [POPULAR] * n_pop + [FRESH] * (rest - n_col - n_pop))


def simulate_day(w: World, day: date, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """Requests, served slates, source-interest rows and engagement events of one day."""
    g, cat, users = w.cfg, w.cat, w.users
    U, N = users.n_users, cat.n_items
    rate = np.where(users.core, g.requests_per_day_core, g.requests_per_day_noncore)
    req_user = np.repeat(np.arange(U), rng.poisson(rate))
    R = len(req_user)
    # Requests start before 23:00 so a slate's events stay inside the day.
    req_ts = _day_start_us(day) + rng.integers(0, DAY_US - 3_600_000_000, R)
    req_surface = rng.choice(len(SURFACES), size=R, p=SURFACE_P)

    plan = _slot_plan(g)
    L = len(plan)
    r_idx = np.repeat(np.arange(R), L)
    pos = np.tile(np.arange(L), R)
    retr = np.tile(plan, R)
    u_of = req_user[r_idx]
    item = np.empty(R * L, dtype=np.int64)
    source = np.full(R * L, -1, dtype=np.int64)

    m = retr == FOLLOWED
    if m.any():
        # One followed topic per request; its slots come from the topic's primary items, some from items
        # that carry it only as a secondary topic.
        req_topic = w.user_follow.sample(req_user, rng.random(R))
        t = req_topic[r_idx[m]]
        via_sec = (rng.random(m.sum()) < g.secondary_topic_serve) & (w.by_secondary.sizes()[t] > 0)
        it = w.by_topic.sample(t, rng.random(m.sum()))
        if via_sec.any():
            it[via_sec] = w.by_secondary.sample(t[via_sec], rng.random(via_sec.sum()))
        item[m], source[m] = it, t
    m = retr == COLLAB
    if m.any():
        slot = w.user_interest.sample(u_of[m], rng.random(m.sum()))
        s = users.interests.ravel()[slot]
        explore = rng.random(m.sum()) < g.sibling_explore
        P = cat.per_topic
        s = np.where(explore, (s // P) * P + rng.integers(0, P, m.sum()), s)
        item[m] = w.by_sub.sample(s, rng.random(m.sum()))
    m = retr == POPULAR
    item[m] = w.global_pop.sample(np.zeros(m.sum(), np.int64), rng.random(m.sum()))
    m = retr == FRESH
    item[m] = rng.integers(0, N, m.sum())

    # A slate shows an item once: keep the first slot that retrieved it (source_interest_log key is unique).
    _, first = np.unique(r_idx * N + item, return_index=True)
    keep = np.sort(first)
    r_idx, pos, retr, u_of, item, source = (a[keep] for a in (r_idx, pos, retr, u_of, item, source))
    n = len(keep)

    s_item = cat.sub[item]
    rel = np.where(w.relevance_sub[u_of, s_item], REL_INTEREST,
                   np.where(w.relevance_topic[u_of, cat.topic[item]], REL_SIBLING, REL_OTHER))
    prop = np.where(users.core[u_of], 1.0, g.noncore_propensity)
    p_save = g.save_rate * rel * prop
    p_click = g.click_rate * rel * prop
    p_hide = g.hide_rate * (rel < REL_INTEREST) * (1.0 - rel)
    x = rng.random(n)
    act = np.select([x < p_save, x < p_save + p_click, x < p_save + p_click + p_hide], [SAVE, CLICK, HIDE], -1)

    imp_ts = req_ts[r_idx] + pos * 200_000 + rng.integers(0, 100_000, n)
    e = act >= 0
    eng_ts = imp_ts[e] + 1_000_000 + rng.exponential(30e6, e.sum()).astype(np.int64)
    ts = np.concatenate([imp_ts, eng_ts])
    ev_action = np.concatenate([np.full(n, IMPRESSION), act[e]])
    ev_row = np.concatenate([np.arange(n), np.nonzero(e)[0]])
    day_end = _day_start_us(day) + DAY_US - 1
    ts = np.minimum(ts, day_end)

    order = np.lexsort((ev_action, ev_row, ts))  # time order; an impression precedes its engagement
    ts, ev_action, ev_row = ts[order], ev_action[order], ev_row[order]
    ev_seq = np.arange(len(ts))
    dup = np.nonzero(rng.random(len(ts)) < g.duplicate_fraction)[0]
    if len(dup):  # a re-sent row: identical, same event_id, logged right after the original
        at = np.sort(np.concatenate([np.arange(len(ts)), dup]), kind="stable")
        ts, ev_action, ev_row, ev_seq = ts[at], ev_action[at], ev_row[at], ev_seq[at]

    tag = day.strftime("%Y%m%d")
    req_ids = _ids(f"r{tag}-", np.arange(R), width=7)
    eng = pa.table(
        {
            "event_id": _ids(f"e{tag}-", ev_seq),
            "event_ts": pa.array(ts, type=pa.timestamp("us")),
            "user_id": pa.array(u_of[ev_row] + 1, type=pa.int64()),
            "item_id": pa.array(item[ev_row] + 1, type=pa.int64()),
            "action": pc.take(pa.array(ACTIONS), pa.array(ev_action)),
            "request_id": pc.take(req_ids, pa.array(r_idx[ev_row])),
            "surface": pc.take(pa.array(SURFACES), pa.array(req_surface[r_idx[ev_row]])),
        },
        schema=RAW_TABLES["engagement_log"],
    )
    src = pa.table(
        {
            "request_id": pc.take(req_ids, pa.array(r_idx)),
            "item_id": pa.array(item + 1, type=pa.int64()),
            "retriever": pc.take(pa.array(RETRIEVERS), pa.array(retr)),
            "source_interest_id": pa.array(source + 1, type=pa.int64(), mask=source < 0),
        },
        schema=RAW_TABLES["source_interest_log"],
    )
    return eng, src


# ------------------------------------------------------------------------------------------ snapshots
def topics_table(g: GenerateConfig) -> pa.Table:
    names = [TOPIC_NAMES[t] if t < len(TOPIC_NAMES) else f"topic_{t:03d}" for t in range(g.n_topics)]
    return pa.table({"topic_id": pa.array(np.arange(1, g.n_topics + 1), pa.int64()), "name": names}, schema=TOPICS)


def item_features_table(cat: Catalog) -> pa.Table:
    N, dim = cat.embedding.shape
    kind = cat.invalid_kind
    lengths = np.where(kind == 3, dim // 2, np.where(kind == 1, 0, dim))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    keep = np.arange(dim)[None, :] < lengths[:, None]
    values = np.where(kind[:, None] == 2, 0.0, cat.embedding)[keep].astype(np.float32)
    emb = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(kind == 1))

    ids = np.concatenate([cat.topic[:, None], cat.secondary], axis=1)
    present = ids >= 0  # already score-ordered: primary, then secondaries descending
    t_off = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    topic_ids = pa.ListArray.from_arrays(pa.array(t_off), pa.array(ids[present] + 1, pa.int64()))
    topic_scores = pa.ListArray.from_arrays(pa.array(t_off), pa.array(cat.scores[present], pa.float32()))
    return pa.table(
        {
            "item_id": pa.array(np.arange(1, N + 1), pa.int64()),
            "pretrained_embedding": emb,
            "category_id": pa.array(cat.category, pa.int64()),
            "creator_id": pa.array(cat.creator, pa.int64()),
            "topic_ids": topic_ids,
            "topic_scores": topic_scores,
        },
        schema=ITEM_FEATURES,
    )


def user_follows_table(users: Users) -> pa.Table:
    u, t = np.nonzero(users.follows)
    return pa.table(
        {
            "user_id": pa.array(u + 1, pa.int64()),
            "topic_id": pa.array(t + 1, pa.int64()),
            "followed_ts": pa.array(users.followed_ts[u, t], pa.timestamp("us")),
        },
        schema=USER_FOLLOWS,
    )


def ground_truth_tables(w: World) -> dict[str, pa.Table]:
    users, cat, P = w.users, w.cat, w.cat.per_topic
    has = users.interests >= 0
    off = np.concatenate([[0], np.cumsum(has.sum(axis=1))]).astype(np.int32)
    fu, ft = np.nonzero(users.follows)
    f_off = np.concatenate([[0], np.cumsum(users.follows.sum(axis=1))]).astype(np.int32)
    interests = users.interests[has]
    users_t = pa.table(
        {
            "user_id": pa.array(np.arange(1, users.n_users + 1), pa.int64()),
            "interests": pa.ListArray.from_arrays(pa.array(off), pa.array(interests, pa.int64())),
            "weights": pa.ListArray.from_arrays(pa.array(off), pa.array(users.weights[has], pa.float64())),
            "interest_topics": pa.ListArray.from_arrays(pa.array(off), pa.array(interests // P + 1, pa.int64())),
            "dormant_interest": pa.array(users.dormant, pa.int64(), mask=users.dormant < 0),
            "dormant_topic": pa.array(users.dormant // P + 1, pa.int64(), mask=users.dormant < 0),
            "followed_topics": pa.ListArray.from_arrays(pa.array(f_off), pa.array(ft + 1, pa.int64())),
            "segment": np.where(users.core, "core", "non_core").tolist(),
        }
    )
    items_t = pa.table(
        {
            "item_id": pa.array(np.arange(1, cat.n_items + 1), pa.int64()),
            "subinterest": pa.array(cat.sub, pa.int64()),
            "topic": pa.array(cat.topic + 1, pa.int64()),
            "valid": pa.array(cat.invalid_kind == 0),
            "popularity": pa.array(cat.popularity, pa.float64()),
        }
    )
    return {"users": users_t, "items": items_t}


def day_seed(g: GenerateConfig, day: date) -> np.random.SeedSequence:
    """The seed of one day's logs: the config seed and the date, never the day's place in a window."""
    return np.random.SeedSequence([g.seed, 1, day.toordinal()])


def _write_file(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


# ------------------------------------------------------------------------------------------ entry point
def generate(cfg: MerConfig, large: bool = False, *, only_missing: bool = False) -> dict:
    """Write ``cfg.generate.days`` days of raw logs ending at ``end_ds`` (+ snapshots, + ground truth).

    A day's logs are drawn from a seed of (seed, that date), so they do not depend on which window they
    were generated in. ``only_missing`` writes only the raw partitions (and ground-truth files) that do
    not exist yet and never replaces one: readers of earlier partitions see the same bytes.
    """
    g = cfg.generate
    if g.days < 1:
        raise MerError(f"generate config: days must be >= 1, got {g.days}")
    n_users, n_items = (g.large_users, g.large_items) if large else (g.n_users, g.n_items)
    snapshots = "ends" if large else g.snapshots
    t0 = time.perf_counter()
    w = build_world(g, n_users, n_items)
    days = [g.start_ds() + timedelta(days=i) for i in range(g.days)]
    snap_days = days if snapshots == "daily" else sorted({days[0], days[-1]})

    def wanted(name: str, d: date) -> bool:
        return not (only_missing and partition_dir(cfg.raw_table(name), d.isoformat()).is_dir())

    snaps = {"topics": topics_table(g), "item_features": item_features_table(w.cat), "user_follows": user_follows_table(w.users)}
    rows = {name: 0 for name in RAW_TABLES}
    actions: dict[str, int] = {a: 0 for a in ACTIONS}
    written: list[str] = []
    for d in snap_days:
        for name, table in snaps.items():
            if wanted(name, d):
                write_partition(cfg.raw_table(name), d.isoformat(), table)
                rows[name] += table.num_rows
                written.append(f"{name}/ds={d.isoformat()}")
    for d in days:
        logs = [name for name in ("engagement_log", "source_interest_log") if wanted(name, d)]
        if not logs:
            continue
        eng, src = simulate_day(w, d, np.random.default_rng(day_seed(g, d)))
        for name, table in zip(("engagement_log", "source_interest_log"), (eng, src)):
            if name in logs:
                write_partition(cfg.raw_table(name), d.isoformat(), table)
                rows[name] += table.num_rows
                written.append(f"{name}/ds={d.isoformat()}")
        if "engagement_log" in logs:
            for rec in pc.value_counts(eng.column("action")).to_pylist():
                actions[rec["values"]] += rec["counts"]
    for name, table in ground_truth_tables(w).items():
        path = cfg.ground_truth_dir / f"{name}.parquet"
        if not (only_missing and path.is_file()):
            _write_file(path, table)
    secs = time.perf_counter() - t0
    events = rows["engagement_log"]
    return {
        "root": str(cfg.root),
        "raw_dir": str(cfg.raw_dir),
        "ground_truth_dir": str(cfg.ground_truth_dir),
        "days": [days[0].isoformat(), days[-1].isoformat()],
        "n_days": len(days),
        "snapshot_days": len(snap_days),
        "written_partitions": len(written),
        "written": written,
        "users": n_users,
        "items": n_items,
        "rows": rows,
        "actions": actions,
        "seconds": round(secs, 2),
        "events_per_s": round(events / secs) if secs > 0 else None,
    }
