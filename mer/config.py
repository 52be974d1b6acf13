"""One typed configuration for every stage.

Defaults describe the embedded run (synthetic logs, Spark local, local S3 endpoint).
Override with environment variables (``MER_BUILD__HISTORY_LEN=30``: prefix ``MER_``,
nested fields joined by ``__``) or a YAML/TOML file named by ``MER_CONFIG_FILE``.
Credentials never live here: boto3 reads them from the environment / Airflow connection.
"""
from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


class GenerateConfig(BaseModel):
    """Synthetic log generator (``mer generate``)."""

    seed: int = 7
    end_ds: date = date(2026, 1, 15)
    days: int = 15
    n_users: int = 1500
    n_items: int = 6000
    n_topics: int = 16
    subinterests_per_topic: int = 4
    pretrained_dim: int = 32
    n_categories: int = 64
    n_creators: int = 500
    min_interests: int = 1
    max_interests: int = 8
    core_user_fraction: float = 0.3
    requests_per_day_core: float = 3.0
    requests_per_day_noncore: float = 0.6
    slate_size: int = 12
    invalid_feature_fraction: float = 0.03

    def start_ds(self) -> date:
        return self.end_ds - timedelta(days=self.days - 1)


class BuildConfig(BaseModel):
    """Validation + Spark training-data build."""

    train_days: int = 14
    eval_days: int = 1
    history_len: int = 50
    positive_actions: list[str] = Field(default_factory=lambda: ["click", "save"])
    negative_actions: list[str] = Field(default_factory=lambda: ["hide"])
    known_actions: list[str] = Field(default_factory=lambda: ["impression", "click", "save", "hide"])
    max_bad_fraction: float = 0.05
    join_rate_min: float = 0.02
    join_rate_max: float = 0.9
    eval_corpus_size: int = 5000
    # Paper: core = > 4 saves in 28 days; scaled to the window length (see spark_jobs/training_data.py).
    core_saves_per_28d: int = 4
    spark_master: str = "local[2]"
    shuffle_partitions: int = 4


class TrainConfig(BaseModel):
    seed: int = 13
    embed_dim: int = 64
    k_im: int = 7
    k_ex: int = 5
    routing_iters: int = 3
    batch_size: int = 512
    epochs: int = 3
    lr: float = 3e-3
    weight_decay: float = 0.0
    temperature: float = 0.05
    patience: int = 2
    max_steps_per_epoch: int | None = None
    history_len: int = 50
    va_fpi: bool = True
    sar: bool = True
    preset: Literal["cpu", "paper"] = "cpu"
    num_threads: int | None = None


class EvalConfig(BaseModel):
    ks: list[int] = Field(default_factory=lambda: [100, 1000])
    serve_budget: int = 1000
    max_eval_records: int = 5000
    bless_margin: float = 0.0
    bless_tolerance: float = 0.02
    candidate_model: str = "dcm"
    baseline_model: str = "single"


class IndexConfig(BaseModel):
    shards: int = 2
    index_key: str = "auto"
    memory_budget_mb: int = 512
    recall_k: int = 100
    recall_target: float = 0.95
    recall_queries: int = 500
    build_workers: int = 2


class PublishConfig(BaseModel):
    bucket: str = "mer-artifacts"
    prefix: str = "mer/index"
    endpoint_url: str | None = None  # else AWS_ENDPOINT_URL / the Airflow connection
    region: str = "us-east-1"
    retention: int = 5
    multipart_threshold_mb: int = 8
    max_attempts: int = 6


class MerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MER_", env_nested_delimiter="__", extra="ignore")

    root: Path = REPO_ROOT / "var"
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)

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
        cfg_file = os.environ.get("MER_CONFIG_FILE")
        if cfg_file:
            if cfg_file.endswith((".yaml", ".yml")):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cfg_file))
            else:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cfg_file))
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


def load_config(**overrides) -> MerConfig:
    """Defaults < config file < environment < explicit overrides."""
    return MerConfig(**overrides)
