"""Stage 3: train one user tower + item tower on training_examples (`mer train --model ... --variant ...`).

Streams the train split in record batches through a seeded shuffling buffer, optimises Eq 9 within a
step budget scaled to the data (warmup + cosine LR), keeps a moving average of the weights, scores that
average's HR@100 on a sample of the validation day after each epoch (early stopping with patience; the eval
day is never read here) and writes
cfg.run_dir(ds)/models/<name>/: weights.safetensors, config.json, metrics.json, curve.csv and the
exported user tower (user_tower.pt2).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors import safe_open
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model
from torch.optim import swa_utils
from tqdm import tqdm

from mer.base.config import MerConfig, load_config
from mer.base.errors import ConfigError, ContractError, MerError, NotApplicable, validate_ds
from mer.base.io import read_partition, swap_in
from mer.stages.model.data import (
    corpus_rows,
    examples_dataset,
    factor_arrays,
    has_logged_conditions,
    item_probabilities,
    load_catalog,
    load_topic_vocab,
    make_batch,
    read_eval,
    sample_item_conditions,
    shuffled_tables,
    stream_tables,
)
from mer.stages.model.export import export_user_tower
from mer.stages.model.item_tower import TowerConfig
from mer.stages.model.loss import (
    StreamingFrequency,
    sampled_softmax_loss,
    select_embedding,
)
from mer.stages.model.scoring import active_of, eval_batch, hr_at
from mer.stages.model.tower_spec import TowerSpec
from mer.stages.model.zoo import (
    FITTERS,
    TwoTower,
    artifact_name,
    check_variant,
    tower_config,
    tower_spec,
)

log = logging.getLogger(__name__)
WEIGHTS = "weights.safetensors"


def set_threads(cfg: MerConfig) -> None:
    torch.set_num_threads(cfg.train.num_threads or max(1, min(2, os.cpu_count() or 1)))


def train_step(net: TwoTower, batch, log_q: torch.Tensor, opt: torch.optim.Optimizer, temperature: float,
               ddp: torch.nn.Module | None = None) -> float:
    # Under DDP the forward goes through the wrapper, so backward all-reduces (averages) the gradients.
    loss = ddp(batch, log_q, temperature) if ddp is not None else batch_loss(net, batch, log_q, temperature)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def batch_loss(net: TwoTower, batch, log_q: torch.Tensor, temperature: float) -> torch.Tensor:
    user, importance = net.user(*batch.inputs)  # [B, K, d], [B, K]
    items = net.item(*batch.catalog_inputs)  # [B, d]
    active = active_of(net, importance.detach())
    extra = None
    negatives = getattr(batch, "negatives", None)
    if negatives is not None:
        inputs, rows, n_items = negatives
        extra = (net.item(*inputs), rows, n_items)
    w = net.c.max_rule_weight if net.c.k > 1 else 0.0  # one embedding: the max rule is Eq 9
    loss = 0.0
    if w < 1:  # on the max-rule loss alone (the default) there is no association to draw and no Eq 9 to score
        u = select_embedding(user, items, active, net.association, net.c.gumbel_tau, temperature)
        loss = (1 - w) * sampled_softmax_loss(u, items, log_q, batch.target_rows, temperature, extra)  # Eq 9
    if w > 0:
        loss = loss + w * sampled_softmax_loss(None, items, log_q, batch.target_rows, temperature, extra,
                                               (user, active))
    return loss


class _StepLoss(torch.nn.Module):
    """The training loss as one module's forward, so DistributedDataParallel wraps (and syncs) every step."""

    def __init__(self, net: TwoTower):
        super().__init__()
        self.net = net

    def forward(self, batch, log_q: torch.Tensor, temperature: float) -> torch.Tensor:
        return batch_loss(self.net, batch, log_q, temperature)


