"""`mer tune --model M`: seeded hyper-parameter search on the validation day (Optuna TPE).

Each trial trains the tower with the sampled settings (`mer.stages.model.train.train_tower`, nothing written to the
model folders; early stopping reads the validation day's "stop" users) and is scored by its HR@100 on the
validation day's other users (`data.validation_part`), as the bless gate scores towers: not by its best early-
stopping score, which is the best of its periods on the records it was stopped on and so favours a trial with
more periods or a lucky one (session 23: a setting that gained 4% there gained 0.3% on users early stopping had
not read). The eval day is never read. A trial trains as a tower would, budget extensions included (train.extend_cycles): a
trial still gaining at the end of its budget trains up to twice the steps, as the tower would with those
settings, and `tune_trials.steps` records what it took. Trials go to the `tune_trials` table (partition ds, one
row per trial and model), so the defaults in mer/base/config.py can be read off it; they are chosen once for
every data set, never per data set.
"""
from __future__ import annotations

import json
import logging
import time

import optuna
import pyarrow as pa
import pyarrow.compute as pc

from mer.base.config import MerConfig
from mer.base.contract import TUNE_TRIALS
from mer.base.errors import MerError, validate_ds
from mer.base.io import read_partition, write_partition
from mer.stages.model.zoo import BASELINES, artifact_name, check_variant

log = logging.getLogger(__name__)

# The search space: (low, high, log scale). Temperature and learning rate move HR most; uniform negatives
# and weight decay are the other knobs the quality issue asks about.
SPACE = {
    "lr": (3e-4, 1e-2, True),
    "temperature": (0.02, 0.2, True),
}
CHOICES = {"uniform_negatives": [0, 512], "weight_decay": [0.0, 1e-4, 1e-2]}


def sample(trial: optuna.Trial) -> dict:
    params = {k: trial.suggest_float(k, lo, hi, log=log_) for k, (lo, hi, log_) in SPACE.items()}
    params.update({k: trial.suggest_categorical(k, v) for k, v in CHOICES.items()})
    return params


class Selection:
    """The records trained towers are compared on: the validation day's "select" users (the ones early stopping
    did not read), sampled as the evaluation samples them; for a conditioned tower (CR), the records with a logged
    condition, as its early stopping reads. `mer tune` scores its trials with it, bench/bench_setting.py the
    settings it compares."""

    def __init__(self, cfg: MerConfig, ds: str, model: str, variant: str | None):
        from mer.stages.model.data import corpus_rows, load_catalog, read_eval
        from mer.stages.model.zoo import tower_spec

        self.catalog = load_catalog(cfg, ds)
        self.corpus = corpus_rows(cfg, ds, self.catalog)
        self.table = read_eval(cfg, ds, cfg.eval.max_eval_records, cfg.eval.seed, split="val", part="select",
                               conditioned_only=tower_spec(model, variant).conditioned)
        self._batches: dict[int, object] = {}  # by history length: every trial of a search scores the same batch

    def hr(self, net, k: int = 100) -> float:
        from mer.stages.model.scoring import eval_batch, hr_at

        n = net.c.history_len
        if n not in self._batches:
            self._batches[n] = eval_batch(self.table, self.catalog, n)
        return float(hr_at(net, self._batches[n], self.catalog, self.corpus, k))


def run(cfg: MerConfig, ds: str, model: str = "dcm", variant: str | None = None, trials: int | None = None) -> dict:
    from mer.stages.model.train import train_tower

    validate_ds(ds)
    variant = check_variant(model, variant)
    if model in BASELINES or model == "pinnersage":
        raise MerError(f"model {model!r} has nothing to tune: only the trained towers take `mer tune`")
    name = artifact_name(model, variant)
    n_trials = trials if trials is not None else cfg.tune.trials
    if n_trials < 1:
        raise MerError(f"mer tune: --trials must be >= 1 (got {n_trials})")
    sampler = optuna.samplers.TPESampler(seed=cfg.tune.seed, n_startup_trials=min(cfg.tune.startup_trials, n_trials))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    # The search starts from this tower's own settings (train.by_model on top); a trial's values then win.
    own = cfg.train.for_model(model).model_copy(update={"by_model": {}})
    if cfg.tune.enqueue_defaults:  # the current defaults are trial 0: a search that finds nothing better says so
        study.enqueue_trial({k: getattr(own, k) for k in (*SPACE, *CHOICES)})
    rows = []
    select = Selection(cfg, ds, model, variant)

    def objective(trial: optuna.Trial) -> float:
        params = sample(trial)
        tcfg = cfg.model_copy(update={"train": own.model_copy(update=params)})
        t0 = time.time()
        fit = train_tower(tcfg, ds, model, variant)
        value = select.hr(fit["net"])
        rows.append({"model": name, "trial": trial.number, "params": json.dumps(params, sort_keys=True),
                     "val_hr_at_100": value, "steps": int(fit["extra"]["steps"]),
                     "seconds": round(time.time() - t0, 2)})
        log.info("tune %s trial %d: %s -> val HR@100 %.4f", name, trial.number, params, value)
        return value

    study.optimize(objective, n_trials=n_trials)
    table = pa.Table.from_pylist(rows, schema=TUNE_TRIALS)
    # Other models' trials of the same ds stay: a partition holds every tuned model's rows.
    path = cfg.table("tune_trials") / f"ds={ds}"
    if path.is_dir():
        old = read_partition(cfg.table("tune_trials"), ds)
        old = old.filter(pc.not_equal(old.column("model"), name))
        table = pa.concat_tables([old, table])
    write_partition(cfg.table("tune_trials"), ds, table)
    best = study.best_trial
    return {"model": name, "ds": ds, "trials": n_trials, "best_val_hr@100": round(best.value, 4),
            "best_params": best.params, "table": str(path),
            "trials_by_value": sorted(({"trial": r["trial"], "val_hr@100": round(r["val_hr_at_100"], 4),
                                        **json.loads(r["params"])} for r in rows), key=lambda r: -r["val_hr@100"])}
