"""``mer``: one subcommand per pipeline stage. The Airflow DAG calls the same functions.

Stage modules are imported inside each command so ``mer --help`` stays instant and a
stage's heavy dependencies (pyspark, torch, faiss) load only when that stage runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import enum

import typer

from mer.base.config import MerConfig, load_config
from mer.base.errors import MerError, validate_ds
from mer.stages.model.names import ALL_MODELS, TRAINED, VARIANTS
from mer.stages.quality import STAGES as GATE_STAGES



def _choices(name: str, values) -> type[enum.Enum]:
    """Typed choices: a typo gets "Invalid value ... is not one of" with the list, before any work."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Model = _choices("Model", ALL_MODELS)
Tower = _choices("Tower", TRAINED)
Variant = _choices("Variant", sorted({v for vs in VARIANTS.values() for v in vs}))
GateStage = _choices("GateStage", GATE_STAGES)
ImplicitAction = _choices("ImplicitAction", ("click", "save"))


def _value(choice: enum.Enum | None) -> str | None:
    return None if choice is None else choice.value

app = typer.Typer(help="MER: multi-embedding retrieval pipeline", no_args_is_help=True, add_completion=False)
ingest_app = typer.Typer(help="Convert a public dataset into the raw input contract", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")

DsOpt = Annotated[Optional[str], typer.Option("--ds", help="logical date YYYY-MM-DD (default: generator end date)")]
RootOpt = Annotated[Optional[Path], typer.Option("--root", help="data root (default: MER_ROOT or ./var)")]


def _cfg(root: Optional[Path]) -> MerConfig:
    return load_config(root=root) if root else load_config()


def _ds(cfg: MerConfig, ds: Optional[str]) -> str:
    return validate_ds(ds or cfg.generate.end_ds.isoformat())


def _emit(result: object) -> None:
    if result is not None:
        typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def generate(
    root: RootOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="override the generator seed")] = None,
    users: Annotated[Optional[int], typer.Option(help="number of users")] = None,
    items: Annotated[Optional[int], typer.Option(help="number of items")] = None,
    large: Annotated[bool, typer.Option("--large", help="millions of events (benchmarks)")] = False,
) -> None:
    """Write 15 days of seeded synthetic logs in the raw input contract."""
    from mer.stages.datagen.synthetic import generate as run

    cfg = _cfg(root)
    overrides = {k: v for k, v in {"seed": seed, "n_users": users, "n_items": items}.items() if v is not None}
    if overrides:
        cfg.generate = cfg.generate.model_copy(update=overrides)
    _emit(run(cfg, large=large))


@ingest_app.command("movielens")
def ingest_movielens(
    path: Annotated[Path, typer.Argument(help="folder with ratings.csv and movies.csv")],
    root: RootOpt = None,
) -> None:
    """MovieLens latest-small -> raw contract (research use only; see its README.txt)."""
    from mer.stages.datagen.movielens import ingest

    _emit(ingest(_cfg(root), path))


@ingest_app.command("interactions")
def ingest_interactions(
    path: Annotated[Path, typer.Argument(help="interactions: .csv, .tsv, .parquet or a folder of Parquet files")],
    items: Annotated[Optional[Path], typer.Option(help="item table (same formats): topics, category, creator, "
                                                       "content embedding")] = None,
    user_col: Annotated[str, typer.Option(help="user id column")] = "user_id",
    item_col: Annotated[str, typer.Option(help="item id column (both tables)")] = "item_id",
    time_col: Annotated[str, typer.Option(help="time column: epoch s/ms/us/ns or date-time strings")] = "timestamp",
    rating_col: Annotated[Optional[str], typer.Option(help="explicit rating column (none: implicit feedback)")] = None,
    save_at: Annotated[float, typer.Option(help="rating >= this is a save")] = 4.0,
    click_at: Annotated[float, typer.Option(help="rating >= this is a click; lower is a hide")] = 3.0,
    implicit_action: Annotated[ImplicitAction, typer.Option(help="action of every row without a rating column")] = (
        ImplicitAction.click),
    topics_col: Annotated[Optional[str], typer.Option(help="item topics: a list column or a separated string")] = None,
    topic_sep: Annotated[str, typer.Option(help="separator of a string topics column")] = "|",
    category_col: Annotated[Optional[str], typer.Option(help="item category column")] = None,
    creator_col: Annotated[Optional[str], typer.Option(help="item creator / brand / author column")] = None,
    embedding_col: Annotated[Optional[str], typer.Option(help="item content embedding: a list column or numbers "
                                                               "in a string")] = None,
    root: RootOpt = None,
) -> None:
    """Any (user, item, time[, rating]) log -> raw contract; follows and source interests simulated from topics."""
    from mer.stages.datagen.interactions import InteractionsSource, ingest

    src = InteractionsSource(path=path, items=items, user_col=user_col, item_col=item_col, time_col=time_col,
                             rating_col=rating_col, save_at=save_at, click_at=click_at,
                             implicit_action=implicit_action.value, topics_col=topics_col, topic_sep=topic_sep,
                             category_col=category_col, creator_col=creator_col, embedding_col=embedding_col)
    _emit(ingest(_cfg(root), src))


