"""`ikd export`: translation-only packages (round trip, teacher/student dropped, same translations as the
checkpoint, errors) and CTranslate2 conversion (token log-probabilities equal to ikd's; its search differs from
ikd's only where translate_options says; a wrong conversion refused, a correct one never)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from fixtures_train import one_thread, toy_recipe

from ikd.checkpoint import load_checkpoint, save_checkpoint
from ikd.cli import main
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.export.exporter import export_checkpoint
from ikd.export.package import PACKAGE_FORMAT, publish, translator_state_dict
from ikd.fileio import read_lines
from ikd.inference.loading import load_for_inference
from ikd.inference.translator import SearchOptions, Translator
from ikd.recipe import Recipe

NO_CT2 = "ctranslate2 is not installed (pip install 'ikd[ctranslate2]')"
# text-only Transformer, tiny, a few short epochs on the toy set (about 10 s on one core): it ends its outputs
TEXT_RUN = [
    "model.text_only=true",
    "model.d_model=32",
    "model.heads=2",
    "model.ffn=64",
    "model.encoder_layers=2",
    "model.decoder_layers=2",
    "model.dropout=0.1",
    "kd.lambda_irm=0",
    "kd.lambda_iam=0",
    "train.max_tokens=256",
    "train.lr=0.01",
    "train.warmup_updates=10",
    "train.max_epochs=8",
    "train.valid_bleu=false",
    "train.keep_last=2",
    "train.average_last=2",
]


@pytest.fixture(scope="module")
def text_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ikd.train.trainer import train

    out = tmp_path_factory.mktemp("text_run") / "run"
    with one_thread():
        train(toy_recipe(toy_data, *TEXT_RUN), out=out, device="cpu", progress=False, report=lambda _msg: None)
    return out / "checkpoint_average.pt"


@pytest.fixture(scope="module")
def ikd_random_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained multimodal (IKD) model with a small random ResNet-18 teacher at 32 px."""
    from ikd.train.objective import build_training_model

    pair = toy_data / "en-de"
    vocab = Vocabulary.load(pair / "vocab.txt")
    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 16, 2, 32
    r.model.encoder_layers = r.model.decoder_layers = 1
    r.vision.backbone, r.vision.image_size = "resnet18", 32
    torch.manual_seed(0)
    model = build_training_model(r, len(vocab), vocab.pad, load_teacher_weights=False)
    path = tmp_path_factory.mktemp("ikd_ckpt") / "ikd.pt"
    payload = {**model.checkpoint_states(), "recipe": r.to_dict(), "vocab": vocab.tokens, "src": "en", "tgt": "de"}
    payload |= {"bpe_codes": (pair / "bpe.codes").read_text(), "bpe_glossaries": ["[U]", "acme"]}
    save_checkpoint({**payload, "epoch": 0, "updates": 0}, path)
    return path


def translate(path: Path, lines: list[str], beam: int = 5) -> list[str]:
    translator = Translator(load_for_inference(path, "cpu"), SearchOptions(beam=beam), input_mode="tokenized")
    return [r[0][0] for r in translator.translate_lines(lines)]


def test_translator_state_dict_drops_teacher_and_student() -> None:
    t = torch.zeros(1)
    state = {"embed.embed.weight": t, "teacher.conv1.weight": t, "student.up.0.weight": t, "generator.x": t}
    payload = {"model": state}
    assert sorted(translator_state_dict(payload)) == ["embed.embed.weight", "generator.x"]
    with pytest.raises(IkdError, match="'model'"):
        translator_state_dict({})


