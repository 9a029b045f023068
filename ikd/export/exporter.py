"""`ikd export`: checkpoint -> translation-only package, CTranslate2 model or transformers folder, checked before
it is published: a package or transformers folder must translate a few sentences exactly as the checkpoint does,
a CTranslate2 model must give ikd's translations of them the same token log-probabilities (its search is not
ikd's: see ikd.export.ctranslate2.translate_options)."""

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
CT2_TOLERANCE = 1e-3  # per token log-probability; float32 kernels agree to about 1e-6


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
    {"format", "out", "checked": sentences compared, "verified": how they were, and for packages and transformers
    folders "parameters": the weights' element count; "pushed": the Hub commit's URL}. transformers only:
    `scores` an `ikd evaluate --json` report for the model card's BLEU, `push_to_hub` a Hub repository to upload
    the folder to."""
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
    summary = {"format": fmt, "out": str(out), "checked": len(sources), "verified": "translated as by the checkpoint"}

    def build_ikd(tmp: Path) -> None:
        write_package(payload, tmp)
        exported = load_for_inference(tmp, "cpu", amp="off")
        got = _ikd_hypotheses(exported, sources)
        for i, (a, b) in enumerate(zip(expected, got)):
            if a.tokens != b.tokens or a.score != b.score:
                raise IkdError(f"{checkpoint}: the exported package translates check sentence {i + 1} differently")
        summary["parameters"] = sum(v.numel() for v in exported.model.state_dict().values())

    def build_ct2(tmp: Path) -> None:
        from ikd.export.ctranslate2 import require_ctranslate2, save_ctranslate2, token_log_probs

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
        # The conversion is checked on scores: CTranslate2's search differs from ikd's by design (translate_options),
        # so equal translations cannot be asked of a correct conversion, but equal token log-probabilities can.
        translator = ctranslate2.Translator(str(tmp), device="cpu", intra_threads=1)
        tokens = reference.vocab.tokens
        batch = [[tokens[i] for i in ids] for ids in sources]
        scored = translator.score_batch(batch, [[tokens[i] for i in h.tokens] for h in expected])
        for i, (ids, h, sc) in enumerate(zip(sources, expected, scored)):
            ours = token_log_probs(reference.model, ids, h.tokens, reference.vocab.eos)
            theirs = list(sc.log_probs)
            if len(theirs) != len(ours):
                raise IkdError(
                    f"{checkpoint}: the CTranslate2 model scores {len(theirs)} tokens of check sentence {i + 1}, ikd "
                    f"{len(ours)}: the conversion is wrong"
                )
            for j, (a, b) in enumerate(zip(theirs, ours)):
                if not abs(a - b) <= CT2_TOLERANCE:
                    raise IkdError(
                        f"{checkpoint}: the CTranslate2 model gives token {j + 1} of ikd's translation of check "
                        f"sentence {i + 1} the log-probability {a:.5f}, ikd {b:.5f}: the conversion is wrong"
                    )
        summary["verified"] = "translated by the checkpoint and scored token by token as by it"

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
