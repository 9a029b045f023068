"""`ikd export`: checkpoint -> translation-only package, CTranslate2 model or transformers folder, checked before
it is published: the export must translate a few sentences exactly as the checkpoint does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ikd.checkpoint import load_checkpoint
from ikd.errors import IkdError
from ikd.export.package import publish, write_package
from ikd.fileio import atomic_write_text

FORMATS = ("ikd", "ctranslate2", "transformers")
CT2_INFO = "ikd.json"
CHECK_BEAM = 5
CHECK_MAX_LEN = 50


def sample_sources(n_tokens: int, count: int = 8, seed: int = 0) -> list[list[int]]:
    """A few deterministic source id lists (EOS-terminated) drawn from the vocabulary's ordinary tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        length = 3 + (i * 5) % 11
        ids = torch.randint(4, max(5, n_tokens), (length,), generator=g).tolist()
        out.append(ids + [2])
    return out


def _ikd_hypotheses(loaded, sources: list[list[int]]):
    from ikd.inference.search import beam_search

    vocab = loaded.vocab
    src = torch.full((len(sources), max(map(len, sources))), vocab.pad, dtype=torch.long)
    for row, ids in enumerate(sources):
        src[row, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        found = beam_search(
            loaded.model, src.to(loaded.device), CHECK_BEAM, 1.0, 0.0, CHECK_MAX_LEN,
            pad=vocab.pad, bos=vocab.bos, eos=vocab.eos, max_positions=loaded.max_positions,
        )
    return [h[0] for h in found]


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str = "ikd",
    *,
    scores: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
) -> dict:
    """Export `checkpoint` into the folder `out` (replacing an earlier export there). Returns a summary
    {"format", "out", "checked": sentences compared, and for packages and transformers folders "parameters": the
    weights' element count; "pushed": the Hub commit's URL}. transformers only: `scores` an `ikd evaluate --json`
    report for the model card's BLEU, `push_to_hub` a Hub repository to upload the folder to."""
    from ikd.inference.loading import load_for_inference

    if fmt not in FORMATS:
        raise IkdError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt != "transformers" and (scores is not None or push_to_hub):
        raise IkdError("--scores and --push-to-hub go with --format transformers")
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not out.is_dir():
        raise IkdError(f"{out}: is a file; --out names a folder to create")
    if out.resolve() == checkpoint.resolve():
        raise IkdError(f"{out}: --out is the checkpoint itself")
    payload = load_checkpoint(checkpoint)
    if fmt == "ctranslate2":
        from ikd.export.ctranslate2 import require_ctranslate2, unsupported

        require_ctranslate2()
        problem = unsupported(payload.get("recipe"))
        if problem:
            raise IkdError(f"{checkpoint}: {problem}")
    if fmt == "transformers":
        _check_transformers(payload, checkpoint, scores, push_to_hub)
    reference = load_for_inference(checkpoint, "cpu", amp="off")
    sources = sample_sources(len(reference.vocab))
    expected = _ikd_hypotheses(reference, sources)
    summary = {"format": fmt, "out": str(out), "checked": len(sources)}

    def build_ikd(tmp: Path) -> None:
        write_package(payload, tmp)
        exported = load_for_inference(tmp, "cpu", amp="off")
        got = _ikd_hypotheses(exported, sources)
        for i, (a, b) in enumerate(zip(expected, got)):
            if a.tokens != b.tokens or a.score != b.score:
                raise IkdError(f"{checkpoint}: the exported package translates check sentence {i + 1} differently")
        summary["parameters"] = sum(v.numel() for v in exported.model.state_dict().values())

    def build_ct2(tmp: Path) -> None:
        from ikd.export.ctranslate2 import require_ctranslate2, save_ctranslate2, translate_options

        ctranslate2 = require_ctranslate2()
        save_ctranslate2(reference.model, reference.vocab.tokens, tmp, source=str(checkpoint))
        codes = payload.get("bpe_codes") or ""
        if codes.strip():
            atomic_write_text(tmp / "bpe.codes", codes)
        info = {
            "format": "ikd-ctranslate2-1",
            "src": payload["src"],
            "tgt": payload["tgt"],
            "bpe_glossaries": list(payload.get("bpe_glossaries", [])),
            "bpe_vocab": payload.get("bpe_vocab") or {},
            "usage": "source tokens end with </s>; decoding starts from </s>; translate_batch options as "
            "ikd.export.ctranslate2.translate_options",
        }
        atomic_write_text(tmp / CT2_INFO, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        translator = ctranslate2.Translator(str(tmp), device="cpu", intra_threads=1)
        tokens = reference.vocab.tokens
        batch = [[tokens[i] for i in ids] for ids in sources]
        results = translator.translate_batch(batch, **translate_options(CHECK_BEAM, 1.0, CHECK_MAX_LEN))
        hyps = [[tokens[i] for i in h.tokens] for h in expected]
        scored = translator.score_batch(batch, hyps)
        for i, (h, res, sc) in enumerate(zip(expected, results, scored)):
            ours = sum(sc.log_probs) / (len(h.tokens) + 1)
            if abs(ours - h.score) > 1e-3 * max(1.0, abs(h.score)):
                raise IkdError(
                    f"{checkpoint}: the CTranslate2 model scores check sentence {i + 1} at {ours:.5f}, ikd at "
                    f"{h.score:.5f}: the conversion is wrong"
                )
            # at the length cap ikd forces </s> and CTranslate2 does not: only sentences ended by the model count
            ct2_ids = [reference.vocab.index[t] for t in res.hypotheses[0]]
            if len(h.tokens) < CHECK_MAX_LEN and ct2_ids != h.tokens:
                raise IkdError(f"{checkpoint}: CTranslate2 translates check sentence {i + 1} differently from ikd")

    def build_transformers(tmp: Path) -> None:
        from ikd.export.transformers import write_export

        check = (sources, expected, CHECK_BEAM, CHECK_MAX_LEN)
        summary["parameters"] = write_export(payload, reference, tmp, check, scores, source=str(checkpoint))

    publish({"ikd": build_ikd, "ctranslate2": build_ct2, "transformers": build_transformers}[fmt], out)
    if push_to_hub:
        from ikd.export.hub import push_folder

        summary["pushed"] = push_folder(out, push_to_hub)
    return summary


def _check_transformers(payload: dict, checkpoint: Path, scores, push_to_hub: str | None) -> None:
    """What --format transformers needs, checked before any work: the package, a pre-norm model, a readable
    --scores report, a valid --push-to-hub id."""
    from ikd.export.model_card import bleu_lines
    from ikd.export.transformers import require_transformers, unsupported

    require_transformers()
    problem = unsupported(payload.get("recipe"))
    if problem:
        raise IkdError(f"{checkpoint}: {problem}")
    if scores is not None:
        bleu_lines(Path(scores))
    if push_to_hub:
        from ikd.export.hub import check_repo_id

        check_repo_id(push_to_hub)
