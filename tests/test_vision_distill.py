"""KD distances against hand computations; IrM/IaM sums; gradients; a few steps make both losses fall."""

from __future__ import annotations

import math

import pytest
import torch

from ikd.errors import IkdError
from ikd.model.generator import Generator
from ikd.model.vision import build_student, build_teacher, distance, kd_losses, pair_distances

X = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
Y = torch.tensor([[1.0, 0.0], [3.0, 1.0]])  # differences: [[0, 2], [0, 3]]


def test_l2_l1_linf_by_hand() -> None:
    assert distance(X, Y, "l2").item() == pytest.approx((0 + 4 + 0 + 9) / 4)
    assert distance(X, Y, "l1").item() == pytest.approx((0 + 2 + 0 + 3) / 4)
    assert distance(X, Y, "linf").item() == pytest.approx((2 + 3) / 2)


def test_cosine_by_hand() -> None:
    cos0 = (1 * 1 + 2 * 0) / (math.sqrt(5) * 1)
    cos1 = (3 * 3 + 4 * 1) / (5 * math.sqrt(10))
    assert distance(X, Y, "cosine").item() == pytest.approx(((1 - cos0) + (1 - cos1)) / 2, rel=1e-6)
    assert distance(X, 3 * X, "cosine").item() == pytest.approx(0.0, abs=1e-6)  # per sample, scale-free
    # a [B,C,H,W] map is one flattened vector per sample
    assert distance(X.view(2, 2, 1, 1), Y.view(2, 2, 1, 1), "cosine").item() == pytest.approx(
        ((1 - cos0) + (1 - cos1)) / 2
    )


def test_kl_by_hand() -> None:
    # sample 0, channel 0: teacher logits (0, ln 3) -> p = (1/4, 3/4); student (0, 0) -> q = (1/2, 1/2)
    # sample 1: identical -> 0. KL(p || q) averaged over 2 samples x 1 channel.
    x = torch.tensor([0.0, math.log(3.0), 5.0, 1.0]).view(2, 1, 1, 2)
    y = torch.tensor([0.0, 0.0, 5.0, 1.0]).view(2, 1, 1, 2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert distance(x, y, "kl").item() == pytest.approx(kl / 2, rel=1e-6)
    reverse = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert distance(y, x, "kl").item() == pytest.approx(reverse / 2, rel=1e-6)  # teacher is the target
    # softmax over all H*W positions of a channel, channels separate: shifting one channel changes nothing
    a = torch.randn(2, 3, 2, 2)
    assert distance(a, a + torch.tensor([0.0, 5.0, -1.0]).view(1, 3, 1, 1), "kl").item() == pytest.approx(0, abs=1e-6)


def test_distance_errors() -> None:
    with pytest.raises(IkdError, match="kd.distance: unknown distance 'l3'"):
        distance(X, Y, "l3")
    with pytest.raises(ValueError, match="different shapes"):
        distance(X, Y[:1], "l2")
    with pytest.raises(ValueError, match="different lengths"):
        kd_losses([X, X], [Y], [Y, Y])


def test_distance_is_fp32_under_autocast_and_detaches_the_target() -> None:
    x = X.clone().requires_grad_()
    y = Y.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = distance(x.bfloat16(), y.bfloat16(), "l2")
    assert d.dtype == torch.float32
    d.backward()
    assert x.grad is None and y.grad is not None


def test_kd_losses_sum_the_pairs() -> None:
    real = [X, 2 * X]
    student = [Y, X]
    syn = [Y, torch.zeros(2, 2)]
    irm, iam = kd_losses(real, student, syn, "l1")
    assert irm.item() == pytest.approx(1.25 + 1.0 * 2.5)  # image term + |2X - X| mean
    assert iam.item() == pytest.approx(1.25 + 5.0)  # image term again + |2X| mean
    assert [d.item() for d in pair_distances(real, student, "l1")] == pytest.approx([1.25, 2.5])


def _setup(grain: str = "model"):
    teacher = build_teacher("resnet18", "none", 32)
    student = build_student("resnet18", 32, teacher.out_shape)
    gen = Generator(8, teacher.out_shape)
    return teacher, student, gen


def test_gradients_reach_student_and_generator_not_teacher() -> None:
    teacher, student, gen = _setup()
    t = torch.randn(2, 8, requires_grad=True)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        real = teacher(images, "block")
    feats = student(gen(t), "block")
    syn = teacher(feats[0], "block")
    assert not real[-1].requires_grad and syn[-1].requires_grad
    # the IaM feature term alone (no image term) reaches I_s, the student and t through the frozen teacher
    pair_distances(real, syn)[-1].backward(retain_graph=True)
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv_out.weight.grad.abs().sum() > 0
    assert student.layers[3][1].conv2.weight.grad.abs().sum() > 0  # chained: every block is on the path
    assert gen.fc.weight.grad.abs().sum() > 0 and t.grad.abs().sum() > 0
    irm, iam = kd_losses(real, feats, syn)
    (irm + iam).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in (*student.parameters(), *gen.parameters()))


def test_a_few_steps_reduce_irm_and_iam() -> None:
    teacher, student, gen = _setup()
    torch.manual_seed(0)
    t = torch.randn(4, 8)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        real = teacher(images, "model")
    opt = torch.optim.Adam([*student.parameters(), *gen.parameters()], lr=3e-3)
    history = []
    for _ in range(12):
        feats = student(gen(t), "model")
        irm, iam = kd_losses(real, feats, teacher(feats[0], "model"), "l2")
        history.append((irm.item(), iam.item()))
        opt.zero_grad()
        (irm + iam).backward()
        opt.step()
    (irm0, iam0), (irm1, iam1) = history[0], history[-1]
    assert irm1 < 0.8 * irm0 and iam1 < 0.8 * iam0, history
