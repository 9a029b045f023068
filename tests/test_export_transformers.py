"""`ikd export --format transformers`: the folder loads with transformers' own classes (a plain M2M100 for a
text-only model, custom code for an IKD model), generate() translates as ikd does (greedy and beam 5), the
one-line tokenizer gives ikd's BPE ids, the logits are ikd's, the length-cap processor does what ikd does where
the cap binds, the model card says what it must, --push-to-hub calls the uploader (a fake one: no network in
tests), and bad input fails in one line."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from fixtures_train import one_thread, toy_recipe

from ikd.checkpoint import load_checkpoint, save_checkpoint
from ikd.cli import main
from ikd.errors import IkdError
from ikd.export.exporter import export_checkpoint
from ikd.fileio import read_lines
from ikd.inference.loading import load_for_inference
from ikd.inference.source import SourceEncoder, pad_batch
from ikd.inference.translator import SearchOptions, Translator

NO_HF = "transformers is not installed (pip install 'ikd[transformers]')"
# tiny models trained for a few short epochs on the toy set (a few seconds each on one core): they end their
# outputs well before any length cap
TINY = [
    "model.d_model=32",
    "model.heads=2",
    "model.ffn=64",
    "model.encoder_layers=2",
    "model.decoder_layers=2",
    "model.dropout=0.1",
    "train.max_tokens=256",
    "train.lr=0.01",
    "train.warmup_updates=10",
    "train.max_epochs=8",
    "train.valid_bleu=false",
    "train.keep_last=2",
    "train.average_last=2",
]
TEXT_RUN = [*TINY, "model.text_only=true", "kd.lambda_irm=0", "kd.lambda_iam=0"]
# the IKD architecture (generator, 2x2 = 4 pseudo-tokens from a ResNet-18's map at 64 px) trained on the text
# alone (no KD term, so no images read): what matters here is the encoder that the export must reproduce
IKD_RUN = [*TINY, "vision.backbone=resnet18", "vision.image_size=64", "kd.lambda_irm=0", "kd.lambda_iam=0"]
GLOSSARY = ["[U]", "acme"]
EXTRA = [  # raw text as a user types it: capitals, punctuation, quotes, the mask token, a glossary word
    "A small red square, left of a big blue circle.",
    "Two GREEN triangles   above a \u201cyellow\u201d star!",
    "a [U] square below a acme circle",
    "</s> is text here, and so is <pad>",
]


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers", reason=NO_HF)


def _train(toy_data: Path, tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    from ikd.train.trainer import train

    out = tmp_path_factory.mktemp(name) / "run"
    with one_thread():
        train(toy_recipe(toy_data, *overrides), out=out, device="cpu", progress=False, report=lambda _msg: None)
    return out / "checkpoint_average.pt"


@pytest.fixture(scope="module")
def text_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(toy_data, tmp_path_factory, "text_run", TEXT_RUN)


@pytest.fixture(scope="module")
def ikd_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The IKD run's checkpoint with a BPE glossary ("acme" never split, kept as it is)."""
    path = _train(toy_data, tmp_path_factory, "ikd_run", IKD_RUN)
    payload = load_checkpoint(path)
    payload["bpe_glossaries"] = GLOSSARY
    save_checkpoint(payload, path.with_name("glossary.pt"))
    return path.with_name("glossary.pt")


@pytest.fixture(scope="module")
def sentences(toy_data: Path) -> list[str]:
    return read_lines(toy_data / "text" / "test.en") + read_lines(toy_data / "text" / "val.en") + EXTRA


@pytest.fixture(scope="module")
def text_export(hf, text_checkpoint: Path, toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The text-only export, made from the command line with a BLEU report (ikd translate + ikd evaluate)."""
    tmp = tmp_path_factory.mktemp("text_export")
    hyp, scores, out = tmp / "hyp.de", tmp / "scores.json", tmp / "ikd-text-hf"
    source = toy_data / "text" / "test.en"
    assert main(["translate", "-c", str(text_checkpoint), "-i", str(source), "-o", str(hyp), "-q"]) == 0
    ref = str(toy_data / "text" / "test.de")
    assert main(["evaluate", "--hyp", str(hyp), "--ref", ref, "--metrics", "bleu", "--json", str(scores), "-q"]) == 0
    args = ["export", str(text_checkpoint), "-o", str(out), "--format", "transformers", "--scores", str(scores)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def ikd_export(hf, ikd_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ikd_export") / "ikd-mmt-hf"
    summary = export_checkpoint(ikd_checkpoint, out, "transformers")
    assert summary["checked"] == 8 and summary["parameters"] > 0
    return out


def load_hf(folder: Path, text_only: bool):
    """Tokenizer and model as a user loads them: one line each, transformers' own entry points."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, M2M100ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    if text_only:
        model = M2M100ForConditionalGeneration.from_pretrained(str(folder))
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), trust_remote_code=True)
    return tokenizer, model.eval()


