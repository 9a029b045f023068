"""`ikd train`: the epoch loop. Early stopping, checkpoints, exact resume at epoch boundaries, averaging of the
last epoch checkpoints, DDP under torchrun. Validation is in ikd.train.validation, what the run shows and logs
in ikd.train.progress."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ikd.checkpoint import FORMAT_1, load_checkpoint
from ikd.device import resolve_device
from ikd.errors import IkdError, Terminated
from ikd.fileio import atomic_write_text, os_error_message
from ikd.recipe import Recipe, dump_recipe
from ikd.train import distributed as dist
from ikd.train.checkpoints import AVERAGE, BEST, LAST, CheckpointManager, average_checkpoints, epoch_checkpoints
from ikd.train.data import RunData, epoch_batches, load_run_data, make_loader
from ikd.train.lock import RunLock
from ikd.train.metrics import MetricsLog
from ikd.train.objective import FIELDS, KD_FIELDS, build_training_model, kd_ce_ratio
from ikd.train.optimizer_state import format_1_names
from ikd.train.progress import EpochMeter, epoch_line, progress_bar, show_window
from ikd.train.resume import resumed_recipe
from ikd.train.rng import rng_state, seed_everything, set_rng_state
from ikd.train.signals import SigtermGuard
from ikd.train.step import Stepper
from ikd.train.validation import validation_bleu, validation_loss


@dataclass
class TrainResult:
    out: Path
    epochs: int  # last finished epoch
    updates: int
    best: float  # the best value of best_metric over the epochs
    best_metric: str  # ce | loss | bleu (train.best_metric)
    stopped: str  # max_epochs | max_updates | patience
    valid: dict[str, float] = field(default_factory=dict)  # the last epoch's validation figures
    average: Path | None = None


def training_device(name: str | None, info: dist.DistInfo | None = None) -> torch.device:
    """--device for training: auto/None, cpu, cuda or cuda:N; under torchrun each process takes
    cuda:LOCAL_RANK."""
    dev = resolve_device(name, info.local_rank if info else None)
    if info is None or dev.type != "cuda":
        return dev
    if info.enabled:
        if name is not None and ":" in str(name):
            raise IkdError(f"--device {name}: under torchrun each process takes cuda:LOCAL_RANK; give --device cuda")
        dev = torch.device("cuda", info.local_rank)
    torch.cuda.set_device(dev)  # kernels, cuDNN and NCCL default to this GPU
    return dev


def better(metric: str, value: float, best: float) -> bool:
    """Whether `value` of best_metric improves on `best` (BLEU grows, the losses fall)."""
    if math.isnan(value):
        return False
    return value > best if metric == "bleu" else value < best


def worst(metric: str) -> float:
    return -math.inf if metric == "bleu" else math.inf


class Trainer:
    """Builds everything from a recipe and runs the epochs. Use `run()`; `train()` below wraps it."""

    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        device: str | None = None,
        resume: bool = False,
        recipe_source: str = "recipe",
        progress: bool = True,
        report=None,
    ):
        self.recipe = recipe
        self.out = Path(out)
        self.resume = resume
        self.recipe_source = recipe_source
        self.progress = progress
        kind = training_device(device).type  # validate before joining a process group
        self.info = dist.init_distributed(kind)
        self.device = training_device(device, self.info)
        self._report = report or (lambda msg: print(msg, flush=True))
        self.lock: RunLock | None = None
        self.saved_epoch = 0  # the epoch of OUT/checkpoint_last.pt (0: none yet)
        self.sigterm = SigtermGuard()
        self.running_epoch = 0  # the epoch being trained or validated (0: none yet)

    def report(self, msg: str) -> None:
        if self.info.is_main:
            self._report(msg)

    # ---- setup -------------------------------------------------------------------------------------
    def _check_out(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, or None; refuses to overwrite a run without --resume."""
        last = self.out / LAST
        if self.resume:
            if last.is_file():
                return load_checkpoint(last)
            self.report(f"--resume: no {last}; starting a new run")
            return None
        if last.is_file() or epoch_checkpoints(self.out):
            raise IkdError(f"{self.out}: holds checkpoints of an earlier run; use --resume or another --out")
        return None

    def take_lock(self) -> None:
        """OUT/.lock (rank 0, which alone writes the folder): refuses a second training in the same folder."""
        if not self.info.is_main:
            return
        self.lock = RunLock(self.out).acquire()
        stale = self.lock.taken_over
        if stale is not None:
            self.report(f"{self.lock.path}: took over the lock of a process that no longer runs ({stale.describe()})")

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def setup(self) -> None:
        self.take_lock()
        self.checkpoint = self._check_out()
        if self.checkpoint is not None:
            self.recipe, taken = resumed_recipe(self.recipe, self.checkpoint["recipe"], str(self.out / LAST))
            if taken:
                self.report(f"--resume: as the run was trained (the recipe does not set them): {', '.join(taken)}")
        recipe = self.recipe
        if recipe.train.best_metric == "bleu" and not recipe.train.valid_bleu:
            raise IkdError(f"{self.recipe_source}: train.best_metric bleu needs train.valid_bleu: true")
        seed_everything(recipe.train.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the CNNs see a handful of batch sizes, each tuned once
        self.data: RunData = load_run_data(recipe, self.recipe_source, report=self.report)
        # a resumed run's teacher comes from its checkpoint: nothing is downloaded
        model = build_training_model(recipe, len(self.data.vocab), self.data.vocab.pad, self.checkpoint is None)
        distiller = model.distiller
        model.to(self.device)  # the distiller's CNNs are already channels_last when the recipe asks
        self.raw_model = model
        wrapped: nn.Module = model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Without KD terms the student gets no gradient; otherwise every trainable parameter is used.
            unused = distiller is not None and not model.uses_kd
            wrapped = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
            torch.manual_seed(recipe.train.seed * 1000 + self.info.rank)  # distinct dropout per rank
        if recipe.train.compile:
            wrapped = torch.compile(wrapped)
        self.model = wrapped
        ddp_sum = (lambda t: dist.all_reduce_sum(t, self.info)) if self.info.enabled else None
        self.stepper = Stepper(wrapped, model, recipe, self.device, self.data.vocab.pad, ddp_sum, self.info.world_size)
        self.ckpt = CheckpointManager(self.out, recipe.train.keep_last, recipe.train.average_last)
        self.log = MetricsLog(self.out / "metrics.jsonl", enabled=self.info.is_main)
        if recipe.train.tensorboard and self.info.is_main:
            from ikd.train.tensorboard import mirror_to_tensorboard

            mirror_to_tensorboard(self.log, self.out / "tensorboard")
        self.epoch = 0
        self.best = worst(recipe.train.best_metric)
        self.bad_epochs = 0
        self.elapsed = 0.0
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.checkpoint is None:  # a new run: drop the log of one that died before its first epoch
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
            atomic_write_text(self.out / "recipe.yaml", dump_recipe(recipe))
        self.checkpoint = None  # restored: the optimiser state need not stay in memory for the whole run

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.raw_model.translator.load_state_dict(ckpt["model"])
        if self.raw_model.distiller is not None:
            self.raw_model.distiller.load_state_dict(ckpt["distiller"])
        state = ckpt["train_state"]
        names = self.stepper.param_names
        try:  # a 0.1.0 state numbers the parameters in 0.1.0's order
            self.stepper.load_state_dict(state, format_1_names(names) if ckpt["read_format"] == FORMAT_1 else None)
        except ValueError as e:
            raise IkdError(f"{self.out / LAST}: {e}") from None
        self.epoch = self.saved_epoch = int(ckpt["epoch"])
        metric = self.recipe.train.best_metric
        if state.get("best_metric", "loss") == metric:
            self.best = float(state["best"] if "best" in state else state["best_loss"])
            self.bad_epochs = int(state["bad_epochs"])
        else:  # early stopping starts afresh on the new metric
            self.report(f"--resume: train.best_metric is now {metric}; the best checkpoint is chosen anew")
            self.best, self.bad_epochs = worst(metric), 0
        self.elapsed = float(state.get("elapsed", 0.0))
        per_rank = state.get("rng_ranks") or []
        if len(per_rank) == self.info.world_size:  # every rank continues its own stream
            set_rng_state(per_rank[self.info.rank])
        elif self.info.is_main:
            set_rng_state(state["rng"])
        else:  # a checkpoint of another world size: a fresh, seeded stream per rank
            torch.manual_seed(self.recipe.train.seed * 1000 + self.info.rank + 7919 * self.epoch)
        self.report(f"resumed from {self.out / LAST}: epoch {self.epoch}, {self.stepper.updates} updates")
        self.log.write("resume", epoch=self.epoch, updates=self.stepper.updates)

    # ---- checkpoints -------------------------------------------------------------------------------
    def payload(self, rng_ranks: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint; `rng_ranks` are the RNG states of every rank in rank order (one on one process),
        for an exact resume."""
        return {
            **self.raw_model.checkpoint_states(),
            "recipe": self.recipe.to_dict(),
            "vocab": list(self.data.vocab.tokens),
            "bpe_codes": self.data.bpe_codes,
            "bpe_vocab": self.data.bpe_vocab,
            "bpe_glossaries": list(self.data.bpe_glossaries),
            "src": self.recipe.data.src,
            "tgt": self.recipe.data.tgt,
            "epoch": self.epoch,
            "updates": self.stepper.updates,
            "train_state": {
                **self.stepper.state_dict(),
                "rng": rng_ranks[0],
                "rng_ranks": rng_ranks,
                "best_metric": self.recipe.train.best_metric,
                "best": self.best,
                "bad_epochs": self.bad_epochs,
                "elapsed": self.elapsed,
            },
        }

    def _kept(self, advice: str = "continue") -> str:
        """What a run that stops now leaves, and how to go on."""
        if not self.saved_epoch:
            return "no checkpoint of this run was written yet"
        return f"{self.out / LAST} (epoch {self.saved_epoch}) is kept: {advice} with ikd train --resume"

    def stopped_by_sigterm(self) -> Terminated:
        """The one line of a run stopped by SIGTERM: where it was, what is kept."""
        updates = self.stepper.updates if hasattr(self, "stepper") else 0
        where = f" at update {updates} (epoch {self.running_epoch})" if updates and self.running_epoch else ""
        return Terminated(f"stopped by SIGTERM{where}; {self._kept()}")

    # ---- validation --------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """This epoch's validation figures: the objective's terms and loss, and BLEU with train.valid_bleu (rank 0
        decodes; the other ranks report NaN)."""
        valid = validation_loss(self.raw_model, self.data, self.recipe, self.device, self.stepper.dtype, self.info)
        if self.recipe.train.valid_bleu:
            if self.info.is_main:
                valid["bleu"] = validation_bleu(
                    self.raw_model, self.data, self.recipe, self.out, self.device, self.stepper.dtype
                )
            else:
                valid["bleu"] = float("nan")
            dist.barrier(self.info)
        return valid

    # ---- the loop ----------------------------------------------------------------------------------
    def _check_finite(self, first_bad: int | None, steps: int, finite_steps_nan: bool) -> None:
        if first_bad is None:
            return
        if self.stepper.fp16 and not finite_steps_nan:
            return  # the grad scaler skipped those updates and lowered its scale
        good = self.out / LAST
        kept = f"; {good} (epoch {self.epoch}) is kept" if good.is_file() else ""
        raise IkdError(
            f"training loss or gradient is not finite at update {first_bad} (epoch {self.epoch + 1}); "
            f"training stopped{kept}. "
            "Try a lower train.lr, a longer train.warmup_updates, or train.clip_norm"
        )

    def _log_window(self, meter: EpochMeter, bar) -> None:
        """Drain the stepper's sums (over all ranks) into a "train" record of metrics.jsonl."""
        if self.info.enabled:
            means, steps, first_bad = self.stepper.drain(
                lambda t: dist.all_reduce_sum(t, self.info), lambda t: dist.all_reduce_min(t, self.info)
            )
        else:
            means, steps, first_bad = self.stepper.drain()
        self._check_finite(first_bad, steps, math.isnan(means["loss"]))
        rates = meter.close_window(means, steps)
        record = self.log.write(
            "train",
            epoch=self.epoch + 1,
            updates=self.stepper.updates,
            lr=self.stepper.schedule.lr,
            **{k: means[k] for k in FIELDS if self.data.images or k not in KD_FIELDS},
            **({"kd_ce": kd_ce_ratio(means, self.recipe)} if self.raw_model.uses_kd else {}),
            **rates,
            elapsed=self.elapsed + (time.perf_counter() - self._run_start),
        )
        if bar is not None:
            show_window(bar, record)

    def _train_epoch(self, epoch: int) -> tuple[EpochMeter, float, bool]:
        """One pass over this rank's shuffled batches: (its meter, its training seconds, whether
        train.max_updates was reached)."""
        recipe, t = self.recipe, self.recipe.train
        batches = epoch_batches(self.data.train, recipe, epoch, self.info)
        pin = self.device.type == "cuda"
        workers = recipe.data.num_workers
        loader = make_loader(self.data.train, batches, self.data.vocab.pad, workers, pin, t.seed + epoch)
        bar = progress_bar(len(batches), epoch) if self.progress and self.info.is_main else None
        self.raw_model.train()
        meter = EpochMeter(self.info.world_size)
        reached_max = False
        for batch in loader:
            batch = batch.to(self.device, non_blocking=True)
            self.stepper.step(batch)
            meter.add(len(batch.indices), int(batch.ntokens))
            if bar is not None:
                bar.update(1)
            if self.stepper.updates % max(1, t.log_every) == 0:
                self._log_window(meter, bar)
            if self.stepper.updates >= t.max_updates:
                reached_max = True
                break
        if self.stepper.steps:
            self._log_window(meter, None)
        if bar is not None:
            bar.close()
        return meter, time.perf_counter() - meter.epoch_start, reached_max

    def _end_epoch(self, epoch: int, meter: EpochMeter, train_time: float) -> dict[str, float]:
        """Validate, decide on the best checkpoint and early stopping, save the epoch's checkpoint, log it."""
        t = self.recipe.train
        self.epoch = epoch
        valid = self.validate()
        metric = t.best_metric
        # rank 0's decision for all ranks (only it computes BLEU), so that early stopping stays in step
        improved = dist.all_gather_object(better(metric, valid[metric], self.best), self.info)[0]
        if improved:
            self.best, self.bad_epochs = valid[metric], 0
        else:
            self.bad_epochs += 1
        self.elapsed += time.perf_counter() - self._run_start
        self._run_start = time.perf_counter()
        rng_ranks = dist.all_gather_object(rng_state(), self.info)
        if self.info.is_main:
            self.lock.check()
            try:
                with self.sigterm.deferred():  # a checkpoint begun is finished
                    self.ckpt.save_epoch(self.payload(rng_ranks), epoch, best=improved)
                    self.saved_epoch = epoch
            except OSError as e:  # a full disk, a quota: the earlier checkpoints are whole (atomic writes)
                raise IkdError(f"{os_error_message(e)}; {self._kept('make room and continue')}") from None
        dist.barrier(self.info)
        rates = meter.epoch_rates(train_time)
        self.log.write(
            "epoch",
            epoch=epoch,
            updates=self.stepper.updates,
            lr=self.stepper.schedule.lr,
            **{
                f"train_{k}": v
                for k, v in meter.train_means().items()
                if self.data.images or k not in KD_FIELDS
            },
            **{f"valid_{k}": v for k, v in valid.items()},
            best_metric=t.best_metric,
            best=self.best,
            bad_epochs=self.bad_epochs,
            **rates,
            epoch_time=train_time,
            elapsed=self.elapsed,
        )
        self.report(epoch_line(epoch, self.stepper.updates, valid, rates["tokens_per_s"], improved))
        return valid

    def run(self) -> TrainResult:
        self.setup()
        t = self.recipe.train
        self._run_start = time.perf_counter()
        stopped = "max_epochs"
        last_valid: dict[str, float] = {}
        if self.stepper.updates >= t.max_updates:
            stopped = "max_updates"
        elif t.patience > 0 and self.bad_epochs >= t.patience:
            stopped = "patience"
        while stopped == "max_epochs" and self.epoch < t.max_epochs:
            epoch = self.running_epoch = self.epoch + 1
            meter, train_time, reached_max = self._train_epoch(epoch)
            if reached_max:
                stopped = "max_updates"
            last_valid = self._end_epoch(epoch, meter, train_time)
            if t.patience > 0 and self.bad_epochs >= t.patience:
                stopped = "patience"
        average = None
        if self.info.is_main and t.average_last > 0 and epoch_checkpoints(self.out):
            self.lock.check()
            try:
                with self.sigterm.deferred():
                    average = average_checkpoints(self.out, t.average_last)
            except OSError as e:
                raise IkdError(f"{os_error_message(e)}; {self._kept('make room and continue')}") from None
            self.report(
                f"averaged the last {min(t.average_last, len(epoch_checkpoints(self.out)))} epoch "
                f"checkpoints into {average}"
            )
        dist.barrier(self.info)
        return TrainResult(
            self.out, self.epoch, self.stepper.updates, self.best, t.best_metric, stopped, last_valid, average
        )


def train(
    recipe: Recipe,
    out: str | Path | None = None,
    device: str | None = None,
    resume: bool = False,
    recipe_source: str = "recipe",
    progress: bool = True,
    report=None,
) -> TrainResult:
    """Train per `recipe` into `out` (default recipe.train.out). Under torchrun, one process per device."""
    trainer = Trainer(recipe, Path(out or recipe.train.out), device, resume, recipe_source, progress, report)
    try:
        with trainer.sigterm.installed():
            try:
                return trainer.run()
            except Terminated:
                raise trainer.stopped_by_sigterm() from None
    finally:
        trainer.release_lock()
        dist.shutdown(trainer.info)


__all__ = ["AVERAGE", "BEST", "LAST", "TrainResult", "Trainer", "average_checkpoints", "train"]
