"""`ikd train`: the epoch loop. Validation (loss with its KD terms, and BLEU), early stopping, checkpoints,
exact resume at epoch boundaries, averaging of the last epoch checkpoints, DDP under torchrun."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ikd.checkpoint import load_checkpoint
from ikd.data.text import remove_bpe
from ikd.device import resolve_device
from ikd.errors import IkdError
from ikd.evaluation.metrics import bleu
from ikd.fileio import atomic_write_text
from ikd.inference.loading import Loaded
from ikd.inference.translator import SearchOptions, Translator
from ikd.recipe import Recipe, dump_recipe
from ikd.train import distributed as dist
from ikd.train.checkpoints import AVERAGE, BEST, LAST, CheckpointManager, average_checkpoints, epoch_checkpoints
from ikd.train.data import RunData, epoch_batches, load_run_data, make_loader
from ikd.train.metrics import MetricsLog
from ikd.train.objective import FIELDS, KD_FIELDS, build_training_model, kd_ce_ratio, objective
from ikd.train.rng import rng_state, seed_everything, set_rng_state
from ikd.train.step import Stepper

# Validation BLEU caps the output at 1.5 * source + 10 tokens (the test-time cap is 0 * source + 200): an
# untrained model that never emits EOS would otherwise decode 200 tokens per sentence every epoch.
VALID_MAX_LEN = (1.5, 10)

# Recipe sections that fix the model's parameters: a resumed run must not change them.
MODEL_SECTIONS = ("data", "model", "vision", "kd")


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


def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = []
    for section in MODEL_SECTIONS:
        sa, sb = a.get(section, {}), b.get(section, {})
        for key in sorted(set(sa) | set(sb)):
            if section == "data" and key in ("num_workers", "skip_overlong", "max_len", "dir"):
                continue
            if sa.get(key) != sb.get(key):
                keys.append(f"{section}.{key}")
    return keys


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

    def setup(self) -> None:
        recipe = self.recipe
        self.checkpoint = self._check_out()
        if self.checkpoint is not None:
            differ = _diff_keys(self.checkpoint["recipe"], recipe.to_dict())
            if differ:
                raise IkdError(
                    f"{self.out / LAST}: --resume with a recipe that changes {', '.join(differ)}; "
                    "only train.* settings may change when resuming"
                )
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
        self.stepper.load_state_dict(state)
        self.epoch = int(ckpt["epoch"])
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

    # ---- validation --------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss (label-smoothed CE per target token + weighted KD, as in training) on this
        rank's share of the valid batches, summed over ranks."""
        model, recipe, split = self.raw_model, self.recipe, self.data.valid
        model.eval()
        t = recipe.train
        batches = split.batches(t.max_tokens, t.batch_multiple, False, t.seed, 0)
        batches = batches[self.info.rank :: self.info.world_size]  # all of them, unevenly shared
        # sums: ce*tokens, nll*tokens, tokens, sentences, then each KD term * sentences
        sums = torch.zeros(4 + len(KD_FIELDS), dtype=torch.float64, device=self.device)
        loader = make_loader(split, batches, self.data.vocab.pad, 0, False, t.seed)
        for batch in loader:
            batch = batch.to(self.device, non_blocking=True)
            losses = objective(model, batch, recipe, self.data.vocab.pad, self.stepper.dtype)
            n, ntok = len(batch.indices), batch.ntokens
            counts = losses.ce.new_tensor([float(ntok), float(n)])
            kd = torch.stack([getattr(losses, k) for k in KD_FIELDS]) * n
            part = torch.cat([torch.stack([losses.ce, losses.nll]) * ntok, counts, kd])
            sums += part.double()
        dist.all_reduce_sum(sums, self.info)
        ce, nll, ntok, n, *kd_sums = sums.tolist()
        model.train()
        out = {"ce": ce / max(ntok, 1), "nll": nll / max(ntok, 1)}
        out.update({k: v / max(n, 1) for k, v in zip(KD_FIELDS, kd_sums)})
        out["ppl"] = math.exp(min(out["nll"], 50.0))
        out["loss"] = out["ce"] + recipe.kd.lambda_irm * out["irm"] + recipe.kd.lambda_iam * out["iam"]
        if split.data.images is None:  # no KD terms on this split
            out = {k: v for k, v in out.items() if k not in KD_FIELDS}
        return out

    @torch.no_grad()
    def valid_bleu(self) -> float:
        """Corpus BLEU on the valid split, decoded by the same Translator as `ikd translate` and `ikd evaluate`
        (train.valid_beam; 1 = greedy) with the output cap VALID_MAX_LEN: de-BPE'd, tokenised text, sacrebleu
        with tokenize=none (the paper's multi-bleu-style number)."""
        model, split, vocab, t = self.raw_model.translator, self.data.valid, self.data.vocab, self.recipe.train
        model.eval()
        loaded = Loaded(
            model, vocab, None, self.recipe, self.recipe.data.src, self.recipe.data.tgt, self.out, self.device,
            self.stepper.dtype,
        )
        a, b = VALID_MAX_LEN
        translator = Translator(loaded, SearchOptions(beam=max(1, t.valid_beam), max_len_a=a, max_len_b=b))
        lines = [int(i) for i in split.keep]
        found = translator.search([split.data.src[i].tolist() for i in lines])
        model.train()
        hyps = [remove_bpe(" ".join(vocab.decode(h[0].tokens))) if h else "" for h in found]
        return bleu(hyps, self.data.valid_refs).score

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

    def _log_train(self, window_start: float, sentences: int, tokens: int, bar) -> None:
        if self.info.enabled:
            means, steps, first_bad = self.stepper.drain(
                lambda t: dist.all_reduce_sum(t, self.info), lambda t: dist.all_reduce_min(t, self.info)
            )
        else:
            means, steps, first_bad = self.stepper.drain()
        self._check_finite(first_bad, steps, math.isnan(means["loss"]))
        for k in FIELDS:  # the epoch's running means (over updates) for its record
            self._epoch_train[k] = self._epoch_train.get(k, 0.0) + means[k] * steps
        self._epoch_train["_steps"] = self._epoch_train.get("_steps", 0) + steps
        span = max(time.perf_counter() - window_start, 1e-9)
        record = self.log.write(
            "train",
            epoch=self.epoch + 1,
            updates=self.stepper.updates,
            lr=self.stepper.schedule.lr,
            **{k: means[k] for k in FIELDS if self.data.images or k not in KD_FIELDS},
            **({"kd_ce": kd_ce_ratio(means, self.recipe)} if self.raw_model.uses_kd else {}),
            sentences_per_s=sentences / span * self.info.world_size,
            tokens_per_s=tokens / span * self.info.world_size,
            elapsed=self.elapsed + (time.perf_counter() - self._run_start),
        )
        if bar is not None:
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                lr=f"{record['lr']:.2e}",
                sent_s=f"{record['sentences_per_s']:.0f}",
                tok_s=f"{record['tokens_per_s']:.0f}",
                refresh=False,
            )

    def run(self) -> TrainResult:
        self.setup()
        recipe, t = self.recipe, self.recipe.train
        self._run_start = time.perf_counter()
        stopped = "max_epochs"
        last_valid: dict[str, float] = {}
        if self.stepper.updates >= t.max_updates:
            stopped = "max_updates"
        elif t.patience > 0 and self.bad_epochs >= t.patience:
            stopped = "patience"
        while stopped == "max_epochs" and self.epoch < t.max_epochs:
            epoch = self.epoch + 1
            batches = epoch_batches(self.data.train, recipe, epoch, self.info)
            pin = self.device.type == "cuda"
            loader = make_loader(
                self.data.train, batches, self.data.vocab.pad, recipe.data.num_workers, pin, t.seed + epoch
            )
            bar = None
            if self.progress and self.info.is_main:
                from tqdm import tqdm

                bar = tqdm(
                    total=len(batches),
                    desc=f"epoch {epoch}",
                    unit="batch",
                    leave=False,
                    mininterval=1.0,
                    dynamic_ncols=True,
                    disable=None,  # no bar when stderr is not a terminal (a log file gets the epoch lines only)
                )
            self.raw_model.train()
            epoch_start = window_start = time.perf_counter()
            sentences = tokens = ep_sentences = ep_tokens = 0
            self._epoch_train: dict[str, float] = {}
            for batch in loader:
                batch = batch.to(self.device, non_blocking=True)
                self.stepper.step(batch)
                n, ntok = len(batch.indices), int(batch.ntokens)
                sentences += n
                tokens += ntok
                ep_sentences += n
                ep_tokens += ntok
                if bar is not None:
                    bar.update(1)
                if self.stepper.updates % max(1, t.log_every) == 0:
                    self._log_train(window_start, sentences, tokens, bar)
                    window_start, sentences, tokens = time.perf_counter(), 0, 0
                if self.stepper.updates >= t.max_updates:
                    stopped = "max_updates"
                    break
            if self.stepper.steps:
                self._log_train(window_start, sentences, tokens, None)
            if bar is not None:
                bar.close()
            train_time = time.perf_counter() - epoch_start
            self.epoch = epoch
            valid = self.validate()
            if t.valid_bleu:
                valid["bleu"] = self.valid_bleu() if self.info.is_main else float("nan")
                dist.barrier(self.info)
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
                self.ckpt.save_epoch(self.payload(rng_ranks), epoch, best=improved)
            dist.barrier(self.info)
            world = self.info.world_size
            self.log.write(
                "epoch",
                epoch=epoch,
                updates=self.stepper.updates,
                lr=self.stepper.schedule.lr,
                **{
                    f"train_{k}": v / max(self._epoch_train.get("_steps", 0), 1)
                    for k, v in self._epoch_train.items()
                    if k != "_steps" and (self.data.images or k not in KD_FIELDS)
                },
                **{f"valid_{k}": v for k, v in valid.items()},
                best_metric=t.best_metric,
                best=self.best,
                bad_epochs=self.bad_epochs,
                sentences_per_s=ep_sentences * world / max(train_time, 1e-9),
                tokens_per_s=ep_tokens * world / max(train_time, 1e-9),
                epoch_time=train_time,
                elapsed=self.elapsed,
            )
            bleu = f", bleu {valid['bleu']:.2f}" if "bleu" in valid else ""
            kd = f", irm {valid['irm']:.4g}, iam {valid['iam']:.4g}" if "irm" in valid else ""
            self.report(
                f"epoch {epoch}: {self.stepper.updates} updates, valid loss {valid['loss']:.4f} "
                f"(ce {valid['ce']:.4f}{kd}){bleu}, {ep_tokens * world / max(train_time, 1e-9):.0f} tok/s"
                + (", best so far" if improved else "")
            )
            last_valid = valid
            if t.patience > 0 and self.bad_epochs >= t.patience:
                stopped = "patience"
        average = None
        if self.info.is_main and t.average_last > 0 and epoch_checkpoints(self.out):
            average = average_checkpoints(self.out, t.average_last)
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
        return trainer.run()
    finally:
        dist.shutdown(trainer.info)


__all__ = ["AVERAGE", "BEST", "LAST", "TrainResult", "Trainer", "average_checkpoints", "train"]