def test_package_of_an_ikd_checkpoint(ikd_random_checkpoint: Path, toy_data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "pkg"
    summary = export_checkpoint(ikd_random_checkpoint, out)
    assert summary["checked"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["bpe.codes", "config.json", "model.safetensors", "vocab.txt"]
    keys = load_file(str(out / "model.safetensors")).keys()
    assert any(k.startswith("generator.") for k in keys)
    assert not any(k.startswith(("teacher.", "student.")) for k in keys)
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "ikd-package-1" and (config["src"], config["tgt"]) == ("en", "de")
    assert config["bpe_glossaries"] == ["[U]", "acme"]
    assert read_lines(out / "vocab.txt") == load_checkpoint(ikd_random_checkpoint)["vocab"]
    loaded = load_for_inference(out, "cpu")
    assert loaded.bpe is not None and loaded.bpe.glossaries == ("[U]", "acme")
    lines = read_lines(toy_data / "text" / "test.en")[:6]
    options = SearchOptions(beam=3, max_len_a=1.0, max_len_b=2)  # untrained: keep outputs short
    a = Translator(load_for_inference(ikd_random_checkpoint, "cpu"), options, input_mode="tokenized")
    b = Translator(loaded, options, input_mode="tokenized")
    assert a.translate_lines(lines) == b.translate_lines(lines)
    export_checkpoint(ikd_random_checkpoint, out)  # an earlier export is replaced
    assert sorted(p.name for p in out.parent.iterdir()) == ["pkg"]  # no temporary folders left


def test_package_translates_as_the_checkpoint_from_the_cli(text_checkpoint, toy_data, tmp_path, capsys) -> None:
    out = tmp_path / "pkg"
    assert main(["export", str(text_checkpoint), "--out", str(out)]) == 0
    assert "check sentences" in capsys.readouterr().err
    lines = read_lines(toy_data / "text" / "test.en")[:10]
    src = tmp_path / "in.txt"
    src.write_text("".join(x + "\n" for x in lines))
    outputs = []
    for model in (text_checkpoint, out):
        dest = tmp_path / f"out_{Path(model).name}.txt"
        assert main(["translate", "-c", str(model), "-i", str(src), "-o", str(dest), "--tokenized", "-q"]) == 0
        outputs.append(dest.read_text())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 10


def test_export_errors(ikd_random_checkpoint: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert main(["export", str(bad), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "bad.pt" in err and "not a checkpoint" in err and len(err.strip().splitlines()) == 1
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(IkdError, match="file.txt: is a file"):
        export_checkpoint(ikd_random_checkpoint, a_file)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(IkdError, match="busy: is a folder with other files"):
        export_checkpoint(ikd_random_checkpoint, busy)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(IkdError, match="foreign: is a folder with other files"):
        export_checkpoint(ikd_random_checkpoint, foreign)
    with pytest.raises(IkdError, match="--format 'onnx'"):
        export_checkpoint(ikd_random_checkpoint, tmp_path / "y", "onnx")
    not_pkg = tmp_path / "empty_dir"
    not_pkg.mkdir()
    with pytest.raises(IkdError, match="empty_dir: is a folder, not a checkpoint file nor an ikd package"):
        load_for_inference(not_pkg, "cpu")
    pytest.importorskip("ctranslate2", reason=NO_CT2)
    with pytest.raises(IkdError, match="IKD \\(multimodal\\) model cannot be converted to CTranslate2"):
        export_checkpoint(ikd_random_checkpoint, tmp_path / "ct2", "ctranslate2")
    assert not (tmp_path / "ct2").exists()


def first_step_eos(model, ids: list[int]) -> float:
    """The model's probability of </s> as the first target token for the source `ids`."""
    with torch.no_grad():
        logits = model.decode(torch.tensor([[2]]), model.encode(torch.tensor([ids])))[0, 0]
    return float(torch.softmax(logits.float(), dim=-1)[2])


def _ct2_against_ikd(checkpoint: Path, ct2_dir: Path, lines: list[str], beam: int = 5) -> dict:
    """Translate BPE'd `lines` with ikd (n-best = beam, cap 200) and with the CTranslate2 export (translate_options),
    and check what the two searches must agree on. CTranslate2 forbids </s> at the first step by renormalising
    (ikd masks it after log_softmax): every hypothesis of a sentence gets the same c = -log(1 - p0(</s>)) added to
    its summed log-probability, so both searches keep the same beams and finish the same hypotheses, and only the
    final ranking differs: CTranslate2's 1-best is ikd's hypothesis h with the best (sum(log p) + c) / (len + 1),
    scored so. Returns {"identical": 1-best equal, "n", "shift": c / (len + 1) on the identical lines}."""
    import ctranslate2

    from ikd.export.ctranslate2 import token_log_probs, translate_options
    from ikd.inference.search import beam_search

    loaded = load_for_inference(checkpoint, "cpu", amp="off")
    vocab, model = loaded.vocab, loaded.model
    sources = [vocab.encode(line.split()) for line in lines]
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", intra_threads=1)
    batch = [[vocab.tokens[i] for i in s] for s in sources]
    results = translator.translate_batch(batch, **translate_options(beam))
    identical, shifts = 0, []
    for ids, tokens, result in zip(sources, batch, results):
        with torch.no_grad():
            hyps = beam_search(model, torch.tensor([ids]), beam, 1.0, 0.0, 200, nbest=beam)[0]
        assert max(len(h.tokens) for h in hyps) < 200  # the model ends its outputs: no length cap involved
        c = -math.log1p(-first_step_eos(model, ids))
        renormalised = [h.score + c / (len(h.tokens) + 1) for h in hyps]
        got = [vocab.index[t] for t in result.hypotheses[0]]
        assert got in [h.tokens for h in hyps]
        h = hyps[[h.tokens for h in hyps].index(got)]
        assert result.scores[0] == pytest.approx(h.score + c / (len(got) + 1), abs=1e-4)
        assert result.scores[0] >= max(renormalised) - 1e-5
        scored = translator.score_batch([tokens], [result.hypotheses[0]])[0]
        assert scored.log_probs == pytest.approx(token_log_probs(model, ids, got), abs=1e-4)  # no renormalisation
        if got == hyps[0].tokens:
            identical += 1
            shifts.append(result.scores[0] - hyps[0].score)
    return {"identical": identical, "n": len(sources), "shift": shifts}


def test_ctranslate2_export_and_where_its_search_differs(text_checkpoint: Path, toy_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("ctranslate2", reason=NO_CT2)
    out = tmp_path / "ct2"
    assert export_checkpoint(text_checkpoint, out, "ctranslate2")["checked"] == 8
    export_checkpoint(text_checkpoint, out, "ctranslate2")  # an earlier export is replaced
    assert {"model.bin", "config.json", "shared_vocabulary.json", "ikd.json", "bpe.codes"} <= {
        p.name for p in out.iterdir()
    }
    lines = read_lines(toy_data / "en-de" / "test.bpe.en")
    found = _ct2_against_ikd(text_checkpoint, out, lines)
    assert found["identical"] >= 0.9 * found["n"]  # a low first-step p(</s>): the shift seldom reorders
    assert max(found["shift"]) < 0.01


def _eos_first(checkpoint: Path, out: Path, factor: float = 2.0) -> Path:
    """The checkpoint with the </s> embedding scaled: </s> is then the decoder's input at the first step and its
    state there points along </s>, which gets most of the probability (p0 about 0.9 for the text_checkpoint)."""
    payload = load_checkpoint(checkpoint)
    state = dict(payload["model"])
    weight = state["embed.embed.weight"].clone()
    weight[2] *= factor
    state["embed.embed.weight"] = weight
    save_checkpoint({**payload, "model": state}, out)
    return out


def test_ctranslate2_export_of_a_model_that_wants_to_stop_at_once(text_checkpoint, toy_data, tmp_path) -> None:
    pytest.importorskip("ctranslate2", reason=NO_CT2)
    ckpt = _eos_first(text_checkpoint, tmp_path / "eos.pt")
    loaded = load_for_inference(ckpt, "cpu", amp="off")
    lines = read_lines(toy_data / "en-de" / "test.bpe.en")
    assert min(first_step_eos(loaded.model, loaded.vocab.encode(line.split())) for line in lines) > 0.5
    out = tmp_path / "ct2"
    summary = export_checkpoint(ckpt, out, "ctranslate2")  # a correct conversion is published
    assert summary["checked"] == 8 and "scored token by token" in summary["verified"]
    found = _ct2_against_ikd(ckpt, out, lines)
    assert min(found["shift"]) > 0.05  # the first step's renormalisation shows in the translate scores...
    assert found["identical"] < found["n"]  # ...and reorders some: equal translations cannot be asked


@pytest.mark.parametrize("fault", ["weight", "mapping"])
def test_ctranslate2_export_refuses_a_wrong_conversion(
    fault: str, text_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    pytest.importorskip("ctranslate2", reason=NO_CT2)
    import ikd.export.ctranslate2 as conversion

    if fault == "weight":  # one element of one decoder layer's FFN output bias
        real_ffn, done = conversion._ffn, []

        def corrupt(spec, layer) -> None:
            real_ffn(spec, layer)
            if hasattr(layer, "cross_attn") and not done:
                spec.linear_1.bias[0] += 0.5
                done.append(True)

        monkeypatch.setattr(conversion, "_ffn", corrupt)
    else:  # the LayerNorm epsilon mapped wrong
        monkeypatch.setattr(conversion, "LAYER_NORM_EPS", 0.1)
    out = tmp_path / "ct2"
    assert main(["export", str(text_checkpoint), "--format", "ctranslate2", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the conversion is wrong" in err and "check sentence" in err
    assert str(text_checkpoint) in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_ctranslate2_token_log_probabilities_equal_ikd(norm: str, tmp_path: Path) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2", reason=NO_CT2)
    from ikd.export.ctranslate2 import save_ctranslate2
    from ikd.model import build_translator

    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 32, 4, 64
    r.model.encoder_layers, r.model.decoder_layers = 2, 3
    r.model.norm, r.model.text_only, r.model.dropout = norm, True, 0.0
    torch.manual_seed(3)
    model = build_translator(r.model, 40, 1).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms and biases
            p.add_(0.1 * torch.randn_like(p))
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(36)]
    save_ctranslate2(model, tokens, tmp_path / "ct2")
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu", intra_threads=1)
    src, tgt = [5, 9, 17, 33, 2], [12, 7, 7, 30, 4, 21]  # a target longer than the source: positions count
    scored = translator.score_batch([[tokens[i] for i in src]], [[tokens[i] for i in tgt]])[0].log_probs
    with torch.no_grad():
        logits = model.decode(torch.tensor([[2, *tgt]]), model.encode(torch.tensor([src])))
    ours = torch.log_softmax(logits[0], dim=-1).gather(1, torch.tensor(tgt + [2])[:, None]).squeeze(1)
    assert scored == pytest.approx(ours.tolist(), abs=1e-4)


def _package_builder(version: str):
    def build(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps({"format": PACKAGE_FORMAT}))
        (tmp / "weights").write_text(version)

    return build


def test_a_failed_rename_keeps_the_earlier_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pkg"
    publish(_package_builder("one"), out)
    real_replace = os.replace

    def failing(src, dst, *args, **kwargs):
        if Path(src).name.endswith(".tmp"):  # the new export: the disk is full, the target vanished...
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(IkdError, match=r"pkg: could not move the new export into place \(.*No space left.*\); the "
                       r"earlier export is kept$"):  # fmt: skip
        publish(_package_builder("two"), out)
    assert (out / "weights").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # nothing left beside it

    def restore_fails_too(src, dst, *args, **kwargs):
        if Path(src).name.endswith((".tmp", ".old")):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", restore_fails_too)
    with pytest.raises(IkdError, match=r"the earlier export is kept in (\S+)$") as caught:
        publish(_package_builder("three"), out)
    kept = Path(str(caught.value).rsplit(" kept in ", 1)[1])
    assert (kept / "weights").read_text() == "one" and not out.exists()


def test_export_over_an_earlier_export_fails_in_one_line_and_keeps_it(
    ikd_random_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "pkg"
    export_checkpoint(ikd_random_checkpoint, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def failing(src, dst, *args, **kwargs):
        if Path(src).name.endswith(".tmp") and Path(dst) == out:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    assert main(["export", str(ikd_random_checkpoint), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "pkg: could not move the new export into place" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    load_for_inference(out, "cpu")  # still a working package