def dist_setup(backend: str | None = None) -> tuple[int, int]:
    """(rank, world size). Under ``torchrun`` (WORLD_SIZE > 1) joins the process group with ``backend``
    (default: the config's train.ddp_backend, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend or load_config().train.ddp_backend)
    return dist.get_rank(), dist.get_world_size()


def _all_reduce(values: list[float], op: str = "sum") -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def _broadcast(value: float) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t[0])


def id_vocabulary(cfg: MerConfig, ds: str) -> np.ndarray:
    """Sorted item ids that get their own id embedding: >= id_min_count train positives, the most frequent
    id_vocab_max (item_frequency counts the train split only). Empty when id embeddings are off."""
    t = cfg.train
    path = cfg.table("item_frequency") / f"ds={ds}"
    if not t.id_vocab_max or not path.is_dir():
        return np.zeros(0, dtype=np.int64)
    freq = read_partition(cfg.table("item_frequency"), ds, columns=["item_id", "count"])
    ids = freq.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    counts = freq.column("count").to_numpy(zero_copy_only=False)
    keep = counts >= t.id_min_count
    ids, counts = ids[keep], counts[keep]
    if len(ids) > t.id_vocab_max:
        ids = ids[np.lexsort((ids, -counts))[: t.id_vocab_max]]
    return np.sort(ids)


def build_net(cfg: MerConfig, ds: str, model: str, variant: str | None, catalog, vocab) -> TwoTower:
    id_vocab = id_vocabulary(cfg, ds)
    tc = tower_config(cfg, model, variant, pre_dim=catalog.pre_dim, topic_vocab=vocab.tolist(),
                      id_vocab_size=len(id_vocab))
    net = TwoTower(tc)
    if len(id_vocab):
        fields = net.item.summarize.fields
        fields.id_vocab.copy_(torch.from_numpy(id_vocab))
        if cfg.train.id_init == "item_factors":
            init_id_embeddings(fields.ids.weight, id_vocab, item_factor_rows(cfg, ds))
    return net


def item_factor_rows(cfg: MerConfig, ds: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted item ids, factor rows) of the item_factors partition; None when the build wrote none."""
    path = cfg.table("item_factors") / f"ds={ds}"
    if not path.is_dir():
        log.warning("item_factors missing for ds=%s: item-id embeddings start random (run `mer build`)", ds)
        return None
    ids, rows = factor_arrays(read_partition(cfg.table("item_factors"), ds, columns=["item_id", "factors"]))
    order = np.argsort(ids, kind="stable")
    return ids[order], rows[order]


@torch.no_grad()
def init_id_embeddings(weight: torch.Tensor, vocab: np.ndarray, factors: tuple[np.ndarray, np.ndarray] | None) -> int:
    """Start vocabulary rows (weight row 1 + position in vocab) from their ALS factors; returns how many.

    Factors are rescaled so their mean row norm equals the random init's (std 0.1 per component): the id
    field then enters the tower at the scale the other fields were initialised for. A factor of another width
    is cut or zero-padded; vocabulary items without a factor keep their random row.
    """
    if factors is None or not len(factors[0]):
        return 0
    ids, rows = factors
    width = weight.shape[1]
    rows = rows[:, :width] if rows.shape[1] >= width else np.pad(rows, ((0, 0), (0, width - rows.shape[1])))
    pos = np.clip(np.searchsorted(ids, vocab), 0, len(ids) - 1)
    hit = ids[pos] == vocab
    if not hit.any():
        return 0
    chosen = rows[pos[hit]]
    norm = float(np.linalg.norm(chosen, axis=1).mean())
    if norm > 0:
        chosen = chosen * (0.1 * math.sqrt(width) / norm)
    weight[1 + np.flatnonzero(hit)] = torch.from_numpy(chosen.astype(np.float32))
    return int(hit.sum())


