"""One typed configuration for every stage.

Defaults describe the embedded run (synthetic logs, Spark local, local S3 endpoint).
Override with environment variables (``MER_BUILD__HISTORY_LEN=30``: prefix ``MER_``,
nested fields joined by ``__``) or a YAML/TOML file named by ``MER_CONFIG_FILE``.
Strict: a missing config file, an unknown key (in the file or a ``MER_<SECTION>__<KEY>`` variable)
or a value of the wrong type is a :class:`ConfigError` naming the variable / file key and the value,
so a typo cannot silently run with the defaults. Every project knob lives here; the only other
environment the code reads is not configuration (credentials, Airflow's, torchrun's RANK/WORLD_SIZE).
Credentials never live here: boto3 reads them from the environment / Airflow connection.
"""
from __future__ import annotations

import os
import tomllib
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import yaml as yaml_lib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from mer.base.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]  # mer/base/config.py -> repo root
ENV_PREFIX = "MER_"
ENV_DELIMITER = "__"
CONFIG_FILE_ENV = "MER_CONFIG_FILE"


class Section(BaseModel):
    """A config section: unknown keys are errors (a misspelt key would otherwise be ignored)."""

    model_config = ConfigDict(extra="forbid")


class GenerateConfig(Section):
    """Synthetic log generator (``mer generate``) and the MovieLens adapter's day mapping (end_ds, days)."""

    seed: int = 7
    end_ds: date = date(2026, 1, 15)
    days: int = 15
    n_users: int = 1500
    n_items: int = 6000
    n_topics: int = 16
    # Many fine sub-interests (256) in a 32-d pretrained space: a single mean embedding of several interests
    # lands among unrelated ones, which is what multi-embedding retrieval fixes.
    subinterests_per_topic: int = 16
    pretrained_dim: int = 32
    n_categories: int = 64
    n_creators: int = 500
    min_interests: int = 1
    max_interests: int = 8
    core_user_fraction: float = 0.3
    requests_per_day_core: float = 3.0
    requests_per_day_noncore: float = 0.35
    slate_size: int = 12
    invalid_feature_fraction: float = 0.03
    # --- planted structure (mer/stages/datagen/synthetic.py explains each) ---
    interest_zipf: float = 0.8  # user interest weights ~ rank^-a x Gamma noise: a dominant head, a torso and a tail
    topic_spread: float = 0.6  # sub-interest centroid = topic direction + spread x own direction (siblings stay close)
    embedding_noise: float = 0.5  # item pretrained embedding = centroid + noise (relative norm)
    popularity_sigma: float = 1.0  # lognormal item popularity: skewed, so logQ correction matters
    followed_slots: int = 3  # per slate; the rest: collaborative, popular, fresh (retriever_mix)
    retriever_mix: list[float] = Field(default_factory=lambda: [0.6, 0.2, 0.2])  # collaborative, popular, fresh
    secondary_topic_serve: float = 0.3  # followed-topic retriever: share served through an item's secondary topic
    sibling_explore: float = 0.15  # collaborative retriever: share from a sibling sub-interest of an interest
    dormant_follow_prob: float = 0.7  # user follows a long-term topic that is absent from organic engagement
    click_rate: float = 0.22  # P(click | on-interest item); x relevance and the user's propensity
    save_rate: float = 0.08
    hide_rate: float = 0.12  # P(hide | off-interest item)
    noncore_propensity: float = 0.5  # non-core users also engage less per impression
    duplicate_fraction: float = 0.001  # at-least-once logging: re-sent engagement rows (same event_id)
    snapshots: Literal["daily", "ends"] = "daily"  # snapshot tables for every day, or first + last day only
    large_users: int = 60_000  # --large: >= 10M events over the window
    large_items: int = 1_000_000

    def start_ds(self) -> date:
        return self.end_ds - timedelta(days=self.days - 1)