@app.command()
def validate(ds: DsOpt = None, root: RootOpt = None) -> None:
    """Stage 1: validate raw partitions of the window; quarantine bad rows."""
    from mer.stages.spark_jobs.validate_raw import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds)))


@app.command()
def build(ds: DsOpt = None, root: RootOpt = None) -> None:
    """Stage 2: cr_triples, training_examples, item_frequency, eval_corpus, item_neighbors, item_factors (Spark)."""
    from mer.stages.spark_jobs.training_data import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds)))


@app.command()
def check(
    stage: Annotated[GateStage, typer.Argument(help="which gate")],
    ds: DsOpt = None,
    root: RootOpt = None,
) -> None:
    """Run a Great Expectations gate; fails listing the failed expectations."""
    from mer.stages.quality.gates import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds), stage.value))


@app.command()
def train(
    model: Annotated[Model, typer.Option("--model",
                                         help="towers: dcm | cr | single | mind | sa | token; no training: "
                                       "pinnersage (Ward clusters + medoids); simple baselines fitted on the train "
                                       "split: popularity | itemknn | pretrained | inverted")] = "dcm",
    variant: Annotated[Optional[Variant], typer.Option(
                                                   help="cr: source | item; dcm: no-vafpi | no-sar | k2 | k4 | k7 | "
                                                   "no-recent; "
                                                   "itemknn: sum | max; pretrained: mean | max")] = None,
    ds: DsOpt = None,
    root: RootOpt = None,
) -> None:
    """Stage 3: train one user tower (+ item tower) on training_examples, or fit a simple baseline."""
    from mer.stages.model.train import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds), model.value, _value(variant)))


@app.command()
def tune(
    model: Annotated[Tower, typer.Option("--model", help="the tower to tune")] = "dcm",
    variant: Annotated[Optional[Variant], typer.Option(help="as for `mer train`")] = None,
    trials: Annotated[Optional[int], typer.Option(help="trial budget (default: tune.trials)")] = None,
    ds: DsOpt = None,
    root: RootOpt = None,
) -> None:
    """Seeded Optuna TPE search on the validation day only -> tune_trials table (the eval day is never read)."""
    from mer.stages.model.tune import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds), model.value, _value(variant), trials))


@app.command()
def evaluate(ds: DsOpt = None, root: RootOpt = None) -> None:
    """Stage 4: HR@K (max over embeddings), filtered HR, segments, served merge -> eval_metrics."""
    from mer.stages.model.evaluate import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds)))


@app.command()
def compare(ds: DsOpt = None, root: RootOpt = None,
            train: Annotated[bool, typer.Option("--train/--no-train",
                                                help="--no-train: re-evaluate the models already trained for ds")] = True,
            only: Annotated[Optional[str], typer.Option("--only", help="comma-separated model names to (re)train, "
                                                        "e.g. sa,token,cr (the others are kept)")] = None) -> None:
    """All models + DCM ablations (VA-FPI, SAR, K) on the same data; prints one table."""
    from mer.stages.model.compare import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds), train_models=train, only=None if only is None else only.split(",")))


@app.command()
def infer(ds: DsOpt = None, root: RootOpt = None) -> None:
    """Stage 5: bulk item-tower inference over the catalog (Spark) -> item_embeddings."""
    from mer.stages.spark_jobs.item_inference import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds)))