def hf_translate(tokenizer, model, lines: list[str], beam: int, **kwargs) -> list[str]:
    out = []
    for i in range(0, len(lines), 16):
        batch = tokenizer(lines[i : i + 16], return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**batch, num_beams=beam, **kwargs)
        out += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return out


# ---------------------------------------------------------------------------------------------- the folder
def test_text_only_folder_is_a_plain_m2m100(text_export: Path) -> None:
    names = {p.name for p in text_export.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", "vocab.txt"} <= names
    assert {"bpe.codes", "bpe_vocab.json", "tokenization_ikd.py", "length_cap.py", "README.md", "ikd.json"} <= names
    assert "modeling_ikd_mmt.py" not in names
    config = json.loads((text_export / "config.json").read_text())
    assert config["model_type"] == "m2m_100" and "auto_map" not in config
    assert config["architectures"] == ["M2M100ForConditionalGeneration"]
    expected = dict(scale_embedding=True, activation_function="relu", pad_token_id=1, bos_token_id=0, eos_token_id=2)
    expected |= dict(decoder_start_token_id=2, tie_word_embeddings=True, d_model=32, encoder_layers=2)
    expected |= dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    config.setdefault("tie_word_embeddings", True)  # transformers 4.x leaves a default value out
    assert {k: config.get(k) for k in expected} == expected
    generation = json.loads((text_export / "generation_config.json").read_text())
    assert {k: generation[k] for k in ("num_beams", "length_penalty", "early_stopping", "min_new_tokens")} == {
        "num_beams": 5,
        "length_penalty": 1.0,
        "early_stopping": True,
        "min_new_tokens": 1,
    }
    assert generation["suppress_tokens"] == [0, 1] and generation["max_new_tokens"] == 201  # cap 200, then </s>
    assert generation["decoder_start_token_id"] == 2 and not generation.get("do_sample")
    tokenizer_config = json.loads((text_export / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0] == "tokenization_ikd.IkdTokenizer"
    assert (text_export / "model.safetensors").stat().st_mode & 0o044  # readable beyond its owner
    info = json.loads((text_export / "ikd.json").read_text())
    assert info["format"] == "ikd-transformers-1" and (info["src"], info["tgt"]) == ("en", "de")


def test_ikd_folder_is_custom_code(ikd_export: Path, ikd_checkpoint: Path) -> None:
    config = json.loads((ikd_export / "config.json").read_text())
    assert config["model_type"] == "ikd_mmt"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_ikd_mmt.IkdMmtConfig",
        "AutoModelForSeq2SeqLM": "modeling_ikd_mmt.IkdMmtForConditionalGeneration",
    }
    assert config["feature_shape"] == load_checkpoint(ikd_checkpoint)["feature_shape"] == [512, 2, 2]
    assert {"modeling_ikd_mmt.py", "configuration_ikd_mmt.py"} <= {p.name for p in ikd_export.iterdir()}
    for name in ("modeling_ikd_mmt.py", "configuration_ikd_mmt.py", "tokenization_ikd.py", "length_cap.py"):
        code = (ikd_export / name).read_text()
        assert "import ikd" not in code and "from ikd" not in code  # works where ikd is not installed


# ---------------------------------------------------------------------------------------------- translations
@pytest.mark.parametrize("beam", [1, 5])
@pytest.mark.parametrize("kind", ["text", "ikd"])
def test_generate_equals_ikd(kind: str, beam: int, request, sentences: list[str]) -> None:
    checkpoint = request.getfixturevalue(f"{kind}_checkpoint")
    folder = request.getfixturevalue(f"{kind}_export")
    ours = Translator.from_checkpoint(checkpoint, "cpu", beam=beam).translate(sentences)
    tokenizer, model = load_hf(folder, kind == "text")
    theirs = hf_translate(tokenizer, model, sentences, beam)  # generation_config.json, beam as asked
    assert theirs == ours
    assert len(set(ours)) > 20 and max(len(t.split()) for t in ours) < 30  # varied, ended by the model


def test_generate_equals_ikd_translate_command(text_export: Path, text_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.en"
    source.write_text("".join(line + "\n" for line in EXTRA))
    out = tmp_path / "out.de"
    assert main(["translate", "-c", str(text_checkpoint), "-i", str(source), "-o", str(out), "-q"]) == 0
    tokenizer, model = load_hf(text_export, True)
    assert hf_translate(tokenizer, model, EXTRA, 5) == read_lines(out)


@pytest.mark.parametrize("kind", ["text", "ikd"])
def test_logits_equal_ikd(kind: str, request, sentences: list[str]) -> None:
    loaded = load_for_inference(request.getfixturevalue(f"{kind}_checkpoint"), "cpu")
    _, model = load_hf(request.getfixturevalue(f"{kind}_export"), kind == "text")
    encoder = SourceEncoder(loaded)
    src = pad_batch([encoder.ids(s, "test") for s in sentences[:12]], 1)
    tgt_in = torch.randint(4, len(loaded.vocab), (12, 9), generator=torch.Generator().manual_seed(0))
    tgt_in[:, 0] = 2  # decoding starts from </s>
    with torch.no_grad():
        ours = loaded.model(src, tgt_in)[0].log_softmax(-1)
        theirs = model(input_ids=src, attention_mask=src.ne(1).long(), decoder_input_ids=tgt_in).logits.log_softmax(-1)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- tokenizer
def test_one_line_tokenizer_gives_ikd_ids(ikd_export: Path, ikd_checkpoint: Path, sentences: list[str]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ikd_export), trust_remote_code=True)
    loaded = load_for_inference(ikd_checkpoint, "cpu")
    encoder = SourceEncoder(loaded)
    assert tokenizer(sentences)["input_ids"] == [encoder.ids(s, "test") for s in sentences]
    pieces = tokenizer.tokenize("A [U] Square below an ACME acme circle")
    assert pieces[:3] == ["a", "[U]", "square"] and pieces.count("acme") == 2  # glossary words never split
    ids = tokenizer(sentences[0])["input_ids"]
    assert ids[-1] == 2 and 0 not in ids  # </s> at the end, never <s>
    hyp = [2, *ids[:-1], 2, 7, 7]  # as generate() returns it: the decoder's start, the tokens, </s>, padding
    assert tokenizer.decode(hyp, skip_special_tokens=True) == sentences[0]
    lines = [*sentences[:5], *EXTRA, "</s> <pad> squ@@ are"]
    for mode in ("tokenized", "bpe"):  # `ikd translate --tokenized` and `--bpe`
        other = AutoTokenizer.from_pretrained(str(ikd_export), trust_remote_code=True, input_mode=mode)
        assert other(lines)["input_ids"] == [SourceEncoder(loaded, mode).ids(s, "test") for s in lines]
    bpe = AutoTokenizer.from_pretrained(str(ikd_export), trust_remote_code=True, input_mode="bpe")
    assert bpe("</s> <pad>")["input_ids"] == [3, 3, 2]  # text that spells a control symbol is unknown text


def test_tokenizer_on_multi30k_raw_text(text_export: Path, text_checkpoint: Path, shared_data: Path) -> None:
    """Real raw sentences (capitals, quotes, hyphens, words the toy BPE splits into characters)."""
    from transformers import AutoTokenizer

    raw = shared_data / "multi30k" / "raw" / "test_2016_flickr.en.gz"
    if not raw.is_file():
        pytest.skip(f"needs {raw}")
    with gzip.open(raw, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    tokenizer = AutoTokenizer.from_pretrained(str(text_export), trust_remote_code=True)
    encoder = SourceEncoder(load_for_inference(text_checkpoint, "cpu"))
    assert tokenizer(lines)["input_ids"] == [encoder.ids(s, "test") for s in lines]


# ---------------------------------------------------------------------------------------------- length cap
def test_length_caps_by_hand(hf) -> None:
    from ikd.export.hf_code.length_cap import IkdLengthCap, ikd_generate_kwargs, length_caps

    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    assert length_caps(mask, 0.5, 1, 1024).tolist() == [3, 2]  # int(0.5 * 5 + 1), int(0.5 * 2 + 1)
    assert length_caps(mask, 0.0, 200, 100).tolist() == [99, 99]  # at most max_positions - 1
    assert length_caps(mask, 0.0, 0, 1024).tolist() == [1, 1]  # at least one token
    assert ikd_generate_kwargs(mask, 0.5, 1)["max_new_tokens"] == 4
    cap = IkdLengthCap(torch.tensor([1, 3]), eos_token_id=2)
    scores = torch.log_softmax(torch.randn(4, 6), -1)  # 2 sentences x 2 beams, 6 tokens
    ids = torch.tensor([[2, 5]] * 4)  # the decoder's start and one generated token
    out = cap(ids, scores.clone())
    assert torch.isinf(out[:2]).sum() == 10 and torch.equal(out[:2, 2], scores[:2, 2])  # sentence 1 capped
    assert torch.equal(out[2:], scores[2:])  # sentence 2 (cap 3) untouched


@pytest.mark.parametrize("kind", ["text", "ikd"])
def test_length_cap_processor_equals_ikd_where_the_cap_binds(kind: str, request, sentences: list[str]) -> None:
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    checkpoint, folder = request.getfixturevalue(f"{kind}_checkpoint"), request.getfixturevalue(f"{kind}_export")
    tokenizer, model = load_hf(folder, kind == "text")
    cap_kwargs = get_class_from_dynamic_module("length_cap.ikd_generate_kwargs", str(folder))
    lines = sentences[:16]
    batch = tokenizer(lines, return_tensors="pt", padding=True)
    for a, b in [(0.0, 3), (0.25, 1)]:  # every output longer than its cap (a per-sentence cap in the second)
        translator = Translator(load_for_inference(checkpoint, "cpu"), SearchOptions(5, max_len_a=a, max_len_b=b))
        ours = [h[0] for h in translator.search([translator.source_ids(line, 1) for line in lines])]
        with torch.no_grad():
            kwargs = cap_kwargs(batch["attention_mask"], a, b, 1024)
            out = model.generate(**batch, **kwargs, output_scores=True, return_dict_in_generate=True)
            plain = model.generate(**batch, max_new_tokens=kwargs["max_new_tokens"])
        caps = kwargs["logits_processor"][0].caps.tolist()
        assert [len(h.tokens) for h in ours] == caps  # the cap binds on every sentence
        assert [generated(row) for row in out.sequences.tolist()] == [h.tokens for h in ours]
        torch.testing.assert_close(out.sequences_scores, torch.tensor([h.score for h in ours]), atol=1e-5, rtol=0)
        # without the processor generate() runs on past the cap, where ikd ends there with </s>
        assert [generated(row) for row in plain.tolist()] != [h.tokens for h in ours]


def generated(row: list[int]) -> list[int]:
    """A row of generate()'s output -> the translation's ids: no decoder start, nothing from </s> on."""
    row = row[1:]
    return row[: row.index(2)] if 2 in row else [t for t in row if t != 1]


# ---------------------------------------------------------------------------------------------- model card
def test_model_card(text_export: Path, ikd_export: Path, text_checkpoint: Path) -> None:
    from ikd.export.model_card import model_card

    card = (text_export / "README.md").read_text()
    front = card.split("---")[1]
    assert "language: [en, de]" in front and "license: mit" in front and "pipeline_tag: translation" in front
    assert "ikd's synthetic toy world" in card
    assert "nrefs:1|case:lc|eff:no|tok:none|smooth:none" in card and "test.de (40 sentences)" in card
    assert "M2M100ForConditionalGeneration.from_pretrained(REPO)" in card and "trust_remote_code=True)" in card
    assert "a·src_len+b" in card and "length_cap" in card
    assert "encoder_layers: 2" in card and "text_only: true" in card  # the recipe
    ikd_card = (ikd_export / "README.md").read_text()
    assert "custom_code" in ikd_card and "512x2x2 feature map" in ikd_card
    assert "AutoModelForSeq2SeqLM.from_pretrained(REPO, trust_remote_code=True)" in ikd_card
    assert "BLEU: not measured at export" in ikd_card
    payload = load_checkpoint(text_checkpoint)
    payload["recipe"]["data"]["dir"] = "/data/multi30k-prepared"
    multi30k = model_card(payload, 1000, True)
    assert "license: other" in multi30k and "license_name: multi30k-non-commercial" in multi30k
    assert "non-commercial research and educational purposes" in multi30k


# ---------------------------------------------------------------------------------------------- hub
class FakeApi:
    calls: list[tuple] = []
    fail: str | None = None

    def create_repo(self, repo_id, repo_type="model", exist_ok=False):
        self.calls.append(("create_repo", repo_id, repo_type, exist_ok))

    def upload_folder(self, repo_id, folder_path, repo_type="model", commit_message=""):
        if self.fail:
            raise RuntimeError(self.fail)
        self.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return f"https://hub.example/{repo_id}/commit/abc"


def test_push_to_hub_uploads_the_checked_folder(hf, text_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub", reason=NO_HF)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(FakeApi, "calls", [])
    out = tmp_path / "hub-export"
    summary = export_checkpoint(text_checkpoint, out, "transformers", push_to_hub="someone/ikd-toy-en-de")
    assert summary["pushed"] == "https://hub.example/someone/ikd-toy-en-de/commit/abc"
    assert FakeApi.calls[0] == ("create_repo", "someone/ikd-toy-en-de", "model", True)
    assert FakeApi.calls[1][:2] == ("upload_folder", "someone/ikd-toy-en-de")
    assert FakeApi.calls[1][2] == sorted(p.name for p in out.iterdir()) and "ikd.json" in FakeApi.calls[1][2]
    monkeypatch.setattr(FakeApi, "fail", "401 Unauthorized\nmore detail")
    failed = re.escape(f"the upload failed (401 Unauthorized); the export is in {out}") + "$"
    with pytest.raises(IkdError, match=failed):
        export_checkpoint(text_checkpoint, out, "transformers", push_to_hub="someone/ikd-toy-en-de")
    assert (out / "ikd.json").is_file()
    monkeypatch.setattr(FakeApi, "calls", [])
    with pytest.raises(IkdError, match="--push-to-hub 'not a/valid id': not a Hub repository id"):
        export_checkpoint(text_checkpoint, tmp_path / "never", "transformers", push_to_hub="not a/valid id")
    assert not (tmp_path / "never").exists() and FakeApi.calls == []


# ---------------------------------------------------------------------------------------------- errors
def test_errors_in_one_line(text_checkpoint: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    missing = tmp_path / "missing.pt"
    assert main(["export", str(missing), "-o", str(tmp_path / "a"), "--format", "transformers"]) == 1
    err = capsys.readouterr().err.strip()
    assert "missing.pt" in err and len(err.splitlines()) == 1
    with pytest.raises(IkdError, match="--scores and --push-to-hub go with --format transformers"):
        export_checkpoint(text_checkpoint, tmp_path / "b", "ikd", push_to_hub="someone/x")
    with monkeypatch.context() as m:  # as where the extra is not installed
        for name in ("transformers", "huggingface_hub", "huggingface_hub.utils"):
            m.setitem(sys.modules, name, None)
        assert main(["export", str(text_checkpoint), "-o", str(tmp_path / "c"), "--format", "transformers"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.endswith("--format transformers needs the transformers package: pip install 'ikd[transformers]'")
        assert len(err.splitlines()) == 1
        from ikd.export.hub import check_repo_id

        with pytest.raises(IkdError, match="--push-to-hub needs the huggingface_hub package: pip install 'ikd"):
            check_repo_id("someone/x")
    pytest.importorskip("transformers", reason=NO_HF)
    bad_scores = tmp_path / "scores.json"
    bad_scores.write_text('{"systems": []}')
    with pytest.raises(IkdError, match="scores.json: no BLEU score with its signature"):
        export_checkpoint(text_checkpoint, tmp_path / "d", "transformers", scores=bad_scores)
    payload = load_checkpoint(text_checkpoint)
    payload["recipe"]["model"]["norm"] = "post"
    save_checkpoint(payload, tmp_path / "post.pt")
    with pytest.raises(IkdError, match="post.pt: a post-norm model .* cannot be exported to transformers"):
        export_checkpoint(tmp_path / "post.pt", tmp_path / "e", "transformers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.pt", "scores.json"]  # nothing half-written