class BuildConfig(Section):
    """Validation + Spark training-data build."""

    train_days: int = 14
    eval_days: int = 1
    # The last val_days of the train window form the validation split: early stopping, tuning and the bless
    # decision read it; the eval day is scored once per model and never read during training or selection.
    val_days: int = 1
    history_len: int = 50  # engaged items per user history: the build keeps them, the towers read as many
    positive_actions: list[str] = Field(default_factory=lambda: ["click", "save"])
    negative_actions: list[str] = Field(default_factory=lambda: ["hide"])
    known_actions: list[str] = Field(default_factory=lambda: ["impression", "click", "save", "hide"])
    max_bad_fraction: float = 0.05
    join_rate_min: float = 0.02
    join_rate_max: float = 0.9
    eval_corpus_size: int = 5000
    # Paper: core = > 4 saves in 28 days; scaled to the window length (see mer/stages/spark_jobs/training_data.py).
    core_saves_per_28d: int = 4
    neighbors_top_m: int = 100  # item_neighbors: best co-engaged neighbours kept per item
    neighbors_max_items_per_user: int = 200  # item_neighbors: a user's most recent distinct items that pair up
    # item_factors: implicit ALS (Spark MLlib) over the train split's (user, item, positives); rank = the towers'
    # field width, so a factor row is an id embedding's starting point as it is.
    als_rank: int = 32
    als_reg: float = 0.1
    als_alpha: float = 10.0
    als_iters: int = 10
    als_seed: int = 13
    # Great Expectations runs on pandas: tables above this many rows are checked on a seeded sample.
    gx_max_rows: int = 500_000
    gx_sample_seed: int = 11