def step_budget(cfg: MerConfig, ds: str, spec: TowerSpec, world: int = 1) -> tuple[int, int, int]:
    """(steps per epoch, total step budget, steps per evaluation period) of one rank, from the tower's train rows.

    The budget is scaled to the data; the validation day is scored once per period = budget / epochs steps (at
    least an epoch), so a small table (CR source: rows with a logged condition) that makes up its budget with many
    short epochs is not early-stopped after a few dozen steps while its learning rate is still warming up.
    """
    t = cfg.train
    flt = pc.field("split") == "train"
    if spec.logged_condition_only:
        flt = flt & pc.field("condition_id").is_valid()
    rows = examples_dataset(cfg, ds).count_rows(filter=flt)
    per_epoch = max(1, -(-rows // (t.batch_size * world)))
    if t.max_steps_per_epoch:
        per_epoch = min(per_epoch, t.max_steps_per_epoch)
    budget = max(t.epochs * per_epoch, t.min_steps)
    if budget == 0:  # nothing would train, and there would be no best weights to keep
        raise ConfigError(f"train.epochs={t.epochs} and train.min_steps={t.min_steps}: the step budget is 0; "
                          "set either above 0")
    return per_epoch, budget, max(per_epoch, -(-budget // max(1, t.epochs)))


def still_gaining(last: float, best: float, n: int, tolerance: float) -> bool:
    """Whether a budget's last validation score (HR over n early-stopping records) counts as still at the best.

    Within `tolerance` binomial standard errors of the best period's HR, sqrt(best (1 - best) / n): on a sample
    of a few thousand records from a few dozen users, "the last period beat every one before it" decides on
    noise (bench/RESULTS.md, session 24). tolerance 0 asks for the best itself. No score (NaN, kept as -1 by the
    loop) is never still gaining."""
    return last >= 0 and last >= best - tolerance * math.sqrt(max(best * (1.0 - best), 0.0) / max(n, 1))


def lr_schedule(opt: torch.optim.Optimizer, budget: int, warmup_frac: float, final_frac: float, peak: float = 1.0):
    """Linear warmup over warmup_frac of the budget to peak x lr, then cosine decay to final_frac x lr at the budget."""
    warm = max(1, int(budget * warmup_frac))

    def factor(step: int) -> float:
        if step < warm:
            return peak * (step + 1) / warm
        p = min(1.0, (step - warm) / max(1, budget - warm))
        return final_frac + (peak - final_frac) * 0.5 * (1 + math.cos(math.pi * p))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def run(cfg: MerConfig, ds: str, model: str, variant: str | None = None) -> dict:
    validate_ds(ds)
    if variant is None and "-" in model:  # an artifact name ("itemknn-max") names the model and its variant
        model, variant = model.split("-", 1)
    variant = check_variant(model, variant)
    if model in FITTERS:  # PinnerSage and the baselines are fitted, not trained by this loop
        return FITTERS[model](cfg, ds, model, variant)
    fit = train_tower(cfg, ds, model, variant)
    if fit["rank"] > 0:  # only rank 0 writes the model folder
        return {k: v for k, v in fit.items() if k not in ("net", "curve")}
    return save_artifacts(cfg, ds, fit["model"], fit["net"], fit["net"].c, fit["curve"], fit["extra"])


def row_conditions(spec: TowerSpec, table, catalog, rng: np.random.Generator) -> np.ndarray | None:
    """The condition each train row carries, when it is not simply the logged one (None = use condition_id)."""
    if spec.condition not in ("item", "logged_or_item"):
        return None
    if spec.condition == "item":
        return sample_item_conditions(table, catalog, rng)
    out = table.column("condition_id").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    need = out < 0  # only rows without a logged source interest fall back to an item topic
    if need.any():
        out[need] = sample_item_conditions(table.filter(pa.array(need)), catalog, rng)
    return out


def train_tower(cfg: MerConfig, ds: str, model: str, variant: str | None) -> dict:
    """Train one tower to its best validation-day score; nothing written (`run` saves, `mer tune` compares)."""
    name = artifact_name(model, variant)
    spec = tower_spec(model, variant)  # what the batches need: the loop never branches on the model's name
    cfg = cfg.model_copy(update={"train": cfg.train.for_model(model)})  # this tower's own settings (by_model)
    t = cfg.train
    rank, world = dist_setup(t.ddp_backend)
    set_threads(cfg)
    if world > 1 and not t.num_threads:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the ranks share the machine's cores
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    t0 = time.time()

    examples_dataset(cfg, ds)  # fail first on the table this stage is about
    vocab = load_topic_vocab(cfg, ds)
    catalog = load_catalog(cfg, ds, vocab)
    net = build_net(cfg, ds, model, variant, catalog, vocab)
    tc = net.c
    prob = item_probabilities(cfg, ds, catalog)
    freq = StreamingFrequency() if prob is None else None
    if prob is None:
        log.warning("item_frequency missing for ds=%s: logQ from the streaming frequency estimator", ds)
    log_prob = None if prob is None else torch.from_numpy(np.log(np.clip(prob, 1e-9, None))).float()

    # Early stopping scores the validation day only: the eval day is never read while training.
    # Early stopping reads the validation day's "stop" users only: the others are kept for what selects between
    # trained towers (tune, bless), which would otherwise score each tower on the records it was stopped on.
    val = eval_batch(read_eval(cfg, ds, t.early_stop_records, t.seed, conditioned_only=spec.conditioned, split="val",
                               part="stop"), catalog, tc.history_len)
    if val is None or len(val) == 0:
        if spec.conditioned and not has_logged_conditions(cfg, ds):
            raise NotApplicable(
                f"model {name}: table training_examples has no row with a condition_id in ds={ds} (no positive "
                "engagement joined a followed-topic source interest in source_interest_log), so this data set logs "
                f"no explicit interests to condition on; {name} is not trained")
        raise ContractError(f"table training_examples: no validation-day rows (split='val') for model {name} in "
                            f"ds={ds}" + (" with a condition_id" if spec.conditioned else "")
                            + ": early stopping needs them (check build.val_days and the window's last days)")
    corpus = corpus_rows(cfg, ds, catalog)
    per_epoch, budget, period = step_budget(cfg, ds, spec, world)
    opt = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = lr_schedule(opt, budget, t.warmup_frac, t.lr_final_frac)
    budget_0 = budget
    ddp = None
    if world > 1:
        # Same seed on every rank (and DDP broadcasts rank 0's weights); a variant's idle parameters
        # must not stall the gradient all-reduce.
        ddp = torch.nn.parallel.DistributedDataParallel(_StepLoss(net), find_unused_parameters=True)
        torch.manual_seed(t.seed + 1000 * rank)  # Gumbel noise differs per rank

    curve, best, best_state, bad_epochs, seen = [], -1.0, None, 0, 0
    # An exponential moving average of the weights (torch's own AveragedModel) is what gets scored and kept:
    # smoother than the last step's weights, at no extra step (train.ema_decay; 0 = the raw weights).
    ema = None
    if t.ema_decay > 0:
        ema = swa_utils.AveragedModel(net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
    scored = net if ema is None else ema.module
    cond_rng = np.random.default_rng(t.seed + 1)
    neg_rng = np.random.default_rng(t.seed + 2)
    total_steps, epoch, passes, cycles = 0, 0, 0, 0
    while total_steps < budget:
        net.train()
        losses, n_ex, e0, steps = [], 0, time.time(), 0
        while steps < period and total_steps + steps < budget:  # passes over the train split until the period ends
            rng = np.random.default_rng([t.seed, passes])
            passes += 1
            tables = stream_tables(cfg, ds, "train", conditioned_only=spec.logged_condition_only)
            bar = tqdm(shuffled_tables(tables, t.shuffle_buffer, t.batch_size, rng), desc=f"{name} period {epoch}",
                       unit="batch", leave=False, disable=None if rank == 0 else True)
            joined = contextlib.ExitStack()
            if ddp is not None:
                # Every rank sees the same seeded batch order and trains on batches i % world == rank (disjoint
                # slices); join() lets a rank that runs out of batches shadow the others' all-reduces.
                joined.enter_context(ddp.join())
            before = steps
            for i, table in enumerate(bar):
                if world > 1 and i % world != rank:
                    continue
                cond = row_conditions(spec, table, catalog, cond_rng)
                batch = make_batch(table, catalog, tc.history_len, cond)
                keep = batch.target_rows.numpy() > 0
                if spec.conditioned:
                    keep &= batch.cond.numpy() > 0  # a conditioned tower's row needs a known condition
                if keep.sum() < 2:
                    continue
                if not keep.all():
                    batch = batch.take(keep)
                batch.catalog_inputs = catalog.item_inputs(batch.target_rows)
                if log_prob is not None:
                    log_q = log_prob[batch.target_rows]
                else:
                    log_q = torch.from_numpy(np.log(freq.update(batch.item_ids))).float()
                batch.negatives = None
                if t.uniform_negatives:
                    rows = torch.from_numpy(neg_rng.integers(1, catalog.n_rows, t.uniform_negatives))
                    batch.negatives = (catalog.item_inputs(rows), rows, catalog.n_rows - 1)
                losses.append(train_step(net, batch, log_q, opt, t.temperature, ddp))
                sched.step()
                if ema is not None:
                    ema.update_parameters(net)
                n_ex += len(batch)
                steps += 1
                bar.set_postfix(loss=f"{losses[-1]:.3f}", ex_s=f"{n_ex / max(time.time() - e0, 1e-6):.0f}")
                if steps >= period or total_steps + steps >= budget:
                    break
            joined.close()
            # A pass with no usable row: more would not change that. Under DDP a period is one pass, so that
            # every rank leaves it together (a rank starting another pass alone would wait on the others).
            if steps == before or world > 1:
                break
        if world > 1:  # period figures over all ranks: examples summed, steps of the longest rank
            n_ex, any_losses = (int(v) for v in _all_reduce([n_ex, len(losses)]))
            steps = int(_all_reduce([steps], "max")[0])
            losses = losses or ([float("nan")] if any_losses else [])
        if not losses:
            raise ContractError(f"table training_examples: no usable train rows (split='train') for model {name} "
                                f"in ds={ds}" + (" (it needs rows with a known condition_id)" if spec.conditioned else ""))
        seen += n_ex
        total_steps += steps
        hr = hr_at(scored, val, catalog, corpus, 100) if rank == 0 else float("nan")
        if world > 1:
            hr = _broadcast(hr)  # rank 0 evaluates; every rank takes the same early-stopping decision
        secs = time.time() - e0
        curve.append({"epoch": epoch, "passes": passes, "steps": steps, "examples": n_ex, "loss": float(np.mean(losses)),
                      "loss_first": losses[0], "loss_last": float(np.mean(losses[-max(1, len(losses) // 5):])),
                      "lr": opt.param_groups[0]["lr"], "val_hr@100": hr, "seconds": round(secs, 2),
                      "examples_per_s": round(n_ex / max(secs, 1e-6), 1)})
        log.info("%s period %d loss %.4f val HR@100 %.4f", name, epoch, curve[-1]["loss"], hr)
        epoch += 1
        score = -1.0 if np.isnan(hr) else hr
        if score > best:
            best, bad_epochs = score, 0
            best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= t.patience:
                break
        if (total_steps >= budget and epoch > 1 and cycles < t.extend_cycles
                and still_gaining(score, best, len(val), t.extend_tolerance)):
            # Still gaining when the budget ran out (the last period at the best, within the sample's noise):
            # another, shorter cycle from the current weights, its LR warmed up to extend_lr_frac x lr and decayed
            # again (a warm restart). A tower that peaked well before the end of its budget never gets here, so
            # this costs nothing where the budget was enough; one period alone says nothing about a trend. Patience
            # carries over: a cycle granted on a period short of the best ends at the next one that is no better.
            cycles += 1
            extra = max(period, int(budget_0 * t.extend_frac))
            budget += extra
            sched = lr_schedule(opt, extra, t.warmup_frac, t.lr_final_frac, t.extend_lr_frac)
    if best_state is None:  # every period's validation score was NaN: no weights are better than any other
        raise MerError(f"table training_examples: model {name} got no validation-day score (split='val') in ds={ds} "
                       "in any period: HR@100 was NaN every time, so there are no best weights to keep")
    net.load_state_dict(best_state)
    return {"model": name, "rank": rank, "world_size": world, "train_examples_seen": seen, "best_val_hr@100": best,
            "net": net, "curve": curve,
            "extra": {"train_seconds": round(time.time() - t0, 2), "train_examples_seen": seen,
                      "steps": total_steps, "step_budget": budget_0, "extended_steps": budget - budget_0,
                      "extra_cycles": cycles, "best_val_hr@100": best,
                      "logq": "item_frequency" if prob is not None else "streaming", "world_size": world,
                      "id_vocab": tc.id_vocab_size}}


def save_artifacts(cfg: MerConfig, ds: str, name: str, net: TwoTower, tc: TowerConfig, curve: list[dict],
                   extra: dict) -> dict:
    """Write the model folder next to the final one, then swap it in (a reader never sees half a model)."""
    final = cfg.model_dir(validate_ds(ds), name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        # save_model drops the names that alias one tensor (psi shared as the history encoder) and load_model
        # restores them: one copy of every weight in the file.
        save_model(net, str(tmp / WEIGHTS))
        version = f"{name}-{ds}-{weights_digest(net)}"
        export = "user_tower.pt2"
        try:
            export_user_tower(net.user, tc, tmp)
        except Exception as exc:  # noqa: BLE001 - an export failure must not lose the trained weights
            log.warning("torch.export of %s failed (%s); serving uses the eager tower", name, exc)
            export = None
        conf = {"model": tc.model, "variant": tc.variant, "name": name, "ds": ds, "model_version": version,
                "dim": tc.dim, "k": tc.k, "export": export, "tower": tc.to_dict()}
        (tmp / "config.json").write_text(json.dumps(conf, indent=2))
        metrics = {"model": name, "model_version": version, **extra, "epochs_run": len(curve),
                   "final_loss": curve[-1]["loss"] if curve else None, "curve": curve}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if curve:
            with open(tmp / "curve.csv", "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(curve[0]))
                w.writeheader()
                w.writerows(curve)
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"model": name, "model_version": version, "dir": str(final), **extra, "epochs_run": len(curve),
            "first_loss": curve[0]["loss_first"] if curve else None, "final_loss": curve[-1]["loss_last"] if curve else None,
            "exported": export is not None}


def weights_digest(net: torch.nn.Module) -> str:
    """12 hex digits of sha256 over every weight's name, dtype, shape and values, in name order: the same weights
    get the same model version. Not the file's bytes: save_model orders the header's alias map differently from
    one save to the next (two identical trainings got two versions)."""
    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        v = value.detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        h.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:12]


def load_model(folder: Path) -> tuple[TwoTower, dict]:
    """A trained two-tower from its folder (safetensors: no pickle is ever loaded)."""
    folder = Path(folder)
    conf_path = folder / "config.json"
    if not conf_path.is_file() or not (folder / WEIGHTS).is_file():
        raise MerError(f"model folder {folder} has no config.json / {WEIGHTS}: train it first")
    try:
        # The header alone tells a safetensors file from anything else; the tensors are read once, below.
        with safe_open(str(folder / WEIGHTS), framework="pt"):
            pass
    except Exception as exc:  # safetensors refuses anything that is not its own header + tensors (pickles too)
        raise ContractError(f"model folder {folder}: {WEIGHTS} is not a valid safetensors file "
                            f"({type(exc).__name__}: {exc}); nothing was unpickled") from None
    try:
        conf = json.loads(conf_path.read_text())
        tc = TowerConfig(**conf["tower"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ContractError(f"model folder {folder}: config.json is not a model config ({exc})") from None
    net = TwoTower(tc)
    try:
        load_weights(net, str(folder / WEIGHTS))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ContractError(f"model folder {folder}: {WEIGHTS} does not match config.json ({first})") from None
    net.eval()
    return net, conf
