"""Teacher/student feature lists pair equal shapes for every backbone and grain; the generator makes m."""

from __future__ import annotations

import pytest
import torch

from ikd.errors import IkdError
from ikd.model.generator import Generator, masked_mean
from ikd.model.vision import GRAINS, build_student, build_teacher

SIZES = {"resnet18": 64, "resnet50": 64, "vgg19": 32, "alexnet": 64}
COUNTS = {  # pairs per grain (docs/differences.md; resnet18 has 2 taps per BasicBlock, AlexNet block = VGG rule)
    "resnet18": {"model": 2, "block": 7, "layer": 19, "image": 1},
    "resnet50": {"model": 2, "block": 7, "layer": 51, "image": 1},
    "vgg19": {"model": 2, "block": 11, "layer": 22, "image": 1},
    "alexnet": {"model": 2, "block": 7, "layer": 9, "image": 1},
}
_BUILT: dict = {}


def _pair(backbone: str):
    if backbone not in _BUILT:
        size = SIZES[backbone]
        teacher = build_teacher(backbone, "none", size)
        _BUILT[backbone] = (teacher, build_student(backbone, size, teacher.out_shape))
    return _BUILT[backbone]


@pytest.mark.parametrize("grain", GRAINS)
@pytest.mark.parametrize("backbone", list(SIZES))
def test_every_pair_has_equal_shapes(backbone: str, grain: str) -> None:
    teacher, student = _pair(backbone)
    size = SIZES[backbone]
    x = torch.randn(2, 3, size, size)
    m = torch.rand(2, *teacher.out_shape)
    with torch.no_grad():
        t_feats = teacher(x, grain)
        s_feats = student(m, grain)
    assert len(t_feats) == len(s_feats) == COUNTS[backbone][grain]
    assert [f.shape for f in t_feats] == [f.shape for f in s_feats]
    assert [tuple(f.shape[1:]) for f in t_feats] == teacher.feature_shapes(grain) == student.feature_shapes(grain)
    assert t_feats[0] is x
    assert s_feats[0].shape == (2, 3, size, size)
    if grain != "image":
        assert s_feats[-1] is m
        assert tuple(t_feats[-1].shape[1:]) == teacher.out_shape


def test_paper_shapes_at_224() -> None:
    """Shapes only (meta device), the paper's sizes: docs/differences.md block-grain list and m per backbone."""
    teacher = build_teacher("resnet50", "none", 224)
    assert teacher.out_shape == (2048, 7, 7)
    assert teacher.feature_shapes("block") == [
        (3, 224, 224), (64, 112, 112), (64, 56, 56), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)
    ]  # fmt: skip
    student = build_student("resnet50", 224, (2048, 7, 7))
    assert student.feature_shapes("layer") == teacher.feature_shapes("layer")
    assert [sum(p.numel() for p in layer.parameters()) for layer in student.layers] == [
        215_040, 1_726_464, 9_127_936, 23_087_104  # the authors' inverted stages, parameter for parameter
    ]  # fmt: skip
    for backbone, shape in (("vgg19", (512, 7, 7)), ("alexnet", (256, 6, 6))):
        assert build_teacher(backbone, "none", 224).out_shape == shape
        assert build_student(backbone, 224).feature_shapes("layer") == build_teacher(
            backbone, "none", 224
        ).feature_shapes("layer")


@pytest.mark.parametrize(("backbone", "size"), [("resnet18", 50), ("vgg19", 45), ("alexnet", 100)])
def test_sizes_that_do_not_divide_evenly(backbone: str, size: int) -> None:
    teacher = build_teacher(backbone, "none", size)
    student = build_student(backbone, size, teacher.out_shape)
    with torch.no_grad():
        t = teacher(torch.randn(2, 3, size, size), "layer")
        s = student(torch.rand(2, *teacher.out_shape), "layer")
    assert [f.shape for f in t] == [f.shape for f in s]


def test_too_small_image_is_a_clear_error() -> None:
    with pytest.raises(IkdError, match="image_size: 32 px is too small for alexnet"):
        build_teacher("alexnet", "none", 32)
    with pytest.raises(IkdError, match="image_size"):
        build_student("alexnet", 16)


def test_student_checks_out_shape() -> None:
    with pytest.raises(IkdError, match=r"starts from m of shape \(512, 2, 2\), not \(2048, 7, 7\)"):
        build_student("resnet18", 64, (2048, 7, 7))


def test_unknown_backbone_and_grain() -> None:
    with pytest.raises(IkdError, match="unknown backbone 'resnet9'.*resnet50"):
        build_teacher("resnet9", "none", 64)
    with pytest.raises(IkdError, match="unknown backbone 'vit'"):
        build_student("vit", 64)
    teacher, student = _pair("resnet18")
    with pytest.raises(IkdError, match="kd.grain: unknown grain 'pixel'"):
        teacher(torch.zeros(1, 3, 64, 64), "pixel")
    with pytest.raises(IkdError, match="unknown grain"):
        student(torch.zeros(1, *teacher.out_shape), "pixel")


def test_generator_makes_m_of_the_teacher_shape() -> None:
    teacher, student = _pair("resnet18")
    gen = Generator(16, teacher.out_shape)
    m = gen(torch.randn(3, 16))
    assert m.shape == (3, *teacher.out_shape)
    assert (m >= 0).all() and (m > 0).any()
    assert student.imagine(m).shape == (3, 3, 64, 64)
    assert sum(p.numel() for p in gen.fc.parameters()) == 16 * 512 * 4 + 512 * 4


def test_masked_mean_by_hand() -> None:
    emb = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    pad = torch.tensor([[False, False, True], [False, False, False]])
    assert torch.allclose(masked_mean(emb, pad), torch.tensor([[2.0, 3.0], [7.0, 8.0]]))
    assert torch.equal(masked_mean(emb, torch.ones(2, 3, dtype=torch.bool)), torch.zeros(2, 2))


def test_student_bn_is_standard() -> None:
    """Batch statistics in train mode, running statistics in eval mode (m of a sentence is batch-independent)."""
    teacher, student = _pair("resnet18")
    m = torch.rand(3, *teacher.out_shape)
    student.eval()
    with torch.no_grad():
        assert torch.allclose(student.imagine(m[:1]), student.imagine(m)[:1], atol=1e-5)
    student.train()
    with torch.no_grad():
        assert not torch.allclose(student.imagine(m[:2]), student.imagine(m)[:2], atol=1e-3)
    assert all(p.requires_grad for p in student.parameters())
