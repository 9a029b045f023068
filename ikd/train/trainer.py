"""`ikd train`: the epoch loop. Validation (loss with its KD terms, and BLEU), early stopping, checkpoints,
exact resume at epoch boundaries, averaging of the last epoch checkpoints, DDP under torchrun."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ikd.checkpoint import load_checkpoint
from ikd.errors import IkdError
from ikd.evaluation.metrics import bleu
from ikd.fileio import atomic_write_text
from ikd.recipe import Recipe, dump_recipe
from ikd.train import distributed as dist
from ikd.train.checkpoints import AVERAGE, BEST, LAST, CheckpointManager, average_checkpoints, epoch_checkpoints
from ikd.train.data import RunData, epoch_batches, load_run_data, make_loader
from ikd.train.metrics import MetricsLog
from ikd.train.step import FIELDS, Stepper, autocast, compute_losses

KD_FIELDS = ("irm", "iam", "image", "irm_feat", "iam_feat")

# Recipe sections that fix the model's parameters: a resumed run must not change them.
MODEL_SECTIONS = ("data", "model", "vision", "kd")


@dataclass
class TrainResult:
    out: Path
    epochs: int  # last finished epoch
    updates: int
    best_valid_loss: float
    stopped: str  # max_epochs | max_updates | patience
    valid: dict[str, float] = field(default_factory=dict)  # the last epoch's validation figures
    average: Path | None = None


def resolve_device(name: str | None, info: dist.DistInfo | None = None) -> torch.device:
    """cuda when available (or asked), else cpu; under torchrun each process takes cuda:LOCAL_RANK."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise IkdError(f"--device {name!r}: expected cpu or cuda")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise IkdError("--device cuda: no CUDA device is available")
        return torch.device("cuda", info.local_rank if info else 0)
    return torch.device("cpu")


def _pick_gpu(name: str, index: str, info: dist.DistInfo) -> torch.device:
    if not index.isdigit():
        raise IkdError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    if info.enabled:
        raise IkdError(f"--device {name}: under torchrun each process takes cuda:LOCAL_RANK; give --device cuda")
    if int(index) >= torch.cuda.device_count():
        raise IkdError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    torch.cuda.set_device(int(index))
    return torch.device("cuda", int(index))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors, lists and numbers (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
        kind = device if device not in (None, "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
        kind, _, index = kind.partition(":")  # cuda:N picks one GPU of several
        resolve_device(kind)  # validate before joining a process group
        self.info = dist.init_distributed(kind)
        self.device = resolve_device(kind, self.info)
        if index:
            self.device = _pick_gpu(device, index, self.info)
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
        seed_everything(recipe.train.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the CNNs see a handful of batch sizes, each tuned once
        self.data: RunData = load_run_data(recipe, self.recipe_source, report=self.report)
        from ikd.model import build_model

        model = build_model(
            recipe, len(self.data.vocab), pad=self.data.vocab.pad, load_teacher_weights=self.checkpoint is None
        )
        model.to(self.device)  # build_model already made the CNNs channels_last when the recipe asks
        self.raw_model = model
        wrapped: nn.Module = model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Without KD terms the student gets no gradient; otherwise every trainable parameter is used.
            unused = not model.text_only and not getattr(model, "uses_kd", True)
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
        self.best = math.inf
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
        self.raw_model.load_state_dict(ckpt["model"])
        state = ckpt["train_state"]
        self.stepper.optimizer.load_state_dict(state["optimizer"])
        self.stepper.schedule.load_state_dict(state["schedule"])
        self.stepper.schedule.apply(self.stepper.optimizer)  # the resumed recipe's lr settings
        if self.stepper.fp16 and state.get("scaler"):
            self.stepper.scaler.load_state_dict(state["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.best = float(state["best_loss"])
        self.bad_epochs = int(state["bad_epochs"])
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
        state = {k: v.detach().cpu() for k, v in self.raw_model.state_dict().items()}
        return {
            "model": state,
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
                "optimizer": self.stepper.optimizer.state_dict(),
                "schedule": self.stepper.schedule.state_dict(),
                "scaler": self.stepper.scaler.state_dict() if self.stepper.fp16 else {},
                "rng": rng_ranks[0],
                "rng_ranks": rng_ranks,
                "best_loss": self.best,
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
            losses = compute_losses(model, batch, recipe, self.data.vocab.pad, self.stepper.dtype)
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
        """Corpus BLEU of greedy (valid_beam 1) or beam search on the valid split: de-BPE'd, tokenised text,
        sacrebleu with tokenize=none (the paper's multi-bleu-style number)."""

        from ikd.data.text import remove_bpe
        from ikd.inference.search import beam_search, greedy_search

        model, split, vocab, t = self.raw_model, self.data.valid, self.data.vocab, self.recipe.train
        model.eval()
        hyps: dict[int, str] = {}
        batches = split.batches(max(t.max_tokens, 2048), t.batch_multiple, False, t.seed, 0)
        for idx in batches:
            from ikd.data.dataset import collate

            batch = collate(split.data, idx, vocab.pad, with_images=False).to(self.device)
            with autocast(self.device, self.stepper.dtype):
                if t.valid_beam <= 1:
                    outs = greedy_search(model, batch.src, max_len_a=1.5, max_len_b=10)
                else:
                    outs = [h[0].tokens for h in beam_search(model, batch.src, beam=t.valid_beam)]
            for line, ids in zip(batch.indices.tolist(), outs):
                hyps[int(line)] = remove_bpe(" ".join(vocab.decode(ids)))
        model.train()
        order = [hyps[int(i)] for i in split.keep]
        return bleu(order, self.data.valid_refs).score

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
            improved = valid["loss"] < self.best
            if improved:
                self.best, self.bad_epochs = valid["loss"], 0
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
                best_valid_loss=self.best,
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
        return TrainResult(self.out, self.epoch, self.stepper.updates, self.best, stopped, last_valid, average)


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
