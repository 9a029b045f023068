"""One run of an experiment, step by step, each step skipped when its output is there: the system's data (a
degraded copy and its BPE), training (`ikd train`'s code, resumed when interrupted), averaging, translation of
the evaluation splits, scores, the retrieval probe."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ikd.data.prepared import PreparedData
from ikd.errors import IkdError
from ikd.experiment.layout import (
    FAILED,
    IDENTITY,
    TRAINED,
    RunState,
    check_identity,
    last_epoch,
    make_identity,
    read_json,
    write_json,
)
from ikd.experiment.spec import Experiment, System
from ikd.fileio import atomic_write_lines, read_lines

Report = Callable[[str], None]
TEXT_METRICS = ("bleu", "meteor", "chrf")


# ---------------------------------------------------------------------------------------------- names
def identity(exp: Experiment, system: str, seed: int) -> dict[str, Any]:
    s = exp.systems[system]
    return make_identity(exp.path, system, seed, s.recipe_path, s.overrides, exp.run_recipe(system, seed).to_dict())


def checkpoint_name(system: System) -> str:
    """The checkpoint a run is evaluated with: an experiment-chosen average, the training's average of the
    last N epochs, or (without averaging) the last checkpoint."""
    a = system.spec.average
    if a is not None:
        return f"checkpoint_avg{a.last}" + (f"_upto{a.upper_bound}" if a.upper_bound is not None else "") + ".pt"
    return "checkpoint_average.pt" if system.recipe.train.average_last > 0 else "checkpoint_last.pt"


def search_settings(exp: Experiment) -> dict[str, Any]:
    ev = exp.spec.evaluate
    return {"beam": ev.beam, "lenpen": ev.lenpen, "max_len_a": ev.max_len_a, "max_len_b": ev.max_len_b}


def text_metrics(exp: Experiment) -> list[str]:
    return [m for m in exp.metric_columns() if m in TEXT_METRICS]


def wants_retrieval(exp: Experiment, system: System) -> bool:
    return any(m.startswith("r@") for m in exp.metric_columns()) and not system.recipe.model.text_only


def hyp_path(run_dir: Path, split: str, tgt: str) -> Path:
    return run_dir / "eval" / f"{split}.{tgt}"


def score_path(run_dir: Path, split: str) -> Path:
    return run_dir / "eval" / f"{split}.json"


def retrieval_path(run_dir: Path, split: str) -> Path:
    return run_dir / "eval" / f"{split}.retrieval.json"


def scores_current(exp: Experiment, system: System, run_dir: Path, split: str) -> dict[str, Any] | None:
    """The cached scores of a split when they were made with the current checkpoint choice, data and search
    settings and hold every text metric asked; else None."""
    scores = read_json(score_path(run_dir, split))
    if not isinstance(scores, dict):
        return None
    if scores.get("search") != search_settings(exp) or scores.get("checkpoint") != checkpoint_name(system):
        return None
    if scores.get("data") != str(system.eval_data) or not hyp_path(run_dir, split, system.recipe.data.tgt).is_file():
        return None
    if any(m not in scores.get("scores", {}) for m in text_metrics(exp)):
        return None
    return scores


def retrieval_current(exp: Experiment, system: System, run_dir: Path, split: str) -> dict[str, Any] | None:
    result = read_json(retrieval_path(run_dir, split))
    if not isinstance(result, dict) or result.get("checkpoint") != checkpoint_name(system):
        return None
    return result if result.get("data") == str(system.eval_data) else None


def run_state(exp: Experiment, system: str, seed: int) -> RunState:
    """missing, started (epoch k), trained, done or failed, from the files of the run folder."""
    s = exp.systems[system]
    run_dir = exp.run_dir(system, seed)
    epoch, bleu = last_epoch(run_dir)
    detail = f"valid BLEU {bleu:.2f}" if bleu is not None else ""
    failed = run_dir / FAILED
    if failed.is_file():
        return RunState("failed", epoch, failed.read_text(encoding="utf-8").strip().splitlines()[0][:200])
    if not (run_dir / TRAINED).is_file():
        started = (run_dir / "checkpoint_last.pt").is_file() or (run_dir / IDENTITY).is_file()
        return RunState("started" if started else "missing", epoch, detail)
    pending = [split for split in exp.spec.evaluate.splits if not _split_done(exp, s, run_dir, split)]
    if pending:
        return RunState("trained", epoch, f"{len(pending)} of {len(exp.spec.evaluate.splits)} splits to evaluate")
    return RunState("done", epoch, detail)


def _split_done(exp: Experiment, system: System, run_dir: Path, split: str) -> bool:
    if text_metrics(exp) and scores_current(exp, system, run_dir, split) is None:
        return False
    return not (wants_retrieval(exp, system) and retrieval_current(exp, system, run_dir, split) is None)


# ---------------------------------------------------------------------------------------------- data
def check_data(exp: Experiment, system: System) -> None:
    """Before anything runs: the prepared (or to-be-degraded) data and the evaluation splits are there."""
    where = f"{exp.path}: systems.{system.name}"
    pair = system.pair
    src = system.recipe.data.src
    if system.spec.degrade is not None:
        source = Path(system.spec.degrade.source)
        if not (source / "manifest.json").is_file():
            raise IkdError(f"{where}.degrade.source: {source}/manifest.json not found (ikd prepare first)")
        return
    vocab = system.data_dir / pair / "vocab.txt"
    if not vocab.is_file():
        raise IkdError(f"{where}: {vocab} not found: prepare the data first (ikd prepare, ikd bpe --pair {pair})")
    for split in exp.spec.evaluate.splits:
        source = system.eval_data / pair / f"{split}.bpe.{src}"
        if not source.is_file():
            raise IkdError(f"{exp.path}: evaluate.splits: {source} not found (split '{split}' not prepared)")


def degrade_settings(system: System) -> dict[str, Any]:
    d = system.spec.degrade
    assert d is not None
    if d.kind == "color":
        return {"kind": "color", "words": d.words or "builtin"}
    return {"kind": "entity", "method": "positions", "positions": list(d.positions)}


def prepare_data(system: System, report: Report) -> None:
    """Make a system's degraded data folder (once) and its BPE (ikd bpe; a no-op when up to date)."""
    d = system.spec.degrade
    if d is None:
        return
    from ikd.data.bpe import DEFAULT_GLOSSARIES, learn_and_apply
    from ikd.data.manifest import read_manifest_or_none

    out, source = system.data_dir, Path(d.source)
    lang = d.lang or system.recipe.data.src
    wanted = degrade_settings(system)
    manifest = read_manifest_or_none(out)
    if manifest is not None:
        entries = manifest.get("degrade") or []
        entry = entries[-1] if isinstance(entries, list) and entries else {}
        have = {k: entry.get(k) for k in wanted}
        if have != wanted or entry.get("mask") != d.mask or entry.get("lang") != lang:
            raise IkdError(
                f"{out}: a data folder made by another degrade step ({have}) than systems.{system.name} asks "
                f"({wanted}); remove it or name another data: folder"
            )
    else:
        report(f"degrading {source} -> {out} ({d.kind})")
        _degrade(system, source, out, lang)
    glossaries = tuple(dict.fromkeys([*DEFAULT_GLOSSARIES, d.mask]))
    learn_and_apply(out, system.recipe.data.src, system.recipe.data.tgt, merges=d.merges, glossaries=glossaries)


