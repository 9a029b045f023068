"""The composed IKD model: the translator (pseudo-tokens, multimodal encoder) and the Distiller (KD losses),
gradients (tiny dims, CPU)."""

from __future__ import annotations

import warnings

import pytest
import torch

from ikd.errors import IkdError
from ikd.model import PseudoTokens, TranslationModel, masked_mean
from ikd.model.vision import IMAGENET_MEAN, IMAGENET_STD
from ikd.recipe import Recipe
from ikd.train.objective import TrainingModel, build_training_model

PAD = 1
EOS = 2
V = 40


def recipe(backbone: str = "resnet18", size: int = 16, norm: str = "pre", **model: object) -> Recipe:
    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 16, 2, 32
    r.model.encoder_layers = r.model.decoder_layers = 2
    r.model.norm = norm
    for k, v in model.items():
        setattr(r.model, k, v)
    r.vision.backbone = backbone
    r.vision.image_size = size
    r.train.channels_last = False
    return r


def batch(b: int = 3, t: int = 7, u: int = 6, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (b, t), generator=g)
    for i, n in enumerate([t, t - 2, 2, t - 1][:b]):
        src[i, n - 1] = EOS
        src[i, n:] = PAD
    tgt_in = torch.randint(4, V, (b, u), generator=g)
    tgt_in[:, 0] = EOS
    tgt_out = torch.randint(4, V, (b, u), generator=g)
    images = torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)
    return src, tgt_in, tgt_out, images


def build_model(r: Recipe, vocab: int, load_teacher_weights: bool = True) -> TrainingModel:
    return build_training_model(r, vocab, PAD, load_teacher_weights)


def translator(r: Recipe, vocab: int = V) -> TranslationModel:
    return build_model(r, vocab).translator


@pytest.mark.parametrize(
    ("backbone", "out_shape"),
    [("resnet18", (512, 2, 2)), ("resnet50", (2048, 2, 2))],
)
def test_shapes_full_text_only_and_without_text_queries(backbone: str, out_shape: tuple[int, int, int]) -> None:
    src, tgt_in, _, images = batch(b=2, size=64)
    b, t = src.shape
    p = out_shape[1] * out_shape[2]

    model = build_model(recipe(backbone, 64), V)
    full, distiller = model.translator, model.distiller
    assert full.feature_shape == out_shape == distiller.feature_shape and full.num_pseudo_tokens == p
    assert not any(isinstance(m, torch.nn.Conv2d) for m in full.modules())  # the translator holds no CNN
    logits, kd = model(src, tgt_in, images)
    assert logits.shape == (b, 6, V)
    terms = (kd.irm, kd.iam, kd.image, kd.irm_feat, kd.iam_feat)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms)
    enc = full.encode(src, return_attention=True)
    assert enc.states.shape == (b, t + p, 16)
    assert enc.m.shape == (b, *out_shape)
    assert torch.equal(enc.pad_mask, torch.cat([src.eq(PAD), torch.zeros(b, p, dtype=torch.bool)], 1))
    assert enc.attention.shape == (b, 2, t + p, t)
    assert distiller.imagine(full.generate_m(src)).shape == (b, 3, 64, 64)
    assert distiller.teacher_features(images).shape == (b, *out_shape)

    r = recipe(backbone, 64, text_queries=False)
    no_text = TranslationModel(r.model, V, PAD, out_shape)
    logits, kd = TrainingModel(no_text, distiller, r)(src, tgt_in, images)  # no second CNN build
    assert logits.shape == (b, 6, V) and kd is not None
    enc = no_text.encode(src, return_attention=True)
    assert enc.states.shape == (b, p, 16) and not enc.pad_mask.any()
    assert enc.attention.shape == (b, 2, p, t)

    text = build_model(recipe(backbone, 64, text_only=True), V)
    logits, kd = text(src, tgt_in, images)
    assert logits.shape == (b, 6, V) and kd is None
    assert text.distiller is None and text.translator.generator is None and text.translator.feature_shape is None
    assert text.translator.encode(src).states.shape == (b, t, 16)


def test_no_kd_terms_without_images_or_weights() -> None:
    src, tgt_in, _, images = batch()
    model = build_model(recipe(), V)
    assert model(src, tgt_in)[1] is None
    r = recipe()
    r.kd.lambda_irm = r.kd.lambda_iam = 0.0
    no_kd = build_model(r, V)
    logits, kd = no_kd(src, tgt_in, images)
    assert kd is None and logits.shape == (3, 6, V)
    assert no_kd.translator.encode(src).m is not None  # generator and pseudo-tokens still in use