class TrainConfig(Section):
    """Towers, loss and the training loop (model/)."""

    seed: int = 13
    embed_dim: int = 64
    # Interests per user for every multi-embedding tower (DCM, MIND, SA, interest-token) and PinnerSage's cluster cap.
    # The paper serves 7 on Pinterest's long sequences; on histories of at most build.history_len = 50 items, 4 was
    # level or above 7 for DCM on the validation day (session 20, three seeds each: MovieLens 0.360 -> 0.367, every
    # seed up; synthetic 0.622 -> 0.626, every seed up; MovieLens as an implicit log 0.260 -> 0.257) and trains
    # ~20% faster. The paper's 7 stays an ablation (`dcm --variant k7`).
    k_im: int = 4
    k_ex: int = 5
    routing_iters: int = 3
    batch_size: int = 512
    # Step budget = max(epochs x steps per epoch of the model's train rows, min_steps): scaled to the data,
    # so a small table (CR source: rows with a logged source interest) still trains enough steps. The LR warms
    # up linearly over warmup_frac of the budget, then decays (cosine) to lr_final_frac x lr at its end; the
    # validation day is scored every epoch and training stops after `patience` scores without a gain,
    # keeping the best weights.
    epochs: int = 8
    min_steps: int = 400
    warmup_frac: float = 0.05
    lr_final_frac: float = 0.1
    # A tower whose validation score still rose in the budget's last period trains up to extend_cycles more
    # cycles of extend_frac x the budget each, its LR warmed up again to extend_lr_frac x lr and decayed (a warm
    # restart from the current weights); a tower that peaked earlier stops as before. One rule for every data
    # set: the budget adapts where the towers are under-trained (items known by their id alone) and costs nothing
    # where they are not. Validation day, means of 3 seeds (session 21): MovieLens as an implicit log single
    # 0.251 -> 0.268, DCM 0.257 -> 0.292 (every seed up); MovieLens single 0.353 -> 0.359, DCM 0.367 -> 0.368;
    # synthetic never extended (bench/RESULTS.md).
    extend_cycles: int = Field(default=2, ge=0)
    # "Still rose" = the last period's HR is within extend_tolerance binomial standard errors (over the
    # early-stopping records) of the best period's; 0 = the last period must be the best. Validation day, select
    # users, means of 3 seeds (session 24): MovieLens as an implicit log DCM 0.336 -> 0.360, single 0.296 -> 0.310;
    # MovieLens DCM 0.381 -> 0.382, single level; synthetic level (no run lower).
    extend_tolerance: float = Field(default=1.0, ge=0.0)
    extend_frac: float = Field(default=0.5, gt=0.0)
    extend_lr_frac: float = Field(default=0.5, gt=0.0)
    # The weights scored on the validation day and kept are an exponential moving average of the trained ones
    # (decay per step; 0 = the raw weights). Validation day, seed 13 (session 10): single 0.541 -> 0.559 on
    # synthetic, 0.331 -> 0.339 on MovieLens, 0.223 -> 0.225 interactions-only; DCM 0.615 -> 0.644 / 0.331 -> 0.340;
    # 0.995 no better (bench/RESULTS.md). No extra steps: one in-place lerp of the weights per step.
    ema_decay: float = Field(default=0.99, ge=0.0, lt=1.0)
    # Validation day (bench/RESULTS.md, session 5): 3e-3 -> 8e-3 moves single 0.314 -> 0.331 and DCM 0.297 -> 0.325
    # on MovieLens, synthetic level or up (0.541 -> 0.546, 0.625 -> 0.625). CR kept 3e-3 until session 10 (its raw
    # weights peaked at epoch 2 and overfit at 8e-3); with the moving average it takes the shared LR: synthetic
    # source / item 0.487 / 0.490 (3e-3, raw) -> 0.499 / 0.507, MovieLens source 0.451 -> 0.456 (3e-3 averaged: 0.458).
    lr: float = 8e-3
    weight_decay: float = 0.0
    temperature: float = 0.1  # validation-day sweep 0.025 / 0.05 / 0.1 / 0.2 on synthetic and MovieLens (bench/RESULTS.md)
    # 3, not 2: DCM's validation curve dips and recovers while the LR decays (MovieLens, seed 2: stopped at epoch 6
    # at 0.305 with patience 2, 0.324 at epoch 8 with 3); a tower that peaks early (CR) keeps its best weights.
    patience: int = 3
    # Per-tower settings over the ones above, by model name (every variant of it), e.g. {"cr": {"lr": 3e-3}};
    # `mer tune --model M` searches from M's effective settings. Interest-token trains half on Eq 9 (max_rule_weight
    # below): on the max-rule loss alone it was lower on an implicit log (validation day 0.121 vs 0.143, session 17).
    by_model: dict[str, dict[str, float | int | bool | str]] = Field(
        default_factory=lambda: {"token": {"max_rule_weight": 0.5}})
    # Negatives beyond the batch: this many items drawn uniformly from the catalog per step (mixed negative
    # sampling, logQ-corrected like the in-batch ones); 0 = in-batch negatives only.
    uniform_negatives: int = 0
    # Learned item-id embeddings for items with >= id_min_count train positives (the most frequent id_vocab_max);
    # id_vocab_max = 0 turns them off (content fields only).
    id_min_count: int = 2
    id_vocab_max: int = 200_000
    # Where the id embeddings start: random, or the build's implicit-ALS item factors (item_factors, Spark MLlib).
    # ALS starts converge faster but end level (single) or stop early (DCM, MovieLens): bench/RESULTS.md.
    id_init: Literal["item_factors", "random"] = "random"
    # How user towers encode history items: with the item tower itself, or a separate Eq 4 summariser.
    history_encoder: Literal["item_tower", "summarize"] = "item_tower"
    # single / DCM: learn a weight per history position (attention bias / centroid weight). Validation day:
    # MovieLens single 0.234 -> 0.305, DCM 0.264 -> 0.283; synthetic level (0.501 -> 0.499, 0.607 -> 0.611).
    recency: bool = True
    # single: output = normalize(attended history + MLP) (a residual, as DCM's c + MLP(c)); item tower: + a linear
    # map of the pretrained embedding. Validation day, both on: single synthetic 0.495 -> 0.541, MovieLens
    # 0.305 -> 0.314; DCM (pre_skip) 0.611 -> 0.623 / 0.283 -> 0.293 (bench/RESULTS.md).
    residual: bool = True
    pre_skip: bool = True
    # DCM: each interest is anchored on the user's attended history g (as single's output is):
    # normalize(w_g g + w_c c_j + MLP([c_j, g])), w_g / w_c learned from 1. Each interest alone was weaker than
    # single's one embedding on MovieLens; anchored, it shifts the whole-history taste towards its cluster.
    # Validation day, 3 seeds: MovieLens 0.291 -> 0.306, synthetic level (0.619 -> 0.617).
    anchor: bool = True
    # DCM serves, besides its k_im interests, the user's recent_queries most recent valid history items as
    # embeddings of their own: their item-tower embeddings scaled by recent_scale (a scaled query scores every
    # item at that fraction of its cosine, so an item query wins the max rule only where it is much closer than
    # any interest), importance recent_scale each (one item's weight in the served merge next to a cluster's
    # sum of members). An interest is a taste anchored on the whole history; a user's last few items are
    # neighbourhoods of their own, which a short history (a light user) is mostly made of. Inference only: the
    # tower trains on its k_im interests as before. Chosen on the validation day's select users over every data
    # set, the trained DCMs of `mer compare` (session 26, bench/RESULTS.md): 5 / 0.7 moves MovieLens 0.3863 ->
    # 0.4033, synthetic 0.6390 -> 0.6456, synthetic-sparse 0.5633 -> 0.5886. 0 = the interests only.
    recent_queries: int = Field(default=5, ge=0)
    recent_scale: float = Field(default=0.7, gt=0.0, le=1.0)
    # Multi-embedding towers (DCM, MIND, SA; interest-token by_model): this share of the loss scores the positive
    # and every negative by the max over the user's embeddings, the rule retrieval ranks by; the rest is Eq 9 as
    # the paper trains (negatives scored by the positive's embedding alone, which never compares one interest's
    # scores with another's); 0 = the paper's loss. Validation day, means of three training seeds (README "DCM
    # trains on the score it is ranked by"): DCM 0.5 -> 1.0 moves MovieLens's ratings as an implicit log 0.245 ->
    # 0.259 (every seed up), MovieLens 0.353 -> 0.358, synthetic 0.634 -> 0.622; 0.75: 0.248 / 0.360 / 0.633
    # (session 18). MIND 0.5 -> 1.0: 0.149 / 0.231 / 0.515 -> 0.182 / 0.249 / 0.524 on implicit / MovieLens /
    # synthetic (session 9, one seed); SA 0.123 / 0.308 / 0.600 -> 0.265 / 0.353 / 0.597 (session 17: at 0.5 it
    # sat at popularity's level on the implicit log, its Gumbel draw, made with the target, rewarding fixed
    # interests).
    max_rule_weight: float = Field(default=1.0, ge=0.0, le=1.0)
    route_valid: bool = True  # DCM: clusters of valid engaged items only (no hides, no featureless items); False = every slot
    # A user none of whose engaged history items has a pretrained embedding is described by those items (id
    # embedding and other fields) instead of by nothing (single, CR) or every slot, hides included (DCM). False:
    # single saw no history on data without pretrained embeddings (item_tower.history_use; bench/RESULTS.md).
    featureless_fallback: bool = True
    max_steps_per_epoch: int | None = None
    va_fpi: bool = True
    sar: bool = True
    preset: Literal["cpu", "paper"] = "cpu"
    num_threads: int | None = None
    # `mer compare`: towers trained at once, each in its own process with the cores split among them (None = one
    # per core, at most one per tower; 1 = one after another in this process). These towers are too small for
    # torch's intra-op threads to keep two cores busy: on 2 cores, two towers at one thread each finished in
    # 61 s what one at a time on two threads took 77 s (bench/RESULTS.md). Set num_threads to fix each tower's.
    compare_workers: int | None = Field(default=None, ge=1)
    field_dim: int = 32  # every input field is projected to this width (DHEN fields, Eq 4 inputs)
    hidden_dim: int = 128
    cat_buckets: int = 1024  # category ids hashed into this many buckets
    creator_buckets: int = 4096  # creator ids hashed (long tail, unseen creators at serving)
    gumbel_tau: float = 1.0  # straight-through Gumbel softmax (SA / interest-token, paper 3.2.4)
    shuffle_buffer: int = 8192  # rows in the deterministic shuffling buffer
    early_stop_records: int = 1500  # validation-day records scored after each epoch for early stopping
    # The validation day's users are split in two by a fixed hash of user_id (data.validation_part): early
    # stopping and the budget extension read this share of them, and everything that chooses between trained
    # models (mer tune's trial scores, the bless gate, the strongest baseline; eval_metrics' val rows) reads the
    # rest. A tower's score on the records it was early-stopped on is its best period's, an optimistic figure
    # (session 23, DCM on MovieLens: id_min_count 5 gained 4.0% on them, 0.3% on users early stopping had not read).
    early_stop_user_share: float = Field(default=0.5, gt=0.0, lt=1.0)
    pinnersage_decay_per_day: float = 0.1  # lambda in importance = sum exp(-lambda * age_days)
    pinnersage_max_clusters: int | None = None  # default k_im
    ddp_backend: str = "gloo"  # torch.distributed backend under torchrun: gloo on CPU, nccl on GPUs

    @model_validator(mode="after")
    def _by_model_names_known_settings(self) -> TrainConfig:
        for model, over in self.by_model.items():
            unknown = sorted(k for k in over if k == "by_model" or k not in type(self).model_fields)
            if unknown:
                raise ValueError(f"train.by_model.{model}: unknown setting(s) {unknown}")
        return self

    @model_validator(mode="after")
    def _a_restart_decays(self) -> TrainConfig:
        # An extension cycle warms up to extend_lr_frac x lr and decays to lr_final_frac x lr: at or below the
        # floor it would climb instead of decay.
        if self.extend_cycles and self.extend_lr_frac <= self.lr_final_frac:
            raise ValueError(f"train.extend_lr_frac={self.extend_lr_frac} must be above train.lr_final_frac="
                             f"{self.lr_final_frac} (an extension cycle decays from the one to the other)")
        return self

    def for_model(self, model: str) -> TrainConfig:
        """The settings `model` trains with: these, with its by_model entry on top (validated: types coerced)."""
        over = self.by_model.get(model)
        if not over:
            return self
        return TrainConfig.model_validate({**self.model_dump(), **over})


class EvalConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [100, 1000])
    serve_budget: int = 1000
    max_eval_records: int = 5000
    bless_margin: float = 0.0
    bless_tolerance: float = 0.02
    candidate_model: str = "dcm"
    baseline_model: str = "single"
    # The simple baselines a candidate must beat (fitted every run; bless takes the strongest on the val day).
    simple_baselines: list[str] = Field(default_factory=lambda: [
        "popularity", "itemknn-sum", "itemknn-max", "pretrained-mean", "pretrained-max", "als", "pinnersage"])
    diversity_k: int = 100  # retrieved-set size for topic diversity and implicit/explicit overlap
    seed: int = 29  # sampling of eval records and of the K_ex followed topics; the bootstrap resamples
    bootstrap_samples: int = 1000  # paired bootstrap resamples for the 95% intervals (of users, with all their records)


class TuneConfig(Section):
    """`mer tune`: a fixed, seeded trial budget on the validation day."""

    trials: int = 12
    startup_trials: int = 5  # random trials before TPE models the space
    seed: int = 17
    enqueue_defaults: bool = True  # trial 0 = the configured defaults


class IndexConfig(Section):
    shards: int = 2
    index_key: str = "auto"
    memory_budget_mb: float = 512  # one model's shards together; a shard gets budget / shards
    recall_k: int = 100
    recall_target: float = 0.95
    recall_queries: int = 500
    build_workers: int = 2
    tune_margin: float = 0.01  # nprobe/efSearch tuned to recall_target + this on validation-day user queries
    # mer infer: the written item_embeddings vs the eager item tower on a seeded sample of items
    parity_sample: int = 256
    parity_tolerance: float = 1e-4  # max |spark - eager| over the sample; above it the stage fails
    # The module serving the trained towers to inference, index and publish (mer/stages/index/towers.py);
    # tests name a tiny seeded tower with the same interface.
    serving_module: str = "mer.stages.model.serving"