def _degrade(system: System, source: Path, out: Path, lang: str) -> None:
    from ikd.probes import degrade as dg

    d = system.spec.degrade
    assert d is not None
    dg.check_mask_token(d.mask)
    if d.kind == "color":
        words = dg.load_word_list(d.words) if d.words else dg.BUILTIN_COLOURS
        masker = dg.ColourMasker(words)
        settings = {**degrade_settings(system), "word_list": sorted(words)}
        dg.degrade_folder(source, out, lang, lambda split, info, lines: masker, d.mask, settings)
        return
    rows = dg.read_positions(d.positions)
    name = " + ".join(d.positions)
    offsets = dg.split_offsets(dg.read_manifest(source), len(rows), name)

    def masker_for(split, info, lines):
        return dg.PositionMasker(rows, offsets[split], name, dg.kept_line_numbers(info), f"split '{split}'")

    settings = {**degrade_settings(system), "offsets": offsets}
    dg.degrade_folder(source, out, lang, masker_for, d.mask, settings)


# ---------------------------------------------------------------------------------------------- one run
def execute_run(
    exp: Experiment, system_name: str, seed: int, report: Report, device: str | None = None, progress: bool = False
) -> None:
    """Train, average and evaluate one (system, seed), skipping what is done; an error is kept in failed.txt."""
    system = exp.systems[system_name]
    run_dir = exp.run_dir(system_name, seed)
    wanted = identity(exp, system_name, seed)
    check_identity(run_dir, wanted)
    with run_lock(run_dir, report):
        _execute(exp, system, seed, run_dir, wanted, report, device, progress)