@app.command("build-index")
def build_index(
    ds: DsOpt = None,
    shard: Annotated[Optional[int], typer.Option(help="build one shard only (default: all)")] = None,
    root: RootOpt = None,
) -> None:
    """Stage 6: FAISS index shards from item_embeddings."""
    from mer.stages.index.build import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds), shard))


@app.command("recall-gate")
def recall_gate(ds: DsOpt = None, root: RootOpt = None) -> None:
    """Recall@K of each shard and of the merge vs exact search; fails below target."""
    from mer.stages.index.recall import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds)))


@app.command()
def publish(
    ds: DsOpt = None,
    run_id: Annotated[str, typer.Option("--run-id")] = "manual",
    root: RootOpt = None,
) -> None:
    """Stage 7: upload shards, user towers, manifest (last), then LATEST."""
    from mer.stages.index.publish import run

    cfg = _cfg(root)
    _emit(run(cfg, _ds(cfg, ds), run_id))


@app.command()
def rollback(root: RootOpt = None) -> None:
    """Point LATEST at the previous good version."""
    from mer.app.local_s3 import storage_for_cli
    from mer.stages.index.publish import rollback as run

    cfg = _cfg(root)
    with storage_for_cli(cfg):
        _emit(run(cfg))


@app.command()
def query(
    user: Annotated[int, typer.Option("--user", help="user id")],
    k: Annotated[int, typer.Option(help="candidates to print")] = 20,
    ds: DsOpt = None,
    root: RootOpt = None,
) -> None:
    """A user's merged candidates from the published index, with the embedding each came from."""
    from mer.app.local_s3 import storage_for_cli
    from mer.stages.index.reader import query_user

    cfg = _cfg(root)
    with storage_for_cli(cfg):
        query_user(cfg, user, k=k, ds=ds)


SqlFormat = _choices("SqlFormat", ("table", "csv", "json"))


@app.command()
def sql(
    statement: Annotated[str, typer.Argument(help="SQL over the produced tables (DuckDB)")],
    root: RootOpt = None,
    fmt: Annotated[SqlFormat, typer.Option("--format", help="table, csv, or json (JSON Lines: one object per row)")] = "table",
    max_rows: Annotated[Optional[int], typer.Option(
        "--max-rows", help="rows to print (default 1000 for table, all for csv/json; 0 = all)")] = None,
) -> None:
    """Query any produced table with DuckDB, e.g. mer sql "SELECT count(*) FROM mer.cr_triples_latest".

    Views: mer.<table> (also bare), raw.<table>, <table>_latest (newest ds only), kept in <root>/views.duckdb."""
    from mer.app.sql import run

    run(_cfg(root), statement, fmt=_value(fmt), max_rows=max_rows)


@app.command()
def tables(
    name: Annotated[Optional[str], typer.Argument(help="one table: its columns, types and meanings")] = None,
    root: RootOpt = None,
) -> None:
    """The tables: partitions, newest ds and its row count, what each holds; `mer tables <name>` for columns."""
    from mer.app.sql import print_tables

    print_tables(_cfg(root), name)


@app.command("serve-sql")
def serve_sql(
    connect_port: Annotated[int, typer.Option("--connect-port", help="Spark Connect port (notebooks)")] = 15002,
    thrift_port: Annotated[int, typer.Option("--thrift-port", help="Thrift JDBC port (beeline, BI tools)")] = 10000,
    host: Annotated[str, typer.Option("--host", help="bind address; no authentication, so keep it local")] = "127.0.0.1",
    register_only: Annotated[bool, typer.Option("--register-only", help="register every table, then exit")] = False,
    root: RootOpt = None,
) -> None:
    """Spark SQL over the persistent metastore: Spark Connect and Thrift JDBC in one process until Ctrl-C."""
    from mer.app.sql_server import register_only as register
    from mer.app.sql_server import serve

    cfg = _cfg(root)
    if register_only:
        _emit(register(cfg))
    else:
        serve(cfg, host=host, connect_port=connect_port, thrift_port=thrift_port)


@app.command()
def demo(ds: DsOpt = None, root: RootOpt = None) -> None:
    """The main job: generate logs if absent, start a local S3 endpoint, run the whole DAG.

    Prints a line per task and a summary; the full log (and its JSON summary) goes to <root>/logs/demo-<ds>.log."""
    from mer.app.demo import run

    cfg = _cfg(root)
    run(cfg, _ds(cfg, ds))


def main() -> None:
    try:
        app()
    except MerError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