def test_pseudo_token_layouts() -> None:
    m = torch.arange(6.0).view(1, 2, 1, 3)  # C=2, H=1, W=3: channel 0 = 0,1,2; channel 1 = 3,4,5
    spatial = PseudoTokens(2, 4, 0.0, "spatial")
    raw = PseudoTokens(2, 4, 0.0, "raw")
    assert spatial.tokens(m).tolist() == [[[0, 3], [1, 4], [2, 5]]]  # token p = the C-vector at position p
    assert raw.tokens(m).tolist() == [[[0, 1], [2, 3], [4, 5]]]  # the authors' view: consecutive elements
    raw.load_state_dict(spatial.state_dict())
    assert torch.allclose(spatial(m), spatial.tokens(m) @ spatial.proj.weight.T + spatial.proj.bias)
    assert not torch.allclose(spatial(m), raw(m))
    with pytest.raises(IkdError, match="token_layout"):
        PseudoTokens(2, 4, 0.0, "diagonal")


def test_masked_mean_counts_real_tokens_only() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert masked_mean(x, torch.tensor([[False, False, True]])).tolist() == [[2.0, 3.0]]


@pytest.mark.parametrize("kv_source", ["embedding", "states"])
@pytest.mark.parametrize("text_queries", [True, False])
def test_pad_keys_are_masked_in_the_multimodal_encoder(kv_source: str, text_queries: bool) -> None:
    model = translator(recipe(kv_source=kv_source, text_queries=text_queries)).eval()
    src, tgt_in, _, _ = batch()
    with torch.no_grad():
        enc = model.encode(src)
        logits = model.decode(tgt_in, enc)
        model.embed.embed.weight[PAD].normal_()
        enc2 = model.encode(src)
        longer = torch.cat([src, torch.full((3, 3), PAD)], dim=1)
        enc3 = model.encode(longer)
    real = ~enc.pad_mask
    assert torch.allclose(enc.states[real], enc2.states[real], atol=1e-5)
    other = torch.arange(V) != PAD
    assert torch.allclose(logits[..., other], model.decode(tgt_in, enc2)[..., other], atol=1e-5)
    assert torch.allclose(enc2.m, enc3.m, atol=1e-5)
    if text_queries:  # the extra pads sit between the text and the pseudo-tokens
        p = enc.states.size(1) - 7
        keep = torch.tensor([True] * 7 + [False] * 3 + [True] * p)
        assert torch.allclose(enc2.states[real], enc3.states[:, keep][real], atol=1e-5)
    else:
        assert torch.allclose(enc2.states, enc3.states, atol=1e-5)


def test_kv_sources_differ_and_pseudo_tokens_attend_to_text() -> None:
    src, _, _, _ = batch()
    a = translator(recipe(kv_source="embedding")).eval()
    b = translator(recipe(kv_source="states")).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        ea, eb = a.encode(src, return_attention=True), b.encode(src, return_attention=True)
    assert not torch.allclose(ea.states, eb.states)
    assert torch.allclose(ea.attention, eb.attention)  # layer 1: the embedding IS the current text state
    assert torch.all(ea.attention[2, :, :, 2:] == 0)  # sentence 2 has two real tokens
    assert torch.allclose(ea.attention.sum(-1), torch.ones(3, 2, 7 + 1))


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_incremental_decoding_equals_full_decoding(norm: str) -> None:
    model = translator(recipe(norm=norm)).eval()
    src, tgt_in, _, _ = batch()
    with torch.no_grad():
        enc = model.encode(src)
        full = model.decode(tgt_in, enc)
        state = model.new_decoder_state()
        steps = torch.cat([model.decode(tgt_in[:, i : i + 1], enc, state) for i in range(6)], dim=1)
    assert torch.allclose(steps, full, atol=1e-5)


def test_normalise_images() -> None:
    model = build_model(recipe(size=4), V).distiller
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    x = model.normalise_images(images)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert x.dtype == torch.float32
    assert torch.allclose(x, (images.float() / 255 - mean) / std, atol=1e-5)
    with pytest.raises(IkdError, match="uint8"):
        model.normalise_images(images.float())


def test_images_of_another_size_are_resized_once_with_a_warning() -> None:
    r = recipe(size=32)
    r.train.channels_last = True
    model = build_model(r, V).distiller
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    with pytest.warns(UserWarning, match="48x48.*image_size is 32"):
        x = model.normalise_images(images)
    assert x.shape == (2, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.normalise_images(images)


def test_teacher_is_frozen_and_stays_in_eval_mode() -> None:
    model = build_model(recipe(), V)
    model.train()
    teacher, student = model.distiller.teacher, model.distiller.student
    assert not teacher.training and student.training and model.translator.generator.training
    assert not any(p.requires_grad for p in teacher.parameters())


def test_gradients_reach_generator_and_student_but_not_the_teacher() -> None:
    both = build_model(recipe(), V)
    model, student, teacher = both.translator, both.distiller.student, both.distiller.teacher
    src, tgt_in, tgt_out, images = batch()
    logits, kd = both(src, tgt_in, images)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())

    def grads(module: torch.nn.Module) -> float:
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    ce.backward(retain_graph=True)
    assert grads(model.generator) > 0 and grads(model.pseudo_tokens) > 0
    assert grads(student) == 0  # the student is not on the translation path
    both.zero_grad()
    (kd.irm + kd.iam).backward(retain_graph=True)
    assert grads(model.generator) > 0 and grads(student) > 0 and grads(model.embed) > 0
    assert grads(model.decoder) == 0
    assert all(p.grad is None for p in teacher.parameters())
    both.zero_grad()
    kd.iam.backward(retain_graph=True)  # IaM-KD reaches the student through the teacher's view of I_s
    assert grads(student) > 0