@contextlib.contextmanager
def run_lock(run_dir: Path, report: Report | None = None) -> Iterator[None]:
    """Hold RUN/.lock (ikd.train.lock) while working on a run: a second process (another `run`, a Slurm job
    resubmitted too early) is refused instead of writing the same files; the training inside holds it too."""
    from ikd.train.lock import RunLock

    with RunLock(run_dir) as lock:
        if lock.taken_over is not None and report is not None:
            report(f"{lock.path}: took over the lock of a process that no longer runs ({lock.taken_over.describe()})")
        yield


def _execute(exp, system: System, seed: int, run_dir: Path, wanted, report: Report, device, progress) -> None:
    try:
        prepare_data(system, report)
        write_json(run_dir / IDENTITY, wanted)
        if not (run_dir / TRAINED).is_file():
            _train(exp, system, seed, run_dir, report, device, progress)
        _average(system, run_dir, report)
        for split in exp.spec.evaluate.splits:
            _evaluate_split(exp, system, run_dir, split, report, device)
    except BaseException as e:
        if isinstance(e, IkdError | RuntimeError | ValueError | OSError):
            from ikd.fileio import atomic_write_text

            with contextlib.suppress(OSError):  # a full disk: the error itself is what matters
                atomic_write_text(run_dir / FAILED, f"{type(e).__name__}: {e}\n")
        raise
    (run_dir / FAILED).unlink(missing_ok=True)


def _train(exp: Experiment, system: System, seed: int, run_dir: Path, report: Report, device, progress) -> None:
    from ikd.train.checkpoints import epoch_checkpoints
    from ikd.train.trainer import train

    recipe = exp.run_recipe(system.name, seed)
    resumed = (run_dir / "checkpoint_last.pt").is_file() or bool(epoch_checkpoints(run_dir))
    report(f"{'resuming' if resumed else 'training'} ({system.recipe_path})")
    result = train(
        recipe,
        out=run_dir,
        device=device,
        resume=resumed,
        recipe_source=str(system.recipe_path),
        progress=progress,
        report=report,
    )
    summary = {
        "epochs": result.epochs,
        "updates": result.updates,
        "stopped": result.stopped,
        "best_metric": result.best_metric,
        "best": result.best,
        "valid": result.valid,
        "average": None if result.average is None else result.average.name,
    }
    write_json(run_dir / TRAINED, summary)
    report(f"trained: {result.epochs} epochs, {result.updates} updates (stopped: {result.stopped})")


def _average(system: System, run_dir: Path, report: Report) -> None:
    a = system.spec.average
    target = run_dir / checkpoint_name(system)
    if a is None or target.is_file():
        if not target.is_file():
            raise IkdError(f"{target}: not found (the training wrote no such checkpoint)")
        return
    from ikd.train.checkpoints import average_checkpoints

    average_checkpoints(run_dir, a.last, target, a.upper_bound)
    report(f"averaged into {target.name}")