class PublishConfig(Section):
    bucket: str = "mer-artifacts"
    prefix: str = "mer/index"
    endpoint_url: str | None = None  # else AWS_ENDPOINT_URL / the Airflow connection
    region: str = "us-east-1"
    retention: int = 5
    multipart_threshold_mb: int = 8
    max_attempts: int = 6


class SparkConfig(Section):
    """Project defaults for the SparkSession (mer/stages/spark_jobs/session.py). They fill in only what the
    launcher left unset: ``spark-submit --master/--conf`` and PYSPARK_SUBMIT_ARGS win."""

    master: str = "local[2]"  # in-process runs only; under spark-submit --master decides
    driver_memory: str = "2g"  # in-process runs only: the driver JVM is already sized under spark-submit
    shuffle_partitions: int = 4


class DagConfig(Section):
    """Read when dags/mer_daily.py is parsed (dag-processor and workers must see the same values)."""

    # First scheduled ds; the DAG's own (the generator's window is a data setting). The default is the
    # default synthetic window's first day, so a catch-up of the demo data starts where its logs do.
    start_date: date = date(2026, 1, 1)
    catchup: bool = False
    retry_delay_s: float = 60
    raw_wait_timeout_s: float = 6 * 3600  # wait_for_raw gives up after this long
    spark_conn: str = ""  # Airflow connection id: Spark stages go through SparkSubmitOperator; "" = in-process


class MerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER, extra="forbid")

    root: Path = REPO_ROOT / "var"
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    dag: DagConfig = Field(default_factory=DagConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        cfg_file = os.environ.get(CONFIG_FILE_ENV)
        if cfg_file:
            # pydantic-settings reads an absent file as empty: a typo in the path would run on defaults.
            if not Path(cfg_file).is_file():
                raise ConfigError(f"{CONFIG_FILE_ENV}={cfg_file}: no such file")
            is_yaml = cfg_file.endswith((".yaml", ".yml"))
            try:
                if is_yaml:
                    sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cfg_file))
                else:
                    sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cfg_file))
            except (yaml_lib.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ConfigError(f"{CONFIG_FILE_ENV}={cfg_file}: not valid {'YAML' if is_yaml else 'TOML'} ({first})") from None
        return tuple(sources)

    # ---- paths: resolved once, here ----
    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def warehouse_dir(self) -> Path:
        return self.root / "warehouse"

    @property
    def quality_dir(self) -> Path:
        return self.root / "quality"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def ground_truth_dir(self) -> Path:
        return self.root / "ground_truth"

    def raw_table(self, table: str) -> Path:
        return self.raw_dir / table

    def table(self, table: str) -> Path:
        return self.warehouse_dir / table

    def run_dir(self, ds: str) -> Path:
        """Per-run artifact folder (models, index shards, report) for one logical date."""
        return self.artifacts_dir / f"ds={ds}"

    def model_dir(self, ds: str, name: str) -> Path:
        """One trained model's artifact folder (weights, config, metrics) for one logical date."""
        return self.run_dir(ds) / "models" / name


# Knobs that used to be read straight from the environment -> the config variable that replaced them. Still set,
# they would be ignored without a word, so they are refused with the new name.
RETIRED_ENV = {
    "MER_SPARK_MASTER": "MER_SPARK__MASTER",
    "MER_SPARK_DRIVER_MEMORY": "MER_SPARK__DRIVER_MEMORY",
    "MER_DDP_BACKEND": "MER_TRAIN__DDP_BACKEND",
    "MER_SERVING_MODULE": "MER_INDEX__SERVING_MODULE",
    "MER_START_DATE": "MER_DAG__START_DATE",
    "MER_CATCHUP": "MER_DAG__CATCHUP",
    "MER_RETRY_DELAY_S": "MER_DAG__RETRY_DELAY_S",
    "MER_RAW_WAIT_TIMEOUT_S": "MER_DAG__RAW_WAIT_TIMEOUT_S",
    "MER_SPARK_CONN": "MER_DAG__SPARK_CONN",
}


def _check_env_names() -> None:
    """MER_<SECTION>__<KEY> with an unknown section, or a retired knob, is refused (pydantic-settings skips both)."""
    sections = {ENV_PREFIX + name.upper() for name in MerConfig.model_fields}
    for name in sorted(os.environ):
        upper = name.upper()
        if upper in RETIRED_ENV:
            raise ConfigError(f"{name} is no longer read: set {RETIRED_ENV[upper]} instead")
        section = upper.split(ENV_DELIMITER, 1)[0]
        if upper.startswith(ENV_PREFIX) and ENV_DELIMITER in upper and section not in sections:
            raise ConfigError(f"{name}={os.environ[name]!r}: unknown config section "
                              f"{section[len(ENV_PREFIX):].lower()!r}")


def load_config(**overrides) -> MerConfig:
    """Defaults < config file < environment < explicit overrides; bad input -> one-line ConfigError."""
    _check_env_names()
    try:
        return MerConfig(**overrides)
    except ValidationError as err:
        raise ConfigError(_describe(err.errors(), overrides)) from None
    except SettingsError as err:  # a list/dict field's variable that is not JSON
        names = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX) and k.upper() != CONFIG_FILE_ENV)
        raise ConfigError(f"config: {err} (MER_* variables set: {', '.join(names) or 'none'})") from None