def test_a_few_steps_reduce_ce_and_kd_losses() -> None:
    torch.manual_seed(0)
    model = build_model(recipe(), V)
    src, tgt_in, tgt_out, images = batch(b=4)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(20):
        logits, kd = model(src, tgt_in, images)
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())
        opt.zero_grad()
        (ce + kd.irm + kd.iam).backward()
        opt.step()
        history.append((ce.item(), kd.irm.item(), kd.iam.item()))
    first, last = history[0], history[-1]
    assert last[0] < 0.8 * first[0]
    assert last[1] < first[1] and last[2] < first[2]


def test_translator_and_distiller_states_are_apart_and_self_contained() -> None:
    r = recipe()
    model = build_model(r, V).eval()
    states = model.checkpoint_states()
    prefixes = {k.split(".")[0] for k in states["model"]}
    assert prefixes == {"embed", "encoder", "decoder", "generator", "pseudo_tokens"}
    assert {k.split(".")[0] for k in states["distiller"]} == {"teacher", "student"}
    assert states["feature_shape"] == [512, 1, 1]
    torch.manual_seed(123)
    other = build_model(r, V, load_teacher_weights=False).eval()
    other.translator.load_state_dict(states["model"])
    other.distiller.load_state_dict(states["distiller"])
    src, tgt_in, _, images = batch()
    with torch.no_grad():
        assert torch.equal(model(src, tgt_in)[0], other(src, tgt_in)[0])
        assert torch.equal(model.distiller.teacher_features(images), other.distiller.teacher_features(images))


@pytest.mark.parametrize("text_feature", ["embedding", "dropout"])
def test_global_text_feature_in_train_and_eval_mode(text_feature: str) -> None:
    """Eq. 5 has no dropout: t taken before it is the same in both modes, so the generator's BatchNorm sees
    at test time the statistics it was trained with. Taken after it (the authors' placement), its spread in
    training is larger than at test time."""
    r = recipe(text_feature=text_feature, dropout=0.3)
    model = translator(r)
    src = torch.randint(4, V, (64, 30), generator=torch.Generator().manual_seed(1))
    src[:, -1] = EOS
    with torch.no_grad():
        model.train()
        t_train = model.global_text_feature(src)
        model.eval()
        t_eval = model.global_text_feature(src)
        undropped = masked_mean(model.embed.scaled(src), src.eq(PAD))
    assert torch.allclose(t_eval, undropped, atol=1e-6)  # eval mode: no dropout either way
    ratio = (t_train.var() / t_eval.var()).item()
    if text_feature == "embedding":
        assert torch.equal(t_train, t_eval)
    else:  # inverted dropout keeps the mean but adds variance: 1 + p/(1-p) * E[x^2]/var per token, averaged
        assert ratio > 1.05 and not torch.allclose(t_train, t_eval)


def test_multimodal_encoder_layer_by_hand() -> None:
    """One pre-norm layer, eqs. 1-3: queries [text; pseudo-tokens], keys/values LN(embedded text), pads masked."""
    r = recipe(encoder_layers=1)
    model = translator(r).eval()
    src, _, _, _ = batch()
    with torch.no_grad():
        enc = model.encode(src)
        x_txt = model.embed(src)
        pseudo = model.pseudo_tokens(model.generate_m(src))
        x = torch.cat([x_txt, pseudo], dim=1)
        layer = model.encoder.layers[0]
        att = layer.self_attn
        w, bias = att.in_proj.weight, att.in_proj.bias
        q = layer.self_attn_norm(x) @ w[:16].T + bias[:16]
        kv_in = layer.self_attn_norm(x_txt)
        k, v = kv_in @ w[16:32].T + bias[16:32], kv_in @ w[32:].T + bias[32:]
        heads = []
        for h in range(2):
            sl = slice(8 * h, 8 * h + 8)
            scores = q[..., sl] @ k[..., sl].transpose(1, 2) / 8**0.5
            scores = scores.masked_fill(src.eq(PAD)[:, None, :], float("-inf"))
            heads.append(scores.softmax(-1) @ v[..., sl])
        x = x + att.out_proj(torch.cat(heads, dim=-1))
        x = x + layer.ffn(layer.ffn_norm(x))
        expected = model.encoder.final_norm(x)
    assert torch.allclose(enc.states, expected, atol=1e-5)