def _evaluate_split(exp: Experiment, system: System, run_dir: Path, split: str, report: Report, device) -> None:
    wants_text = bool(text_metrics(exp)) and scores_current(exp, system, run_dir, split) is None
    wants_probe = wants_retrieval(exp, system) and retrieval_current(exp, system, run_dir, split) is None
    checkpoint = run_dir / checkpoint_name(system)
    if wants_text:
        hyps = _translate(exp, system, checkpoint, run_dir, split, report, device)
        _score(exp, system, run_dir, split, hyps, report)
    if wants_probe:
        from ikd.probes.retrieve import retrieve

        result = retrieve(checkpoint, system.eval_data, split, device=device or "auto").to_dict()
        result.update(checkpoint=checkpoint_name(system), data=str(system.eval_data))
        write_json(retrieval_path(run_dir, split), result)
        report(f"{split}: retrieval R@1 {result['recall']['R@1']:.2f}%")


def _translate(exp, system: System, checkpoint: Path, run_dir: Path, split: str, report: Report, device) -> list[str]:
    """The split's hypotheses: cached when made with the same checkpoint choice and search, else translated."""
    target = hyp_path(run_dir, split, system.recipe.data.tgt)
    cached = read_json(score_path(run_dir, split))
    if (
        target.is_file()
        and isinstance(cached, dict)
        and cached.get("search") == search_settings(exp)
        and cached.get("checkpoint") == checkpoint_name(system)
        and cached.get("data") == str(system.eval_data)
    ):
        return read_lines(target, allow_empty=True)
    from ikd.data.vocab import Vocabulary
    from ikd.inference.loading import load_for_inference
    from ikd.inference.translator import SearchOptions, Translator

    loaded = load_for_inference(checkpoint, device or "auto")
    pair_dir = system.eval_data / f"{loaded.src}-{loaded.tgt}"
    vocab_file = pair_dir / "vocab.txt"
    if vocab_file.is_file() and Vocabulary.load(vocab_file).fingerprint() != loaded.vocab.fingerprint():
        raise IkdError(f"{checkpoint}: its vocabulary differs from {vocab_file} (other BPE codes)")
    options = SearchOptions(nbest=1, **search_settings(exp))
    translator = Translator(loaded, options, input_mode="bpe", batch_size=exp.spec.evaluate.batch_size)
    lines = read_lines(pair_dir / f"{split}.bpe.{loaded.src}", allow_empty=True)
    hyps = [r[0][0] if r else "" for r in translator.translate_lines(lines)]
    atomic_write_lines(target, hyps)
    (score_path(run_dir, split)).unlink(missing_ok=True)  # scores of older hypotheses
    report(f"{split}: translated {len(lines)} sentences in {translator.stats.seconds:.1f} s")
    return hyps


def _score(exp: Experiment, system: System, run_dir: Path, split: str, hyps: list[str], report: Report) -> None:
    from ikd.evaluation.metrics import bleu, check_lengths, chrf

    ev = exp.spec.evaluate
    tgt = system.recipe.data.tgt
    ref_path = PreparedData.at(system.eval_data).text(split, tgt)
    refs = read_lines(ref_path, allow_empty=True)
    check_lengths(hyps, refs, str(hyp_path(run_dir, split, tgt)), str(ref_path))
    old = read_json(score_path(run_dir, split)) or {}
    scores: dict[str, float] = dict(old.get("scores", {})) if isinstance(old, dict) else {}
    meta: dict[str, Any] = dict(old.get("meta", {})) if isinstance(old, dict) else {}
    for metric in text_metrics(exp):
        if metric in scores:
            continue
        if metric == "bleu":
            b = bleu(hyps, refs)
            scores["bleu"], meta["bleu_signature"] = b.score, b.signature
        elif metric == "chrf":
            c = chrf(hyps, refs)
            scores["chrf"], meta["chrf_signature"] = c.score, c.signature
        else:
            from ikd.evaluation.meteor import meteor

            m = meteor(hyps, refs, tgt, ev.meteor_jar, ev.require_meteor)
            scores["meteor"], meta["meteor_method"], meta["meteor_official"] = m.score, m.method, m.official
    payload = {
        "split": split,
        "checkpoint": checkpoint_name(system),
        "data": str(system.eval_data),
        "references": str(ref_path),
        "sentences": len(refs),
        "search": search_settings(exp),
        "scores": scores,
        "meta": meta,
    }
    write_json(score_path(run_dir, split), payload)
    report(f"{split}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