def _env_var(loc: tuple) -> tuple[str, str] | None:
    """The MER_* variable (name, value) that supplied the value at ``loc``, if one did (names are case-insensitive)."""
    env = {k.upper(): (k, v) for k, v in os.environ.items()}
    parts = [str(p) for p in loc]
    while parts:  # a list item's error (eval.ks.0) comes from the list's variable (MER_EVAL__KS)
        name = ENV_PREFIX + ENV_DELIMITER.join(parts).upper()
        if name in env:
            return env[name]
        parts.pop()
    return None


def _describe(errors: list[dict], overrides: dict) -> str:
    """pydantic's errors as one line: each names its source (the variable, the argument or the file's key)."""
    where_file = f"{CONFIG_FILE_ENV}={os.environ[CONFIG_FILE_ENV]}" if os.environ.get(CONFIG_FILE_ENV) else "config"
    parts: list[str] = []
    unknown_in_file: list[str] = []
    for error in errors:
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc)
        unknown = error["type"] == "extra_forbidden"
        what = f"unknown config key {key}" if unknown else f"{key}: {error['msg']}"
        found = _env_var(loc)
        if loc and loc[0] in overrides:
            parts.append(f"config argument {loc[0]}={overrides[loc[0]]!r}: {what}")
        elif found:
            parts.append(f"{found[0]}={found[1]!r}: {what}")
        elif unknown:
            unknown_in_file.append(key)
        else:
            parts.append(f"{where_file}: key {key} = {error.get('input')!r}: {error['msg']}")
    if unknown_in_file:
        parts.append(f"{where_file}: unknown key(s) {', '.join(unknown_in_file)}")
    return "; ".join(parts)
