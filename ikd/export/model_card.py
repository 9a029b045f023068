"""README.md of a transformers export: a Hugging Face model card (metadata, languages, data and its licence,
recipe, BLEU with its sacrebleu signature, usage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ikd.errors import IkdError

MULTI30K = (
    "Multi30K (Elliott et al., 2016; 2017), task 1: image descriptions from Flickr30K with their translations. "
    "Multi30K is provided for non-commercial research and educational purposes, and so are these weights."
)
TOY = "ikd's synthetic toy world (`ikd prepare toy`): captions of generated pictures of coloured shapes."
UNKNOWN = "The data the recipe's data.dir named ({dir}): fill in its name and terms of use."
BLEU_PLACEHOLDER = (
    "not measured at export: score a test set with `ikd evaluate ... --json scores.json` and export again "
    "with `--scores scores.json`"
)


def data_kind(recipe: dict[str, Any]) -> str | None:
    """"multi30k", "toy" or None: from the prepared folder's manifest when it is still there, else its name."""
    folder = Path(str(recipe.get("data", {}).get("dir", "")))
    try:
        kind = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind in ("multi30k", "toy"):
        return kind
    name = folder.as_posix().lower()
    return "multi30k" if "multi30k" in name else "toy" if "toy" in name else None


def bleu_lines(report_path: Path | None) -> list[str]:
    """Markdown lines with the BLEU scores of an `ikd evaluate --json` report (its splits, or its systems)."""
    if report_path is None:
        return [f"BLEU: {BLEU_PLACEHOLDER}."]
    try:
        report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IkdError(f"--scores {report_path}: not a readable JSON report ({e})") from None
    parts = report.get("splits", {"": report}) if isinstance(report, dict) else None
    lines = []
    for split, part in (parts or {}).items():
        try:
            score = part["summary"]["bleu"]["mean"]
            signature = part["meta"]["bleu_signature"]
            refs, sentences = part["meta"]["references"], part["meta"]["sentences"]
        except (KeyError, TypeError):
            continue
        where = f"{split} ({Path(refs).name}" if split else f"{Path(refs).name} ("
        where += f", {sentences} sentences)" if split else f"{sentences} sentences)"
        lines.append(f"- BLEU {score:.2f} on {where}; sacrebleu signature `{signature}`")
    if not lines:
        raise IkdError(f"--scores {report_path}: no BLEU score with its signature (an `ikd evaluate --json` file?)")
    return ["BLEU (lowercased, tokenised text, as the paper scores):", "", *lines]


def model_card(payload: dict[str, Any], parameters: int, text_only: bool, scores: Path | None = None) -> str:
    """The README.md text of an export of checkpoint `payload` (its recipe, languages, epoch and updates)."""
    recipe, src, tgt = payload["recipe"], payload["src"], payload["tgt"]
    kind = data_kind(recipe)
    if kind == "multi30k":
        data, licence = MULTI30K, ["license: other", "license_name: multi30k-non-commercial"]
    elif kind == "toy":
        data, licence = TOY, ["license: mit"]
    else:
        data, licence = UNKNOWN.format(dir=recipe.get("data", {}).get("dir", "?")), ["license: other"]
    m = recipe["model"]
    what = "a text-only Transformer" if text_only else "an IKD-MMT translator (image-free multimodal MT)"
    tags = ["translation", "ikd"] + ([] if text_only else ["multimodal-machine-translation", "custom_code"])
    front = ["---", f"language: [{src}, {tgt}]", *licence, "library_name: transformers", "pipeline_tag: translation"]
    front += ["tags:", *[f"- {t}" for t in tags], "---", ""]
    arch = (
        f"{m['encoder_layers']}+{m['decoder_layers']} layers, width {m['d_model']}, {m['heads']} heads, "
        f"feed-forward {m['ffn']}, {parameters:,} parameters"
    )
    if text_only:
        loader = "M2M100ForConditionalGeneration.from_pretrained(REPO)"
        body_model = (
            f"Architecture: {arch}. A plain `M2M100ForConditionalGeneration`: transformers loads it without "
            "custom code; only the tokenizer is custom code."
        )
        imports = "from transformers import AutoTokenizer, M2M100ForConditionalGeneration"
    else:
        feature = payload.get("feature_shape") or ["?", "?", "?"]
        loader = "AutoModelForSeq2SeqLM.from_pretrained(REPO, trust_remote_code=True)"
        body_model = (
            f"Architecture: {arch}. The encoder generates a {feature[0]}x{feature[1]}x{feature[2]} feature map "
            "from the sentence alone (no image is read at translation time) and appends its positions as "
            "pseudo-tokens to the text; the decoder is M2M100's. Custom code: modeling_ikd_mmt.py, "
            "configuration_ikd_mmt.py (load with `trust_remote_code=True`)."
        )
        imports = "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer"
    usage = f"""```python
{imports}
from transformers.dynamic_module_utils import get_class_from_dynamic_module

REPO = "path/or/hub-id"
tokenizer = AutoTokenizer.from_pretrained(REPO, trust_remote_code=True)
model = {loader}
batch = tokenizer(["A man rides a horse."], return_tensors="pt", padding=True)
out = model.generate(**batch)  # beam 5 as `ikd translate` (generation_config.json); num_beams=1: greedy
print(tokenizer.batch_decode(out, skip_special_tokens=True))

# ikd's exact per-sentence cap (--max-len-a A --max-len-b B; default 0 and 200):
ikd_generate_kwargs = get_class_from_dynamic_module("length_cap.ikd_generate_kwargs", REPO)
out = model.generate(**batch, **ikd_generate_kwargs(batch["attention_mask"], 0.0, 200, {m['max_positions']}))
```"""
    recipe_yaml = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip()
    sections = [
        f"# ikd {src}→{tgt}: {what}",
        "",
        f"Translates {src} into {tgt}, trained with ikd "
        f"(epoch {payload.get('epoch')}, {payload.get('updates')} updates). The tokenizer takes raw sentences and "
        "does what ikd does: lowercase, normalise punctuation, Moses-tokenise, apply the BPE codes (bpe.codes, "
        "vocab.txt, bpe_vocab.json) with the glossary in tokenizer_config.json; it needs `pip install sacremoses "
        "subword-nmt`. Output is lowercased, tokenised text, as the training data; `detokenize=True` in "
        "`from_pretrained` Moses-detokenises it.",
        "",
        "## Model",
        "",
        body_model,
        "",
        "## Data",
        "",
        data,
        "",
        "## Results",
        "",
        *bleu_lines(scores),
        "",
        "## Usage",
        "",
        usage,
        "",
        "`generate()` with generation_config.json gives ikd's translations: the same search (beam 5, length "
        "penalty 1, a sentence done once 5 hypotheses have finished, at least one token, no <s> or <pad>). Where "
        "a sentence reaches the length cap, transformers stops without </s>, while ikd forces </s> with its own "
        "log-probability; the `length_cap.py` processor above does as ikd, per sentence (fairseq's cap "
        "a·src_len+b has no transformers setting: generation_config.json holds ikd's default, a = 0, b = 200).",
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe_yaml,
        "```",
        "",
    ]
    return "\n".join(front + sections)
